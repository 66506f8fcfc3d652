//! [`redact`]: keyed hashing of identifiers that must never be logged in clear.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// Keyed, non-reversible hash for identifiers that must never appear in clear
/// (phone numbers, WhatsApp ids): the first 16 lowercase hex characters (64 bits)
/// of HMAC-SHA256(`key`, `value`).
///
/// The same key and value always give the same output, so log lines about one
/// number can be correlated; without the key, the output cannot be brute-forced
/// back to a phone number. Keep the key secret and stable across services.
pub fn redact(key: &[u8], value: &str) -> String {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key)
        .expect("HMAC-SHA256 accepts keys of any length");
    mac.update(value.as_bytes());
    let digest = mac.finalize().into_bytes();
    hex::encode(&digest[..8])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_keyed_and_opaque() {
        let phone = "+4915112345678";
        let a = redact(b"key-one", phone);
        assert_eq!(a, redact(b"key-one", phone));
        assert_eq!(a.len(), 16);
        assert!(
            a.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
        assert_ne!(a, redact(b"key-two", phone));
        assert_ne!(a, redact(b"key-one", "+4915112345679"));
        assert!(!a.contains(phone) && !a.contains("4915112345678"));
        assert!(!redact(b"", "").is_empty());
    }

    #[test]
    fn matches_rfc4231_prefix() {
        // RFC 4231 test case 2: HMAC-SHA256("Jefe", "what do ya want for nothing?").
        assert_eq!(
            redact(b"Jefe", "what do ya want for nothing?"),
            "5bdcc146bf60754e"
        );
    }
}
