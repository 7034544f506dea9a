#!/usr/bin/env python3
"""An ITK3 sender written from the gateway's documentation alone, with jwcrypto.

What an outside engineer writes from README.md, docs/WIRE-FORMAT.md and docs/REJECTION-CODES.md
and the public standards (RFC 7515/7516/7518/7519/7638, ITK3): it mints the credential (a signed
JWT), signs the exact Bundle bytes (compact JWS), encrypts the JWS to the recipient's published key
(compact JWE), POSTs both to `itk3 serve`, asks the gateway for the outcome and verifies the signed
ITK3 response. It reads nothing of the gateway's code.

    itk3_sender.py keygen  --alg ES256|PS256|RS512 [--kid KID|--thumbprint-kid] --out PRIVATE.jwk
    itk3_sender.py token   --issuer-key KEY --iss ISS --sub SUB --aud AUD --org ODS [...] [--out F]
    itk3_sender.py seal    BUNDLE --signer-key KEY --recipient-jwks F [--recipient-kid KID] [--to ODS] [...]
    itk3_sender.py post    --url URL --token F --jwe F          -> {"http": 202, "body": {...}}
    itk3_sender.py status  --url URL --tracking-id ID --issuer-key KEY ... [--wait S]
    itk3_sender.py verify-response RESPONSE.jws --gateway-jwks F -> {"itk3Code", "diagnostics", ...}
    itk3_sender.py send    BUNDLE <token and seal options> --url URL [--wait S]

KEY is a private JWK file, or an `itk3` keystore file with the key id after `#` (FILE#KID).
Nothing secret is printed: private keys go only to the file given with --out.
"""

from __future__ import annotations

import argparse
import http.client
import json
import sys
import time
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from jwcrypto import jwe, jwk, jws
from jwcrypto.common import base64url_decode, base64url_encode

FHIR_NS = "{http://hl7.org/fhir}"
ODS_SYSTEMS = (
    "https://fhir.nhs.uk/Id/ods-organization-code",
    "https://fhir.nhs.uk/Id/ods-site-code",
)
SIGNING_ALGS = ("RS512", "PS256", "ES256")
ENCRYPTION_ALGS = ("RSA-OAEP-256", "ECDH-ES+A256KW")


class SenderError(Exception):
    """A problem the user can fix; printed as one `error:` line, exit 2."""


# --- keys -------------------------------------------------------------------------------------------


def load_private_key(spec: str) -> tuple[jwk.JWK, str, str]:
    """FILE (a private JWK) or FILE#KID (an itk3 keystore, or a JWKS of private keys): key, kid, alg."""
    path, _, kid = spec.partition("#")
    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise SenderError(f"cannot read key file {path}: {error}") from None
    if "keys" in document:
        if not kid:
            raise SenderError(f"{path} holds several keys: name one as {path}#KID")
        entry = next((k for k in document["keys"] if k.get("kid") == kid), None)
        if entry is None:
            raise SenderError(f"no key {kid!r} in {path}")
        # itk3 keystore entries are {kid, purpose, owner, alg, privateJwk}; a JWKS entry is the JWK.
        private = entry.get("privateJwk", entry)
        alg = entry.get("alg") or private.get("alg")
    else:
        private = document
        kid = kid or document.get("kid", "")
        alg = document.get("alg")
    if "d" not in private:
        raise SenderError(f"key {kid!r} in {path} is not a private key")
    if not kid or not alg:
        raise SenderError(f"key in {path} needs a kid and an alg")
    return jwk.JWK(**private), kid, alg


def load_recipient_key(jwks_file: str, kid: str | None) -> tuple[jwk.JWK, dict[str, Any]]:
    """The recipient's published encryption key: by kid, or the one `use: enc` key of the JWKS."""
    try:
        published = json.loads(Path(jwks_file).read_text(encoding="utf-8"))["keys"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise SenderError(f"cannot read the JWKS {jwks_file}: {error}") from None
    candidates = [k for k in published if k.get("use", "enc") == "enc" and k.get("alg") in ENCRYPTION_ALGS]
    if kid is not None:
        candidates = [k for k in candidates if k.get("kid") == kid]
    if len(candidates) != 1:
        named = f"key {kid!r}" if kid else "exactly one encryption key (use --recipient-kid)"
        raise SenderError(f"{jwks_file}: expected {named}, found {len(candidates)}")
    public = candidates[0]
    return jwk.JWK(**public), public


def cmd_keygen(args: argparse.Namespace) -> int:
    if args.alg == "ES256":
        key = jwk.JWK.generate(kty="EC", crv="P-256")
    else:
        key = jwk.JWK.generate(kty="RSA", size=args.modulus)
    kid = key.thumbprint() if args.thumbprint_kid else args.kid
    if not kid:
        raise SenderError("give --kid or --thumbprint-kid")
    private = {**json.loads(key.export_private()), "kid": kid, "alg": args.alg, "use": "sig"}
    out = Path(args.out)
    out.write_text(json.dumps(private), encoding="utf-8")
    out.chmod(0o600)
    # The public half is what the sender gives the gateway's operator.
    public = {m: private[m] for m in ("kty", "kid", "alg", "use", "crv", "x", "y", "n", "e") if m in private}
    print(json.dumps(public, indent=2))
    return 0


# --- JSON headers: how a given engineer's library happens to write them ----------------------------


def encode_header(header: dict[str, Any], style: str, escape_slashes: bool = False) -> str:
    """RFC 7515 §5.1: any valid JSON is a valid header; member order and whitespace carry no meaning."""
    if style == "sorted":
        text = json.dumps(header, sort_keys=True, separators=(",", ":"))
    elif style == "reversed":
        text = json.dumps(dict(reversed(list(header.items()))), separators=(",", ":"))
    elif style == "spaced":
        text = json.dumps(header, indent=1)
    else:
        text = json.dumps(header, separators=(",", ":"))
    # `\/` is a valid JSON escape of `/` (RFC 8259 §7) that PHP's and some Java encoders always write.
    return text.replace("/", "\\/") if escape_slashes else text


# --- the credential -----------------------------------------------------------------------------------


def set_claim_path(claims: dict[str, Any], dotted: str, value: str) -> None:
    """`organisation.ods_code` → {"organisation": {"ods_code": value}} (WIRE-FORMAT §1)."""
    *parents, last = dotted.split(".")
    node = claims
    for name in parents:
        node = node.setdefault(name, {})
    node[last] = value


def mint_token(args: argparse.Namespace) -> str:
    key, kid, alg = load_private_key(args.issuer_key)
    if alg not in SIGNING_ALGS:
        raise SenderError(f"issuer key alg {alg} is not one of {', '.join(SIGNING_ALGS)}")
    now = time.time() + args.iat_offset
    iat: float | int = round(now, 3) if args.fractional_times else int(now)
    claims: dict[str, Any] = {
        "iss": args.iss,
        "sub": args.sub,
        "aud": [args.aud] if args.aud_array else args.aud,
        "iat": iat,
        "exp": iat + args.lifetime,
        "jti": args.jti or str(uuid.uuid4()),
    }
    if args.nbf:
        claims["nbf"] = iat
    for extra in args.extra_claim or []:
        name, _, value = extra.partition("=")
        claims[name] = json.loads(value)
    set_claim_path(claims, args.org_claim, args.org)
    # RFC 8693 act: the outermost actor first, each earlier actor nested inside.
    actor: dict[str, Any] | None = None
    for sub in reversed(args.act or []):
        actor = {"sub": sub, **({"act": actor} if actor else {})}
    if actor:
        claims["act"] = actor
    header = {"alg": alg, "kid": kid}
    if args.typ != "none":
        header["typ"] = args.typ
    for extra in args.extra_header or []:
        name, _, value = extra.partition("=")
        header[name] = json.loads(value)
    token = jws.JWS(encode_header(claims, "given", args.escape_slashes).encode())
    token.add_signature(key, alg=alg, protected=encode_header(header, args.header_style, args.escape_slashes))
    return token.serialize(compact=True)


def cmd_token(args: argparse.Namespace) -> int:
    write_or_print(mint_token(args), args.out)
    return 0


# --- the sealed message --------------------------------------------------------------------------------


def read_routing(bundle: bytes, to: str | None) -> tuple[dict[str, str], str]:
    """The `itk` routing header from the Bundle's MessageHeader (WIRE-FORMAT §2, §3) and the format."""
    text = bundle.decode("utf-8")
    if text.lstrip().startswith("{"):
        return read_routing_json(json.loads(text), to), "json"
    return read_routing_xml(ET.fromstring(bundle), to), "xml"


def ods_of(organisation: dict[str, Any] | None, where: str) -> str:
    for identifier in (organisation or {}).get("identifier", []):
        if identifier.get("system") in ODS_SYSTEMS and identifier.get("value"):
            return identifier["value"]
    raise SenderError(f"the MessageHeader {where} is not an Organization with an ODS code")


def resolve(entries: list[dict[str, Any]], reference: str | None) -> dict[str, Any] | None:
    """FHIR reference resolution: exact fullUrl, else a relative Type/id matching one entry."""
    if not reference:
        return None
    for entry in entries:
        if entry.get("fullUrl") == reference:
            return entry["resource"]
    matches = [e for e in entries if str(e.get("fullUrl", "")).endswith("/" + reference)]
    return matches[0]["resource"] if len(matches) == 1 else None


def routing_from(header: dict[str, Any], entries: list[dict[str, Any]], to: str | None) -> dict[str, str]:
    sender = ods_of(resolve(entries, header.get("sender")), "sender")
    receiver_ref = header.get("receiver")
    receiver = ods_of(resolve(entries, receiver_ref), "receiver") if receiver_ref else None
    if to and receiver and to != receiver:
        raise SenderError(f"--to {to} contradicts the MessageHeader receiver {receiver}")
    recipient = to or receiver
    if not recipient:
        raise SenderError("the MessageHeader names no receiver: give --to ODS")
    if not header.get("id") or not header.get("event"):
        raise SenderError("the MessageHeader has no id or no event code")
    return {"from": sender, "to": recipient, "event": header["event"], "id": header["id"]}


def read_routing_xml(root: ET.Element, to: str | None) -> dict[str, str]:
    def value(node: ET.Element | None, path: str) -> str | None:
        found = node.find(path) if node is not None else None
        return found.get("value") if found is not None else None

    entries: list[dict[str, Any]] = []
    header: dict[str, Any] | None = None
    for entry in root.findall(f"{FHIR_NS}entry"):
        resource = entry.find(f"{FHIR_NS}resource")
        inner = resource[0] if resource is not None and len(resource) else None
        as_dict: dict[str, Any] = {}
        if inner is not None and inner.tag == f"{FHIR_NS}Organization":
            as_dict["identifier"] = [
                {"system": value(i, f"{FHIR_NS}system"), "value": value(i, f"{FHIR_NS}value")}
                for i in inner.findall(f"{FHIR_NS}identifier")
            ]
        entries.append({"fullUrl": value(entry, f"{FHIR_NS}fullUrl"), "resource": as_dict})
        if header is None and inner is not None and inner.tag == f"{FHIR_NS}MessageHeader":
            header = {
                "id": value(inner, f"{FHIR_NS}id"),
                "event": value(inner, f"{FHIR_NS}event/{FHIR_NS}code"),
                "sender": value(inner, f"{FHIR_NS}sender/{FHIR_NS}reference"),
                "receiver": value(inner, f"{FHIR_NS}receiver/{FHIR_NS}reference"),
            }
    if header is None:
        raise SenderError("the Bundle has no MessageHeader entry")
    return routing_from(header, entries, to)


def read_routing_json(bundle: dict[str, Any], to: str | None) -> dict[str, str]:
    entries = bundle.get("entry", [])
    resources = [e.get("resource", {}) for e in entries]
    header = next((r for r in resources if r.get("resourceType") == "MessageHeader"), None)
    if header is None:
        raise SenderError("the Bundle has no MessageHeader entry")
    flat = {
        "id": header.get("id"),
        "event": (header.get("event") or {}).get("code"),
        "sender": (header.get("sender") or {}).get("reference"),
        "receiver": (header.get("receiver") or {}).get("reference"),
    }
    return routing_from(flat, entries, to)


def seal(args: argparse.Namespace) -> str:
    bundle = Path(args.bundle).read_bytes()
    routing, fmt = read_routing(bundle, args.to)
    signer, signer_kid, signer_alg = load_private_key(args.signer_key)
    if signer_alg not in SIGNING_ALGS:
        raise SenderError(f"signing key alg {signer_alg} is not one of {', '.join(SIGNING_ALGS)}")
    recipient, published = load_recipient_key(args.recipient_jwks, args.recipient_kid)

    # Inner: JWS over the exact Bundle bytes (WIRE-FORMAT §2). cty names the Bundle's format.
    jws_header: dict[str, Any] = {"alg": signer_alg, "kid": signer_kid, "cty": args.cty_prefix + f"fhir+{fmt}"}
    jws_header["itk"] = routing
    if args.jws_typ:
        jws_header["typ"] = args.jws_typ
    signed = jws.JWS(bundle)
    signed.add_signature(
        signer, alg=signer_alg, protected=encode_header(jws_header, args.header_style, args.escape_slashes)
    )
    inner = signed.serialize(compact=True)

    # Outer: JWE to the recipient's published key, with the alg its JWKS entry names.
    jwe_header: dict[str, Any] = {"alg": published["alg"], "enc": "A256GCM", "kid": published["kid"]}
    jwe_header["cty"] = args.jwe_cty
    jwe_header["itk"] = routing
    if args.jwe_typ:
        jwe_header["typ"] = args.jwe_typ
    # ECDH-ES PartyUInfo/PartyVInfo (RFC 7518 §4.6.1.2-3): jwcrypto feeds them to the Concat KDF.
    if args.apu:
        jwe_header["apu"] = base64url_encode(args.apu.encode())
    if args.apv:
        jwe_header["apv"] = base64url_encode(args.apv.encode())
    sealed = jwe.JWE(inner.encode(), protected=encode_header(jwe_header, args.header_style, args.escape_slashes))
    sealed.add_recipient(recipient)
    return sealed.serialize(compact=True)


def cmd_seal(args: argparse.Namespace) -> int:
    write_or_print(seal(args), args.out)
    return 0


# --- HTTP ---------------------------------------------------------------------------------------------


def request(
    url: str, method: str, token: str, body: bytes | None, content_type: str, scheme: str, chunked: bool
) -> dict[str, Any]:
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    headers = {"Authorization": f"{scheme} {token}"}
    if body is not None and content_type:
        headers["Content-Type"] = content_type
    try:
        if chunked and body is not None:
            # What a client streaming from a file or pipe sends: no Content-Length, chunked coding.
            connection.request(method, parts.path, body=iter([body[: len(body) // 2], body[len(body) // 2 :]]),
                               headers=headers, encode_chunked=True)
        else:
            connection.request(method, parts.path, body=body, headers=headers)
        response = connection.getresponse()
        raw = response.read().decode("utf-8", "replace")
    finally:
        connection.close()
    try:
        parsed: Any = json.loads(raw) if raw else None
    except ValueError:
        parsed = raw
    return {"http": response.status, "body": parsed}


def post(args: argparse.Namespace, token: str, sealed: str) -> dict[str, Any]:
    body = (sealed + args.body_suffix.encode().decode("unicode_escape")).encode("ascii")
    url = args.url.rstrip("/") + "/messages"
    return request(url, "POST", token, body, args.content_type, args.scheme, args.chunked)


def cmd_post(args: argparse.Namespace) -> int:
    token = Path(args.token).read_text(encoding="ascii").strip()
    sealed = Path(args.jwe).read_text(encoding="ascii").strip()
    answer = post(args, token, sealed)
    print(json.dumps(answer))
    return 0 if answer["http"] == 202 else 1


def wait_for_outcome(args: argparse.Namespace, tracking_id: str) -> dict[str, Any]:
    """GET /messages/<trackingId> with a credential of the submitting organisation, until decided."""
    url = f"{args.url.rstrip('/')}/messages/{tracking_id}"
    deadline = time.monotonic() + args.wait
    while True:
        # A fresh credential for every request: a jti is single use (WIRE-FORMAT §1).
        answer = request(url, "GET", mint_token(args), None, "", "Bearer", False)
        body = answer["body"]
        settled = answer["http"] != 200 or not isinstance(body, dict) or body.get("status") != "in-flight"
        if settled or time.monotonic() >= deadline:
            return answer
        time.sleep(0.2)


def cmd_status(args: argparse.Namespace) -> int:
    answer = wait_for_outcome(args, args.tracking_id)
    print(json.dumps(answer))
    return 0 if answer["http"] == 200 else 1


def cmd_send(args: argparse.Namespace) -> int:
    token = mint_token(args)
    sealed = seal(args)
    answer = post(args, token, sealed)
    if answer["http"] == 202 and args.wait > 0:
        answer["outcome"] = wait_for_outcome(args, answer["body"]["trackingId"])["body"]
    print(json.dumps(answer))
    return 0 if answer["http"] == 202 else 1


# --- the signed ITK3 response ----------------------------------------------------------------------------


def cmd_verify_response(args: argparse.Namespace) -> int:
    """WIRE-FORMAT §5: a compact JWS by the gateway's response-signing key over an ITK008M Bundle."""
    compact = Path(args.response).read_text(encoding="ascii").strip()
    header = json.loads(base64url_decode(compact.split(".")[0]))
    keys = jwk.JWKSet.from_json(Path(args.gateway_jwks).read_text(encoding="utf-8"))
    key = keys.get_key(header.get("kid"))
    if key is None or header.get("alg") != "ES256":
        raise SenderError(f"response signed with an unknown key or alg: {header.get('kid')}, {header.get('alg')}")
    verified = jws.JWS()
    verified.deserialize(compact)
    verified.verify(key, alg="ES256")
    payload: bytes = verified.payload
    print(json.dumps({"header": header, **read_response_codes(payload, header.get("cty", ""))}))
    return 0


def read_response_codes(payload: bytes, cty: str) -> dict[str, Any]:
    """The ITK3 response code (ITK-ResponseCodes-1 coding) and the diagnostics of the ITK008M."""
    codes: list[str] = []
    diagnostics: list[str] = []
    if cty.endswith("json"):
        def walk(node: Any) -> None:
            if isinstance(node, dict):
                if "ITK-ResponseCodes" in str(node.get("system", "")) and "code" in node:
                    codes.append(node["code"])
                if isinstance(node.get("diagnostics"), str):
                    diagnostics.append(node["diagnostics"])
                for child in node.values():
                    walk(child)
            elif isinstance(node, list):
                for child in node:
                    walk(child)

        walk(json.loads(payload))
    else:
        for element in ET.fromstring(payload).iter():
            if element.tag == f"{FHIR_NS}coding":
                system = element.find(f"{FHIR_NS}system")
                code = element.find(f"{FHIR_NS}code")
                if system is not None and "ITK-ResponseCodes" in (system.get("value") or "") and code is not None:
                    codes.append(code.get("value") or "")
            if element.tag == f"{FHIR_NS}diagnostics":
                diagnostics.append(element.get("value") or "")
    return {"itk3Code": codes[0] if codes else None, "diagnostics": diagnostics[0] if diagnostics else None}


# --- CLI ---------------------------------------------------------------------------------------------------


def write_or_print(text: str, out: str | None) -> None:
    if out:
        Path(out).write_text(text, encoding="ascii")
    else:
        print(text)


def token_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("credential (WIRE-FORMAT §1)")
    group.add_argument("--issuer-key", required=True, help="the token service's private key: FILE or KEYSTORE#KID")
    group.add_argument("--iss", required=True)
    group.add_argument("--sub", required=True, help="the client registered with the organisation")
    group.add_argument("--aud", required=True, help="the gateway's audience")
    group.add_argument("--org", required=True, help="the sending organisation's ODS code")
    group.add_argument("--org-claim", default="ods", help="claim (dotted path) carrying the ODS code (default ods)")
    group.add_argument("--act", action="append", help="RFC 8693 actor, outermost first (repeatable)")
    group.add_argument("--lifetime", type=int, default=300, help="seconds, at most 300 (default 300)")
    group.add_argument("--jti", help="a chosen jti (default: a fresh UUID)")
    group.add_argument("--typ", default="JWT", help="header typ (default JWT; 'none' omits it)")
    group.add_argument("--aud-array", action="store_true", help="aud as a one-element array (RFC 7519 §4.1.3)")
    group.add_argument("--nbf", action="store_true", help="also send nbf = iat")
    group.add_argument("--fractional-times", action="store_true", help="NumericDates with milliseconds")
    group.add_argument("--iat-offset", type=float, default=0, help="shift iat/exp by S seconds (tests)")
    group.add_argument("--extra-claim", action="append", help="NAME=JSON, another claim a token service adds")
    group.add_argument("--extra-header", action="append", help="NAME=JSON, another credential header member")


def seal_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("sealed message (WIRE-FORMAT §2)")
    group.add_argument("bundle", help="the ITK3 Bundle, XML or JSON")
    group.add_argument("--signer-key", required=True, help="the organisation's private signing key: FILE or KEYSTORE#KID")
    group.add_argument("--recipient-jwks", required=True, help="the gateway's published JWKS")
    group.add_argument("--recipient-kid", help="the recipient's key id (needed when the JWKS has several)")
    group.add_argument("--to", help="recipient ODS (default: the MessageHeader receiver)")
    group.add_argument("--cty-prefix", default="", choices=["", "application/"], help="JWS cty spelling")
    group.add_argument("--jws-typ", help="a typ member in the JWS header")
    group.add_argument("--jwe-typ", help="a typ member in the JWE header")
    group.add_argument("--jwe-cty", default="JOSE", help="JWE cty (default JOSE)")
    group.add_argument("--apu", help="ECDH-ES+A256KW: PartyUInfo (text, sent base64url)")
    group.add_argument("--apv", help="ECDH-ES+A256KW: PartyVInfo (text, sent base64url)")


def header_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--header-style", default="given", choices=["given", "sorted", "reversed", "spaced"],
                        help="JSON member order and whitespace of the protected headers")
    parser.add_argument("--escape-slashes", action="store_true", help="write / as \\/ in headers and claims")


def http_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("HTTP")
    group.add_argument("--url", required=True, help="the gateway, e.g. http://127.0.0.1:8080")
    group.add_argument("--content-type", default="text/plain", help="request Content-Type ('' for none)")
    group.add_argument("--scheme", default="Bearer", help="Authorization scheme spelling (default Bearer)")
    group.add_argument("--chunked", action="store_true", help="send the body with chunked transfer coding")
    group.add_argument("--body-suffix", default="", help=r"bytes after the JWE, e.g. '\n' (tests)")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="itk3_sender.py", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    keygen = commands.add_parser("keygen", help="a new signing key; prints the public JWK for the operator")
    keygen.add_argument("--alg", required=True, choices=SIGNING_ALGS)
    keygen.add_argument("--kid")
    keygen.add_argument("--thumbprint-kid", action="store_true", help="kid = RFC 7638 SHA-256 thumbprint")
    keygen.add_argument("--modulus", type=int, default=2048, choices=[2048, 3072, 4096])
    keygen.add_argument("--out", required=True, help="the private JWK file (mode 0600)")
    keygen.set_defaults(run=cmd_keygen)

    token = commands.add_parser("token", help="mint a credential")
    token_options(token)
    header_option(token)
    token.add_argument("--out")
    token.set_defaults(run=cmd_token)

    sealer = commands.add_parser("seal", help="sign then encrypt a Bundle")
    seal_options(sealer)
    header_option(sealer)
    sealer.add_argument("--out")
    sealer.set_defaults(run=cmd_seal)

    poster = commands.add_parser("post", help="POST a credential and a sealed message")
    http_options(poster)
    poster.add_argument("--token", required=True, help="file holding the credential")
    poster.add_argument("--jwe", required=True, help="file holding the sealed message")
    poster.set_defaults(run=cmd_post)

    status = commands.add_parser("status", help="GET /messages/<trackingId>")
    token_options(status)
    header_option(status)
    status.add_argument("--url", required=True)
    status.add_argument("--tracking-id", required=True)
    status.add_argument("--wait", type=float, default=0, help="poll up to S seconds while in-flight")
    status.set_defaults(run=cmd_status)

    verify = commands.add_parser("verify-response", help="verify a signed ITK3 response, print its code")
    verify.add_argument("response")
    verify.add_argument("--gateway-jwks", required=True)
    verify.set_defaults(run=cmd_verify_response)

    send = commands.add_parser("send", help="token + seal + POST (+ wait for the outcome)")
    token_options(send)
    seal_options(send)
    header_option(send)
    http_options(send)
    send.add_argument("--wait", type=float, default=0, help="then poll the outcome up to S seconds")
    send.set_defaults(run=cmd_send)

    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except SenderError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
