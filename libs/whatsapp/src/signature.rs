//! `X-Hub-Signature-256: sha256=<64 lowercase hex>`: HMAC-SHA256 of the raw body, keyed with the
//! app secret. Always hash the bytes as received: Meta escapes non-ASCII as `\uXXXX`, so
//! re-serialised JSON has a different signature.
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// The header Meta signs webhooks with (lower case, as HTTP/2 and axum give it).
pub const SIGNATURE_HEADER: &str = "x-hub-signature-256";

/// Why a signature was not accepted. The gateway answers 401 for `Missing`, 403 otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the X-Hub-Signature-256 header is missing")]
    Missing,
    #[error("the X-Hub-Signature-256 header is not `sha256=` followed by 64 hex digits")]
    Malformed,
    #[error("the X-Hub-Signature-256 header does not match the body")]
    Mismatch,
}

/// The header value Meta would send for `body` signed with `secret`.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Parses the header into the 32-byte digest it claims.
pub fn parse_header(header: Option<&str>) -> Result<[u8; 32], SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?.trim();
    let hex_digest = header
        .strip_prefix("sha256=")
        .ok_or(SignatureError::Malformed)?;
    let mut digest = [0u8; 32];
    hex::decode_to_slice(hex_digest, &mut digest).map_err(|_| SignatureError::Malformed)?;
    Ok(digest)
}

/// Checks `claimed` (from [`parse_header`]) against `body` signed with `secret`, in constant time.
pub fn verify_digest(secret: &[u8], body: &[u8], claimed: &[u8; 32]) -> bool {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(body);
    mac.verify_slice(claimed).is_ok()
}

/// Checks the `X-Hub-Signature-256` header value against `body` signed with `secret`.
pub fn verify_signature(
    secret: &[u8],
    body: &[u8],
    header: Option<&str>,
) -> Result<(), SignatureError> {
    let claimed = parse_header(header)?;
    if verify_digest(secret, body, &claimed) {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_made_with_the_secret_verifies() {
        let header = sign(b"s3cret", b"{\"a\":1}");
        assert!(header.starts_with("sha256=") && header.len() == 7 + 64);
        assert_eq!(
            verify_signature(b"s3cret", b"{\"a\":1}", Some(&header)),
            Ok(())
        );
    }

    #[test]
    fn another_secret_or_body_does_not_verify() {
        let header = sign(b"s3cret", b"{\"a\":1}");
        assert_eq!(
            verify_signature(b"other", b"{\"a\":1}", Some(&header)),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_signature(b"s3cret", b"{\"a\":2}", Some(&header)),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn missing_and_malformed_headers_are_told_apart() {
        assert_eq!(
            verify_signature(b"k", b"x", None),
            Err(SignatureError::Missing)
        );
        for bad in [
            "",
            "sha1=abcd",
            "sha256=zz",
            "sha256=abcd",
            &format!("sha256={}", "g".repeat(64)),
        ] {
            assert_eq!(
                verify_signature(b"k", b"x", Some(bad)),
                Err(SignatureError::Malformed),
                "{bad}"
            );
        }
    }

    #[test]
    fn escaped_unicode_verifies_only_as_received() {
        // Meta sends non-ASCII escaped; re-serialising the parsed JSON gives other bytes.
        let raw = br#"{"text":{"body":"caf\u00e9 \ud83d\ude00"}}"#;
        let header = sign(b"k", raw);
        assert_eq!(verify_signature(b"k", raw, Some(&header)), Ok(()));
        let value: serde_json::Value = serde_json::from_slice(raw).unwrap();
        let reserialised = serde_json::to_vec(&value).unwrap();
        assert_ne!(reserialised.as_slice(), raw.as_slice());
        assert_eq!(
            verify_signature(b"k", &reserialised, Some(&header)),
            Err(SignatureError::Mismatch)
        );
    }
}
