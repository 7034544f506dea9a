// An ITK3 sender written from the gateway's docs alone (README.md, docs/WIRE-FORMAT.md,
// docs/REJECTION-CODES.md, docs/SECURITY.md, docs/config.example.json) and RFCs 7515-7518, 7638,
// in Java with the JDK only: no JOSE library, so every byte of the JWT, JWS and JWE is made here.
// (The ODS identifier systems' full URIs came from the ITK3 samples: the docs then named only their
// last segment. docs/WIRE-FORMAT.md now spells them out, with the other gaps this sender found.)
//
//   java Itk3Sender.java keygen --alg ES256|PS256|RS512 --kid K|thumbprint --private-out F [--bits 2048]
//   java Itk3Sender.java token  --key F [--kid K] --iss I --sub S --aud A --org ODS [--org-claim ods] [--lifetime 300]
//   java Itk3Sender.java seal   BUNDLE --key F [--kid K] --recipient-jwks J [--recipient-kid K] [--to ODS]
//                               [--apu B64URL] [--apv B64URL] [--out F]
//   java Itk3Sender.java post   --url U --token F --body F [--http-version HTTP_1_1]
//   java Itk3Sender.java status --url U --token F --tracking-id T [--wait 30]
//   java Itk3Sender.java send   BUNDLE --url U --issuer-key F [--issuer-kid K] --signer-key F [--signer-kid K]
//                               (and the token and seal options): token, seal, post, then status
//   token, seal, send: [--json-escape-all] [--numeric-dates-as-double] spell the JOSE JSON as some
//   Java encoders do (every non-alphanumeric character escaped; numbers as doubles, 1.7648E9)
//   java Itk3Sender.java verify-response JWS_FILE --jwks J
//
// keygen writes the private JWK (0600) and prints the public JWK to give the gateway's operator
// (issuers[].keys or senders[].signingKeys). --key reads a private JWK file, or an itk3 keystore
// ({"version": 1, "keys": [{"kid", "privateJwk", ...}]}) with --kid. Output goes to stdout as JSON
// or compact serialisations (token prints the credential itself); bad input is one line on stderr
// with exit code 2, any other failure exit code 1. No private key is ever printed.
//
// Two flags, for tests only, reproduce the classic Java mistakes the gateway must refuse:
// --insecure-oaep-mgf1-sha1 (seal: "OAEPWithSHA-256AndMGF1Padding" keeps MGF1 on SHA-1) and
// --insecure-der-ecdsa (token, seal: "SHA256withECDSA" gives a DER signature, not R || S).

import java.io.ByteArrayInputStream;
import java.io.ByteArrayOutputStream;
import java.math.BigInteger;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermissions;
import java.security.AlgorithmParameters;
import java.security.KeyFactory;
import java.security.KeyPair;
import java.security.KeyPairGenerator;
import java.security.MessageDigest;
import java.security.PrivateKey;
import java.security.PublicKey;
import java.security.SecureRandom;
import java.security.Signature;
import java.security.interfaces.ECPrivateKey;
import java.security.interfaces.ECPublicKey;
import java.security.interfaces.RSAPrivateCrtKey;
import java.security.spec.ECGenParameterSpec;
import java.security.spec.ECParameterSpec;
import java.security.spec.ECPoint;
import java.security.spec.ECPrivateKeySpec;
import java.security.spec.ECPublicKeySpec;
import java.security.spec.MGF1ParameterSpec;
import java.security.spec.PSSParameterSpec;
import java.security.spec.RSAPrivateCrtKeySpec;
import java.security.spec.RSAPublicKeySpec;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Base64;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.UUID;
import javax.crypto.Cipher;
import javax.crypto.KeyAgreement;
import javax.crypto.spec.GCMParameterSpec;
import javax.crypto.spec.OAEPParameterSpec;
import javax.crypto.spec.PSource;
import javax.crypto.spec.SecretKeySpec;
import javax.xml.XMLConstants;
import javax.xml.parsers.DocumentBuilderFactory;
import org.w3c.dom.Element;
import org.w3c.dom.Node;

public final class Itk3Sender {
  private static final SecureRandom RANDOM = new SecureRandom();
  private static final String FHIR_NS = "http://hl7.org/fhir";
  // WIRE-FORMAT.md §3: an Organization is identified by one ODS code in one of these systems.
  private static final List<String> ODS_SYSTEMS =
      List.of("https://fhir.nhs.uk/Id/ods-organization-code", "https://fhir.nhs.uk/Id/ods-site-code");
  private static final String RESPONSE_CODES = "https://fhir.nhs.uk/STU3/CodeSystem/ITK-ResponseCodes-1";

  /** A refusal of bad input: printed without a stack trace. */
  static final class UsageError extends RuntimeException {
    UsageError(String message) {
      super(message);
    }
  }

  public static void main(String[] argv) {
    try {
      if (argv.length == 0) throw new UsageError("usage: Itk3Sender keygen|token|seal|post|status|send|verify-response …");
      Args args = new Args(argv, 1);
      derEcdsa = args.flag("insecure-der-ecdsa");
      joseStyle = new JsonStyle(args.flag("json-escape-all"), args.flag("numeric-dates-as-double"));
      switch (argv[0]) {
        case "keygen" -> keygen(args);
        case "token" -> System.out.println(token(args));
        case "seal" -> seal(args);
        case "post" -> post(args);
        case "status" -> status(args);
        case "send" -> send(args);
        case "verify-response" -> verifyResponse(args);
        default -> throw new UsageError("unknown command: " + argv[0]);
      }
    } catch (UsageError e) {
      System.err.println("error: " + e.getMessage());
      System.exit(2);
    } catch (Exception e) {
      System.err.println("error: " + e);
      System.exit(1);
    }
  }

  // ---------------------------------------------------------------- command line

  static final List<String> FLAGS = List.of(
      "--insecure-oaep-mgf1-sha1", "--insecure-der-ecdsa", "--json-escape-all", "--numeric-dates-as-double");

  static final class Args {
    final List<String> positional = new ArrayList<>();
    final Map<String, String> options = new LinkedHashMap<>();

    Args(String[] argv, int from) {
      for (int i = from; i < argv.length; i++) {
        String a = argv[i];
        if (FLAGS.contains(a)) {
          options.put(a.substring(2), "true");
        } else if (a.startsWith("--")) {
          if (i + 1 >= argv.length) throw new UsageError(a + " needs a value");
          options.put(a.substring(2), argv[++i]);
        } else {
          positional.add(a);
        }
      }
    }

    String required(String name) {
      String v = options.get(name);
      if (v == null || v.isEmpty()) throw new UsageError("--" + name + " is required");
      return v;
    }

    String optional(String name, String fallback) {
      return options.getOrDefault(name, fallback);
    }

    boolean flag(String name) {
      return options.containsKey(name);
    }

    /** The same arguments with --key/--kid set to one party's key (send uses two). */
    Args withKey(String key, String kid) {
      Args copy = new Args(new String[0], 0);
      copy.positional.addAll(positional);
      copy.options.putAll(options);
      copy.options.put("key", key);
      if (kid == null) copy.options.remove("kid");
      else copy.options.put("kid", kid);
      return copy;
    }
  }

  // ---------------------------------------------------------------- base64url, JSON

  static String b64u(byte[] bytes) {
    return Base64.getUrlEncoder().withoutPadding().encodeToString(bytes);
  }

  static byte[] unb64u(String text) {
    if (!text.matches("[A-Za-z0-9_-]*")) throw new UsageError("not base64url: " + abbreviate(text));
    return Base64.getUrlDecoder().decode(text);
  }

  static String abbreviate(String text) {
    return text.length() > 24 ? text.substring(0, 24) + "…" : text;
  }

  /** Unsigned big-endian bytes of a JWK integer (RFC 7518 §6.3.1: no leading zero octets). */
  static String b64uInt(BigInteger value) {
    byte[] bytes = value.toByteArray();
    if (bytes.length > 1 && bytes[0] == 0) bytes = java.util.Arrays.copyOfRange(bytes, 1, bytes.length);
    return b64u(bytes);
  }

  /** An EC coordinate or private scalar: exactly the field size, left-padded (RFC 7518 §6.2.1.2). */
  static byte[] fixedLength(BigInteger value, int length) {
    byte[] bytes = value.toByteArray();
    byte[] out = new byte[length];
    int copy = Math.min(bytes.length, length);
    System.arraycopy(bytes, bytes.length - copy, out, length - copy, copy);
    return out;
  }

  static BigInteger bigInt(Map<String, Object> jwk, String member) {
    return new BigInteger(1, unb64u(str(jwk, member)));
  }

  static String str(Map<String, Object> object, String member) {
    Object v = object.get(member);
    if (!(v instanceof String s)) throw new UsageError("missing string member \"" + member + "\"");
    return s;
  }

  @SuppressWarnings("unchecked")
  static Map<String, Object> obj(Object v, String what) {
    if (!(v instanceof Map)) throw new UsageError(what + " is not a JSON object");
    return (Map<String, Object>) v;
  }

  /** How JOSE headers and claims are spelled; any JSON is valid (WIRE-FORMAT.md §2). */
  record JsonStyle(boolean escapeAll, boolean doubles) {
    static final JsonStyle PLAIN = new JsonStyle(false, false);
  }

  // --json-escape-all: every character but letters and digits as a backslash-u escape (encoders such as
  // Gson escape some by default); --numeric-dates-as-double: numbers as Java doubles (1.7648E9).
  static JsonStyle joseStyle = JsonStyle.PLAIN;

  /** JSON written by hand: strings escaped per RFC 8259 §7, members in insertion order. */
  static String json(Object value) {
    StringBuilder out = new StringBuilder();
    writeJson(value, out, JsonStyle.PLAIN);
    return out.toString();
  }

  /** A JOSE header or claims set, in the style the command line chose. */
  static String joseJson(Object value) {
    StringBuilder out = new StringBuilder();
    writeJson(value, out, joseStyle);
    return out.toString();
  }

  private static void writeJson(Object value, StringBuilder out, JsonStyle style) {
    if (value == null) {
      out.append("null");
    } else if (value instanceof String s) {
      out.append('"');
      for (int i = 0; i < s.length(); i++) {
        char c = s.charAt(i);
        switch (c) {
          case '"' -> out.append("\\\"");
          case '\\' -> out.append("\\\\");
          case '\n' -> out.append("\\n");
          case '\r' -> out.append("\\r");
          case '\t' -> out.append("\\t");
          default -> {
            if (c < 0x20 || (style.escapeAll() && !Character.isLetterOrDigit(c))) out.append(String.format("\\u%04x", (int) c));
            else out.append(c);
          }
        }
      }
      out.append('"');
    } else if (value instanceof Number n && style.doubles()) {
      out.append(Double.toString(n.doubleValue()));
    } else if (value instanceof Number || value instanceof Boolean) {
      out.append(value);
    } else if (value instanceof Map<?, ?> map) {
      out.append('{');
      boolean first = true;
      for (Map.Entry<?, ?> e : map.entrySet()) {
        if (!first) out.append(',');
        first = false;
        writeJson(String.valueOf(e.getKey()), out, style);
        out.append(':');
        writeJson(e.getValue(), out, style);
      }
      out.append('}');
    } else if (value instanceof List<?> list) {
      out.append('[');
      for (int i = 0; i < list.size(); i++) {
        if (i > 0) out.append(',');
        writeJson(list.get(i), out, style);
      }
      out.append(']');
    } else {
      throw new IllegalArgumentException("cannot write " + value.getClass());
    }
  }

  /** A small strict JSON reader (RFC 8259): objects keep member order, a repeated member is refused. */
  static final class JsonReader {
    private final String text;
    private int at;

    private JsonReader(String text) {
      this.text = text;
    }

    static Object parse(String text) {
      JsonReader r = new JsonReader(text);
      Object v = r.value();
      r.space();
      if (r.at != text.length()) throw r.fail("trailing content");
      return v;
    }

    private UsageError fail(String why) {
      return new UsageError("invalid JSON at offset " + at + ": " + why);
    }

    private void space() {
      while (at < text.length() && " \t\r\n".indexOf(text.charAt(at)) >= 0) at++;
    }

    private Object value() {
      space();
      if (at >= text.length()) throw fail("unexpected end");
      char c = text.charAt(at);
      if (c == '{') return object();
      if (c == '[') return array();
      if (c == '"') return string();
      if (text.startsWith("true", at)) return literal("true", Boolean.TRUE);
      if (text.startsWith("false", at)) return literal("false", Boolean.FALSE);
      if (text.startsWith("null", at)) return literal("null", null);
      return number();
    }

    private Object literal(String word, Object v) {
      at += word.length();
      return v;
    }

    private Map<String, Object> object() {
      Map<String, Object> map = new LinkedHashMap<>();
      at++;
      space();
      if (peek() == '}') {
        at++;
        return map;
      }
      while (true) {
        space();
        if (peek() != '"') throw fail("expected a member name");
        String name = string();
        space();
        if (peek() != ':') throw fail("expected ':'");
        at++;
        if (map.containsKey(name)) throw fail("member \"" + name + "\" named twice");
        map.put(name, value());
        space();
        char c = peek();
        at++;
        if (c == '}') return map;
        if (c != ',') throw fail("expected ',' or '}'");
      }
    }

    private List<Object> array() {
      List<Object> list = new ArrayList<>();
      at++;
      space();
      if (peek() == ']') {
        at++;
        return list;
      }
      while (true) {
        list.add(value());
        space();
        char c = peek();
        at++;
        if (c == ']') return list;
        if (c != ',') throw fail("expected ',' or ']'");
      }
    }

    private char peek() {
      if (at >= text.length()) throw fail("unexpected end");
      return text.charAt(at);
    }

    private String string() {
      StringBuilder out = new StringBuilder();
      at++;
      while (true) {
        char c = peek();
        at++;
        if (c == '"') return out.toString();
        if (c < 0x20) throw fail("control character in string");
        if (c != '\\') {
          out.append(c);
          continue;
        }
        char e = peek();
        at++;
        switch (e) {
          case '"', '\\', '/' -> out.append(e);
          case 'b' -> out.append('\b');
          case 'f' -> out.append('\f');
          case 'n' -> out.append('\n');
          case 'r' -> out.append('\r');
          case 't' -> out.append('\t');
          case 'u' -> {
            if (at + 4 > text.length()) throw fail("short \\u escape");
            out.append((char) Integer.parseInt(text.substring(at, at + 4), 16));
            at += 4;
          }
          default -> throw fail("bad escape");
        }
      }
    }

    private Object number() {
      int start = at;
      while (at < text.length() && "+-0123456789.eE".indexOf(text.charAt(at)) >= 0) at++;
      if (start == at) throw fail("unexpected character");
      String n = text.substring(start, at);
      try {
        return n.matches("-?\\d+") ? (Object) Long.parseLong(n) : (Object) Double.parseDouble(n);
      } catch (NumberFormatException e) {
        throw fail("bad number");
      }
    }
  }

  static Object readJsonFile(String file) throws Exception {
    return JsonReader.parse(Files.readString(Path.of(file), StandardCharsets.UTF_8));
  }

  // ---------------------------------------------------------------- keys (JWK <-> JDK)

  static ECParameterSpec p256() throws Exception {
    AlgorithmParameters parameters = AlgorithmParameters.getInstance("EC");
    parameters.init(new ECGenParameterSpec("secp256r1"));
    return parameters.getParameterSpec(ECParameterSpec.class);
  }

  /** A private JWK from a JWK file, or the key --kid names in an itk3 keystore file. */
  static Map<String, Object> readPrivateJwk(Args args) throws Exception {
    Map<String, Object> file = obj(readJsonFile(args.required("key")), "the key file");
    if (file.containsKey("keys")) {
      String kid = args.required("kid");
      for (Object entry : (List<?>) file.get("keys")) {
        Map<String, Object> e = obj(entry, "a keystore entry");
        if (kid.equals(e.get("kid"))) {
          Map<String, Object> jwk = new LinkedHashMap<>(obj(e.get("privateJwk"), "privateJwk"));
          jwk.put("kid", kid);
          if (!jwk.containsKey("alg")) jwk.put("alg", e.get("alg"));
          return jwk;
        }
      }
      throw new UsageError("no key " + kid + " in " + args.required("key"));
    }
    if (!file.containsKey("d")) throw new UsageError("--key must hold a private JWK (no \"d\")");
    if (args.options.containsKey("kid") && !args.options.get("kid").equals(file.get("kid"))) {
      throw new UsageError("--kid differs from the key file's kid");
    }
    return file;
  }

  static PrivateKey privateKey(Map<String, Object> jwk) throws Exception {
    switch (str(jwk, "kty")) {
      case "RSA" -> {
        return KeyFactory.getInstance("RSA")
            .generatePrivate(new RSAPrivateCrtKeySpec(bigInt(jwk, "n"), bigInt(jwk, "e"), bigInt(jwk, "d"),
                bigInt(jwk, "p"), bigInt(jwk, "q"), bigInt(jwk, "dp"), bigInt(jwk, "dq"), bigInt(jwk, "qi")));
      }
      case "EC" -> {
        if (!"P-256".equals(jwk.get("crv"))) throw new UsageError("only P-256 EC keys are used by ITK3");
        return KeyFactory.getInstance("EC").generatePrivate(new ECPrivateKeySpec(bigInt(jwk, "d"), p256()));
      }
      default -> throw new UsageError("unsupported kty " + jwk.get("kty"));
    }
  }

  static PublicKey publicKey(Map<String, Object> jwk) throws Exception {
    switch (str(jwk, "kty")) {
      case "RSA" -> {
        return KeyFactory.getInstance("RSA").generatePublic(new RSAPublicKeySpec(bigInt(jwk, "n"), bigInt(jwk, "e")));
      }
      case "EC" -> {
        if (!"P-256".equals(jwk.get("crv"))) throw new UsageError("only P-256 EC keys are used by ITK3");
        ECPoint w = new ECPoint(bigInt(jwk, "x"), bigInt(jwk, "y"));
        return KeyFactory.getInstance("EC").generatePublic(new ECPublicKeySpec(w, p256()));
      }
      default -> throw new UsageError("unsupported kty " + jwk.get("kty"));
    }
  }

  static Map<String, Object> ecPublicMembers(ECPublicKey key) {
    Map<String, Object> m = new LinkedHashMap<>();
    m.put("kty", "EC");
    m.put("crv", "P-256");
    m.put("x", b64u(fixedLength(key.getW().getAffineX(), 32)));
    m.put("y", b64u(fixedLength(key.getW().getAffineY(), 32)));
    return m;
  }

  static void keygen(Args args) throws Exception {
    String alg = args.required("alg");
    String kid = args.required("kid");
    if (!kid.equals("thumbprint") && !kid.matches("[A-Za-z0-9._-]{1,64}")) throw new UsageError("--kid must match ^[A-Za-z0-9._-]{1,64}$");
    Map<String, Object> publicJwk = new LinkedHashMap<>();
    Map<String, Object> privateJwk = new LinkedHashMap<>();
    switch (alg) {
      case "ES256" -> {
        KeyPairGenerator generator = KeyPairGenerator.getInstance("EC");
        generator.initialize(new ECGenParameterSpec("secp256r1"));
        KeyPair pair = generator.generateKeyPair();
        publicJwk.putAll(ecPublicMembers((ECPublicKey) pair.getPublic()));
        privateJwk.putAll(publicJwk);
        privateJwk.put("d", b64u(fixedLength(((ECPrivateKey) pair.getPrivate()).getS(), 32)));
      }
      case "PS256", "RS512" -> {
        int bits = Integer.parseInt(args.optional("bits", "2048"));
        if (bits < 2048) throw new UsageError("--bits must be at least 2048");
        KeyPairGenerator generator = KeyPairGenerator.getInstance("RSA");
        generator.initialize(bits);
        RSAPrivateCrtKey k = (RSAPrivateCrtKey) generator.generateKeyPair().getPrivate();
        publicJwk.put("kty", "RSA");
        publicJwk.put("n", b64uInt(k.getModulus()));
        publicJwk.put("e", b64uInt(k.getPublicExponent()));
        privateJwk.putAll(publicJwk);
        privateJwk.put("d", b64uInt(k.getPrivateExponent()));
        privateJwk.put("p", b64uInt(k.getPrimeP()));
        privateJwk.put("q", b64uInt(k.getPrimeQ()));
        privateJwk.put("dp", b64uInt(k.getPrimeExponentP()));
        privateJwk.put("dq", b64uInt(k.getPrimeExponentQ()));
        privateJwk.put("qi", b64uInt(k.getCrtCoefficient()));
      }
      default -> throw new UsageError("--alg must be ES256, PS256 or RS512");
    }
    // "--kid thumbprint": the RFC 7638 thumbprint of the public key, which fits the kid pattern.
    if (kid.equals("thumbprint")) kid = thumbprint(publicJwk);
    for (Map<String, Object> jwk : List.of(publicJwk, privateJwk)) {
      jwk.put("kid", kid);
      jwk.put("alg", alg);
      jwk.put("use", "sig");
    }
    Path out = Path.of(args.required("private-out"));
    Files.deleteIfExists(out);
    Files.createFile(out, PosixFilePermissions.asFileAttribute(PosixFilePermissions.fromString("rw-------")));
    Files.writeString(out, json(privateJwk) + "\n");
    System.out.println(json(publicJwk));
  }

  /** The RFC 7638 thumbprint of a public JWK: required members only, lexicographic order, no spaces. */
  static String thumbprint(Map<String, Object> jwk) throws Exception {
    Map<String, Object> required = new LinkedHashMap<>();
    if ("EC".equals(jwk.get("kty"))) {
      for (String m : List.of("crv", "kty", "x", "y")) required.put(m, str(jwk, m));
    } else {
      for (String m : List.of("e", "kty", "n")) required.put(m, str(jwk, m));
    }
    return b64u(MessageDigest.getInstance("SHA-256").digest(json(required).getBytes(StandardCharsets.UTF_8)));
  }

  // ---------------------------------------------------------------- JWS (RFC 7515)

  static boolean derEcdsa = false; // --insecure-der-ecdsa

  static byte[] sign(String alg, PrivateKey key, byte[] signingInput) throws Exception {
    Signature signer;
    switch (alg) {
      // JWS wants R || S, 32 bytes each (RFC 7518 §3.4), not the DER that "SHA256withECDSA" gives.
      case "ES256" -> signer = Signature.getInstance(derEcdsa ? "SHA256withECDSA" : "SHA256withECDSAinP1363Format");
      case "PS256" -> {
        signer = Signature.getInstance("RSASSA-PSS");
        // RFC 7518 §3.5: SHA-256, MGF1 with SHA-256, salt as long as the hash.
        signer.setParameter(new PSSParameterSpec("SHA-256", "MGF1", MGF1ParameterSpec.SHA256, 32, 1));
      }
      case "RS512" -> signer = Signature.getInstance("SHA512withRSA");
      default -> throw new UsageError("signing alg must be RS512, PS256 or ES256, not " + alg);
    }
    signer.initSign(key);
    signer.update(signingInput);
    return signer.sign();
  }

  static boolean verify(String alg, PublicKey key, byte[] signingInput, byte[] signature) throws Exception {
    Signature verifier;
    switch (alg) {
      case "ES256" -> verifier = Signature.getInstance("SHA256withECDSAinP1363Format");
      case "PS256" -> {
        verifier = Signature.getInstance("RSASSA-PSS");
        verifier.setParameter(new PSSParameterSpec("SHA-256", "MGF1", MGF1ParameterSpec.SHA256, 32, 1));
      }
      case "RS512" -> verifier = Signature.getInstance("SHA512withRSA");
      default -> throw new UsageError("unexpected alg " + alg);
    }
    verifier.initVerify(key);
    verifier.update(signingInput);
    return verifier.verify(signature);
  }

  /** A compact JWS: BASE64URL(header) '.' BASE64URL(payload) '.' BASE64URL(signature). */
  static String compactJws(Map<String, Object> header, byte[] payload, Map<String, Object> jwk) throws Exception {
    String signingInput = b64u(joseJson(header).getBytes(StandardCharsets.UTF_8)) + "." + b64u(payload);
    byte[] signature = sign(str(header, "alg"), privateKey(jwk), signingInput.getBytes(StandardCharsets.US_ASCII));
    return signingInput + "." + b64u(signature);
  }

  // ---------------------------------------------------------------- credential (WIRE-FORMAT.md §1)

  static String token(Args args) throws Exception {
    Map<String, Object> jwk = readPrivateJwk(args);
    String alg = str(jwk, "alg");
    long lifetime = Long.parseLong(args.optional("lifetime", "300"));
    if (lifetime <= 0 || lifetime > 300) throw new UsageError("--lifetime must be 1..300 seconds (exp - iat ≤ 300 s)");
    long now = System.currentTimeMillis() / 1000;

    Map<String, Object> header = new LinkedHashMap<>();
    header.put("alg", alg);
    header.put("kid", str(jwk, "kid"));
    header.put("typ", "JWT");

    Map<String, Object> claims = new LinkedHashMap<>();
    claims.put("iss", args.required("iss"));
    claims.put("sub", args.required("sub"));
    claims.put("aud", args.required("aud"));
    claims.put("iat", now);
    claims.put("exp", now + lifetime);
    claims.put("jti", UUID.randomUUID().toString());
    // The organisation claim may be a dotted path (organisation.ods_code): nested objects.
    String[] path = args.optional("org-claim", "ods").split("\\.");
    Map<String, Object> at = claims;
    for (int i = 0; i < path.length - 1; i++) {
      Map<String, Object> next = new LinkedHashMap<>();
      at.put(path[i], next);
      at = next;
    }
    at.put(path[path.length - 1], args.required("org"));
    return compactJws(header, joseJson(claims).getBytes(StandardCharsets.UTF_8), jwk);
  }

  // ---------------------------------------------------------------- the routing header from the Bundle

  /** One Bundle entry: its fullUrl, resource type, resource id and (for reading) the resource. */
  record Entry(String fullUrl, String type, String id, Object resource) {}

  /** The `itk` routing header (WIRE-FORMAT.md §2) derived from the MessageHeader. */
  static Map<String, Object> routingHeader(byte[] bundle, boolean isXml, String toOverride) throws Exception {
    List<Entry> entries = isXml ? xmlEntries(bundle) : jsonEntries(bundle);
    Entry header = entries.stream().filter(e -> "MessageHeader".equals(e.type())).findFirst()
        .orElseThrow(() -> new UsageError("the Bundle has no MessageHeader entry"));
    String event = isXml ? xmlValue((Element) header.resource(), "event", "code") : jsonPath(header.resource(), "event", "code");
    String senderRef = isXml ? xmlValue((Element) header.resource(), "sender", "reference") : jsonPath(header.resource(), "sender", "reference");
    String receiverRef = isXml ? xmlValue((Element) header.resource(), "receiver", "reference") : jsonPath(header.resource(), "receiver", "reference");
    if (event == null || senderRef == null || header.id() == null) {
      throw new UsageError("the MessageHeader needs id, event.code and sender.reference");
    }
    String from = odsCode(resolve(entries, senderRef), isXml);
    String to = receiverRef != null ? odsCode(resolve(entries, receiverRef), isXml) : null;
    if (toOverride != null) {
      if (to != null && !to.equals(toOverride)) throw new UsageError("--to " + toOverride + " differs from the MessageHeader receiver " + to);
      to = toOverride;
    }
    if (to == null) throw new UsageError("the MessageHeader has no receiver: give --to ODS");
    Map<String, Object> itk = new LinkedHashMap<>();
    itk.put("from", from);
    itk.put("to", to);
    itk.put("event", event);
    itk.put("id", header.id());
    return itk;
  }

  /** References resolve by exact fullUrl; a relative Type/id only when exactly one entry matches. */
  static Entry resolve(List<Entry> entries, String reference) {
    for (Entry e : entries) if (reference.equals(e.fullUrl())) return e;
    String[] parts = reference.split("/");
    if (parts.length == 2) {
      List<Entry> matches = entries.stream().filter(e -> e.fullUrl() != null && e.fullUrl().endsWith("/" + reference)
          && parts[0].equals(e.type()) && parts[1].equals(e.id())).toList();
      if (matches.size() == 1) return matches.get(0);
    }
    throw new UsageError("reference " + reference + " resolves to no entry of the Bundle");
  }

  static String odsCode(Entry organisation, boolean isXml) {
    if (!"Organization".equals(organisation.type())) throw new UsageError("a sender/receiver reference is not an Organization");
    List<String[]> identifiers = new ArrayList<>();
    if (isXml) {
      for (Element id : children((Element) organisation.resource(), "identifier")) {
        identifiers.add(new String[] {xmlValue(id, "system"), xmlValue(id, "value")});
      }
    } else {
      Object list = obj(organisation.resource(), "Organization").get("identifier");
      if (list instanceof List<?> l) {
        for (Object id : l) {
          Map<String, Object> m = obj(id, "identifier");
          identifiers.add(new String[] {(String) m.get("system"), (String) m.get("value")});
        }
      }
    }
    if (identifiers.size() != 1 || !ODS_SYSTEMS.contains(identifiers.get(0)[0]) || identifiers.get(0)[1] == null) {
      throw new UsageError("an Organization needs exactly one ODS identifier (" + String.join(" or ", ODS_SYSTEMS) + ")");
    }
    return identifiers.get(0)[1];
  }

  static org.w3c.dom.Document parseXml(byte[] bytes) throws Exception {
    DocumentBuilderFactory factory = DocumentBuilderFactory.newInstance();
    factory.setNamespaceAware(true);
    // No DTDs, no external entities: a Bundle never needs them.
    factory.setFeature("http://apache.org/xml/features/disallow-doctype-decl", true);
    factory.setFeature(XMLConstants.FEATURE_SECURE_PROCESSING, true);
    factory.setExpandEntityReferences(false);
    return factory.newDocumentBuilder().parse(new ByteArrayInputStream(bytes));
  }

  static List<Element> children(Element parent, String localName) {
    List<Element> out = new ArrayList<>();
    for (Node n = parent.getFirstChild(); n != null; n = n.getNextSibling()) {
      if (n instanceof Element e && FHIR_NS.equals(e.getNamespaceURI()) && (localName == null || localName.equals(e.getLocalName()))) {
        out.add(e);
      }
    }
    return out;
  }

  /** The `value` attribute at a path of FHIR child elements (FHIR XML puts primitives in @value). */
  static String xmlValue(Element from, String... path) {
    Element at = from;
    for (String step : path) {
      List<Element> next = children(at, step);
      if (next.size() != 1) return null;
      at = next.get(0);
    }
    return at.hasAttribute("value") ? at.getAttribute("value") : null;
  }

  static List<Entry> xmlEntries(byte[] bundle) throws Exception {
    Element root = parseXml(bundle).getDocumentElement();
    if (!"Bundle".equals(root.getLocalName()) || !FHIR_NS.equals(root.getNamespaceURI())) throw new UsageError("not a FHIR XML Bundle");
    List<Entry> entries = new ArrayList<>();
    for (Element entry : children(root, "entry")) {
      List<Element> resource = children(entry, "resource");
      if (resource.size() != 1) continue;
      List<Element> inner = children(resource.get(0), null);
      if (inner.size() != 1) continue;
      Element r = inner.get(0);
      entries.add(new Entry(xmlValue(entry, "fullUrl"), r.getLocalName(), xmlValue(r, "id"), r));
    }
    return entries;
  }

  static String jsonPath(Object from, String... path) {
    Object at = from;
    for (String step : path) {
      if (!(at instanceof Map<?, ?> m)) return null;
      at = m.get(step);
    }
    return at instanceof String s ? s : null;
  }

  static List<Entry> jsonEntries(byte[] bundle) {
    Map<String, Object> root = obj(JsonReader.parse(new String(bundle, StandardCharsets.UTF_8)), "the Bundle");
    if (!"Bundle".equals(root.get("resourceType"))) throw new UsageError("not a FHIR JSON Bundle");
    List<Entry> entries = new ArrayList<>();
    if (root.get("entry") instanceof List<?> list) {
      for (Object e : list) {
        Map<String, Object> entry = obj(e, "entry");
        Object resource = entry.get("resource");
        entries.add(new Entry((String) entry.get("fullUrl"), jsonPath(resource, "resourceType"), jsonPath(resource, "id"), resource));
      }
    }
    return entries;
  }

  // ---------------------------------------------------------------- JWE (RFC 7516, RFC 7518 §4.3, §4.6, §5.3)

  /** The recipient's public JWK from the published JWKS: the `use: enc` entry --recipient-kid names. */
  static Map<String, Object> recipientJwk(Args args) throws Exception {
    Map<String, Object> jwks = obj(readJsonFile(args.required("recipient-jwks")), "the JWKS");
    List<Map<String, Object>> enc = new ArrayList<>();
    for (Object k : (List<?>) jwks.get("keys")) {
      Map<String, Object> jwk = obj(k, "a JWKS key");
      if ("enc".equals(jwk.get("use"))) enc.add(jwk);
    }
    String kid = args.options.get("recipient-kid");
    if (kid == null) {
      // The JWKS names no recipient: only an unambiguous single encryption key may be assumed.
      if (enc.size() != 1) throw new UsageError("the JWKS has " + enc.size() + " encryption keys: give --recipient-kid");
      return enc.get(0);
    }
    return enc.stream().filter(k -> kid.equals(k.get("kid"))).findFirst()
        .orElseThrow(() -> new UsageError("no use:enc key " + kid + " in the JWKS"));
  }

  /** RFC 7518 §4.6.2 Concat KDF with SHA-256, one round (256 bits of key data). */
  static byte[] concatKdf(byte[] z, String alg, byte[] apu, byte[] apv) throws Exception {
    ByteArrayOutputStream otherInfo = new ByteArrayOutputStream();
    byte[] algId = alg.getBytes(StandardCharsets.US_ASCII);
    for (byte[] part : List.of(algId, apu, apv)) {
      otherInfo.write(int32(part.length));
      otherInfo.write(part);
    }
    otherInfo.write(int32(256)); // SuppPubInfo: keydatalen in bits; SuppPrivInfo is empty
    MessageDigest sha256 = MessageDigest.getInstance("SHA-256");
    sha256.update(int32(1)); // round counter
    sha256.update(z);
    sha256.update(otherInfo.toByteArray());
    return sha256.digest();
  }

  static byte[] int32(int v) {
    return new byte[] {(byte) (v >>> 24), (byte) (v >>> 16), (byte) (v >>> 8), (byte) v};
  }

  static String encrypt(byte[] plaintext, Map<String, Object> recipient, Map<String, Object> itk, Args args) throws Exception {
    String alg = str(recipient, "alg");
    byte[] cek = new byte[32];
    RANDOM.nextBytes(cek);
    Map<String, Object> header = new LinkedHashMap<>();
    header.put("alg", alg);
    header.put("enc", "A256GCM");
    header.put("kid", str(recipient, "kid"));
    header.put("cty", "JOSE");
    header.put("itk", itk);
    byte[] encryptedKey;
    switch (alg) {
      case "RSA-OAEP-256" -> {
        if (!"RSA".equals(recipient.get("kty"))) throw new UsageError("RSA-OAEP-256 needs an RSA key");
        // Explicit parameters: "OAEPWithSHA-256AndMGF1Padding" alone would use MGF1 with SHA-1.
        MGF1ParameterSpec mgf = args.flag("insecure-oaep-mgf1-sha1") ? MGF1ParameterSpec.SHA1 : MGF1ParameterSpec.SHA256;
        Cipher rsa = Cipher.getInstance("RSA/ECB/OAEPPadding");
        rsa.init(Cipher.ENCRYPT_MODE, publicKey(recipient), new OAEPParameterSpec("SHA-256", "MGF1", mgf, PSource.PSpecified.DEFAULT));
        encryptedKey = rsa.doFinal(cek);
      }
      case "ECDH-ES+A256KW" -> {
        if (!"EC".equals(recipient.get("kty")) || !"P-256".equals(recipient.get("crv"))) throw new UsageError("ECDH-ES+A256KW needs a P-256 key");
        KeyPairGenerator generator = KeyPairGenerator.getInstance("EC");
        generator.initialize(new ECGenParameterSpec("secp256r1"));
        KeyPair ephemeral = generator.generateKeyPair(); // fresh per message
        KeyAgreement agreement = KeyAgreement.getInstance("ECDH");
        agreement.init(ephemeral.getPrivate());
        agreement.doPhase(publicKey(recipient), true);
        byte[] z = agreement.generateSecret();
        byte[] apu = new byte[0];
        byte[] apv = new byte[0];
        header.put("epk", ecPublicMembers((ECPublicKey) ephemeral.getPublic()));
        if (args.options.containsKey("apu")) {
          apu = unb64u(args.options.get("apu"));
          header.put("apu", args.options.get("apu"));
        }
        if (args.options.containsKey("apv")) {
          apv = unb64u(args.options.get("apv"));
          header.put("apv", args.options.get("apv"));
        }
        // The KDF's AlgorithmID is the JWE "alg" for key agreement with key wrapping (RFC 7518 §4.6.2).
        byte[] kek = concatKdf(z, alg, apu, apv);
        Cipher wrap = Cipher.getInstance("AESWrap"); // RFC 3394 AES key wrap
        wrap.init(Cipher.WRAP_MODE, new SecretKeySpec(kek, "AES"));
        encryptedKey = wrap.wrap(new SecretKeySpec(cek, "AES"));
      }
      default -> throw new UsageError("the recipient key's alg must be RSA-OAEP-256 or ECDH-ES+A256KW, not " + alg);
    }
    String protectedHeader = b64u(joseJson(header).getBytes(StandardCharsets.UTF_8));
    byte[] iv = new byte[12];
    RANDOM.nextBytes(iv);
    Cipher gcm = Cipher.getInstance("AES/GCM/NoPadding");
    gcm.init(Cipher.ENCRYPT_MODE, new SecretKeySpec(cek, "AES"), new GCMParameterSpec(128, iv));
    // AAD = ASCII(BASE64URL(UTF8(JWE Protected Header))) (RFC 7516 §5.1 step 14).
    gcm.updateAAD(protectedHeader.getBytes(StandardCharsets.US_ASCII));
    byte[] sealed = gcm.doFinal(plaintext); // the JDK appends the 16-byte tag
    byte[] ciphertext = java.util.Arrays.copyOfRange(sealed, 0, sealed.length - 16);
    byte[] tag = java.util.Arrays.copyOfRange(sealed, sealed.length - 16, sealed.length);
    return String.join(".", protectedHeader, b64u(encryptedKey), b64u(iv), b64u(ciphertext), b64u(tag));
  }

  /** Sign, then encrypt (WIRE-FORMAT.md §2): the compact JWE of a compact JWS over the Bundle's bytes. */
  static String sealBundle(Args args) throws Exception {
    if (args.positional.size() != 1) throw new UsageError("seal needs one BUNDLE file");
    byte[] bundle = Files.readAllBytes(Path.of(args.positional.get(0)));
    boolean isXml = firstNonSpace(bundle) == '<';
    Map<String, Object> itk = routingHeader(bundle, isXml, args.options.get("to"));
    Map<String, Object> signer = readPrivateJwk(args);

    Map<String, Object> jwsHeader = new LinkedHashMap<>();
    jwsHeader.put("alg", str(signer, "alg"));
    jwsHeader.put("kid", str(signer, "kid"));
    jwsHeader.put("cty", isXml ? "fhir+xml" : "fhir+json");
    jwsHeader.put("itk", itk);
    String jws = compactJws(jwsHeader, bundle, signer); // the exact Bundle bytes, unchanged
    return encrypt(jws.getBytes(StandardCharsets.US_ASCII), recipientJwk(args), itk, args);
  }

  static void seal(Args args) throws Exception {
    String jwe = sealBundle(args);
    String out = args.options.get("out");
    if (out == null) System.out.println(jwe);
    else Files.writeString(Path.of(out), jwe);
  }

  static int firstNonSpace(byte[] bytes) {
    for (byte b : bytes) if (b != ' ' && b != '\t' && b != '\r' && b != '\n') return b;
    throw new UsageError("the Bundle file is empty");
  }

  // ---------------------------------------------------------------- HTTP (itk3 serve)

  // The JDK's default client speaks HTTP/2, which over http:// offers an h2c upgrade the gateway
  // declines, so the exchange stays HTTP/1.1; --http-version HTTP_1_1 pins HTTP/1.1 from the start.
  static HttpClient httpClient(Args args) {
    HttpClient.Builder builder = HttpClient.newBuilder().connectTimeout(Duration.ofSeconds(5));
    String version = args.options.get("http-version");
    if (version != null) builder.version(HttpClient.Version.valueOf(version));
    return builder.build();
  }

  static String baseUrl(Args args) {
    return args.required("url").replaceAll("/+$", "");
  }

  /** POST /messages: the credential as a Bearer token, the compact JWE as the text/plain body. */
  static Map<String, Object> postMessage(HttpClient http, Args args, String jwt, String jwe) throws Exception {
    HttpRequest request = HttpRequest.newBuilder(URI.create(baseUrl(args) + "/messages"))
        .timeout(Duration.ofSeconds(30))
        .header("Authorization", "Bearer " + jwt)
        .header("Content-Type", "text/plain")
        .POST(HttpRequest.BodyPublishers.ofString(jwe, StandardCharsets.US_ASCII))
        .build();
    HttpResponse<String> response = http.send(request, HttpResponse.BodyHandlers.ofString());
    Map<String, Object> out = new LinkedHashMap<>();
    out.put("http", response.statusCode());
    out.put("body", response.body().isEmpty() ? null : JsonReader.parse(response.body()));
    return out;
  }

  /** GET /messages/<trackingId> until the outcome is no longer in-flight (bounded by --wait seconds). */
  static Map<String, Object> pollOutcome(HttpClient http, Args args, String jwt, String trackingId) throws Exception {
    if (!trackingId.matches("[A-Za-z0-9._-]{1,128}")) throw new UsageError("not a tracking id: " + abbreviate(trackingId));
    long deadline = System.nanoTime() + Duration.ofSeconds(Long.parseLong(args.optional("wait", "30"))).toNanos();
    HttpRequest request = HttpRequest.newBuilder(URI.create(baseUrl(args) + "/messages/" + trackingId))
        .timeout(Duration.ofSeconds(10))
        .header("Authorization", "Bearer " + jwt)
        .GET()
        .build();
    while (true) {
      HttpResponse<String> response = http.send(request, HttpResponse.BodyHandlers.ofString());
      if (response.statusCode() != 200) {
        Map<String, Object> out = new LinkedHashMap<>();
        out.put("http", response.statusCode());
        out.put("body", response.body());
        return out;
      }
      Map<String, Object> outcome = obj(JsonReader.parse(response.body()), "the outcome");
      if (!"in-flight".equals(outcome.get("status")) || System.nanoTime() > deadline) return outcome;
      Thread.sleep(100);
    }
  }

  static String readToken(Args args) throws Exception {
    return Files.readString(Path.of(args.required("token")), StandardCharsets.US_ASCII).trim();
  }

  static void post(Args args) throws Exception {
    String jwe = Files.readString(Path.of(args.required("body")), StandardCharsets.US_ASCII).trim();
    System.out.println(json(postMessage(httpClient(args), args, readToken(args), jwe)));
  }

  static void status(Args args) throws Exception {
    System.out.println(json(pollOutcome(httpClient(args), args, readToken(args), args.required("tracking-id"))));
  }

  /** token + seal + post + status in one run: the credential from --issuer-key, the JWS by --signer-key. */
  static void send(Args args) throws Exception {
    String jwt = token(args.withKey(args.required("issuer-key"), args.options.get("issuer-kid")));
    String jwe = sealBundle(args.withKey(args.required("signer-key"), args.options.get("signer-kid")));
    HttpClient http = httpClient(args);
    Map<String, Object> answer = postMessage(http, args, jwt, jwe);
    if (Integer.valueOf(202).equals(answer.get("http"))) {
      String trackingId = str(obj(answer.get("body"), "the 202 body"), "trackingId");
      answer.put("outcome", pollOutcome(http, args, jwt, trackingId));
    }
    System.out.println(json(answer));
  }

  // ---------------------------------------------------------------- responses (WIRE-FORMAT.md §5)

  /** Verifies a gateway response (compact JWS, ES256) with the gateway's JWKS; prints its header and ITK3 code. */
  static void verifyResponse(Args args) throws Exception {
    if (args.positional.size() != 1) throw new UsageError("verify-response needs one JWS file");
    String jws = Files.readString(Path.of(args.positional.get(0)), StandardCharsets.US_ASCII).trim();
    String[] parts = jws.split("\\.", -1);
    if (parts.length != 3) throw new UsageError("a response is a compact JWS (three segments)");
    Map<String, Object> header = obj(JsonReader.parse(new String(unb64u(parts[0]), StandardCharsets.UTF_8)), "the JWS header");
    Map<String, Object> jwks = obj(readJsonFile(args.required("jwks")), "the JWKS");
    Map<String, Object> key = null;
    for (Object k : (List<?>) jwks.get("keys")) {
      Map<String, Object> jwk = obj(k, "a JWKS key");
      if ("sig".equals(jwk.get("use")) && header.get("kid") != null && header.get("kid").equals(jwk.get("kid"))) key = jwk;
    }
    if (key == null) throw new UsageError("the response's kid is not a signing key of the gateway's JWKS");
    String alg = str(header, "alg");
    if (!alg.equals(key.get("alg"))) throw new UsageError("the response alg differs from the key's alg");
    byte[] signingInput = (parts[0] + "." + parts[1]).getBytes(StandardCharsets.US_ASCII);
    if (!verify(alg, publicKey(key), signingInput, unb64u(parts[2]))) throw new UsageError("the response signature does not verify");
    byte[] payload = unb64u(parts[1]);
    boolean isXml = firstNonSpace(payload) == '<';
    Object json = isXml ? null : JsonReader.parse(new String(payload, StandardCharsets.UTF_8));
    Map<String, Object> out = new LinkedHashMap<>();
    out.put("verified", true);
    out.put("header", header);
    out.put("itk3Code", isXml ? xmlResponseCode(payload) : jsonResponseCode(json));
    // A rejection names the failed check's stable code in OperationOutcome.issue.diagnostics.
    out.put("diagnostics", isXml ? xmlDiagnostics(payload) : jsonDiagnostics(json));
    System.out.println(json(out));
  }

  static String xmlResponseCode(byte[] payload) throws Exception {
    org.w3c.dom.NodeList codings = parseXml(payload).getElementsByTagNameNS(FHIR_NS, "coding");
    for (int i = 0; i < codings.getLength(); i++) {
      Element coding = (Element) codings.item(i);
      if (RESPONSE_CODES.equals(xmlValue(coding, "system"))) return xmlValue(coding, "code");
    }
    return null;
  }

  static String xmlDiagnostics(byte[] payload) throws Exception {
    org.w3c.dom.NodeList found = parseXml(payload).getElementsByTagNameNS(FHIR_NS, "diagnostics");
    return found.getLength() == 0 ? null : ((Element) found.item(0)).getAttribute("value");
  }

  static String jsonDiagnostics(Object node) {
    if (node instanceof Map<?, ?> m) {
      if (m.get("diagnostics") instanceof String d) return d;
      for (Object v : m.values()) {
        String found = jsonDiagnostics(v);
        if (found != null) return found;
      }
    } else if (node instanceof List<?> l) {
      for (Object v : l) {
        String found = jsonDiagnostics(v);
        if (found != null) return found;
      }
    }
    return null;
  }

  static String jsonResponseCode(Object node) {
    if (node instanceof Map<?, ?> m) {
      if (RESPONSE_CODES.equals(m.get("system")) && m.get("code") instanceof String code) return code;
      for (Object v : m.values()) {
        String found = jsonResponseCode(v);
        if (found != null) return found;
      }
    } else if (node instanceof List<?> l) {
      for (Object v : l) {
        String found = jsonResponseCode(v);
        if (found != null) return found;
      }
    }
    return null;
  }
}
