/**
 * The sender side of the wire format, as the package exports it (`itk3-secure-pipeline/sender`):
 * mint the credential, sign the ITK3 Bundle, encrypt it to the recipient (docs/WIRE-FORMAT.md).
 * Pure `jose` and `node:crypto`: no AWS SDK, no CLI.
 */
export type { BundleFormat, JweAlg, KeyLike, SigningAlg } from './contract.js';
export {
  type EncryptSignedOptions,
  encryptSigned,
  type RecipientKey,
  recipientAlg,
  type SealMessageOptions,
  type SignBundleOptions,
  type SignerKey,
  sealMessage,
  signBundle,
} from './seal.js';
export { DEFAULT_TOKEN_LIFETIME_SECONDS, type MintTokenOptions, mintToken } from './token.js';
