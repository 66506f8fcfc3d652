//! The business numbers the gateway accepts webhooks for. A webhook is signed by its Meta app:
//! the gateway tries each distinct app secret (there are few) over the raw bytes, in constant
//! time, and remembers which number's app verified it. With no secret at all, every webhook is
//! refused (fail closed).
use std::sync::RwLock;

use subtle::ConstantTimeEq;
use wamesh_runtime::BusinessNumber;
use wamesh_whatsapp::SignatureError;
use wamesh_whatsapp::signature::{parse_header, verify_digest};

/// The registry, shared by handlers; numbers may be added while serving.
#[derive(Debug, Default)]
pub struct Apps {
    numbers: RwLock<Vec<BusinessNumber>>,
}

impl Apps {
    pub fn new(numbers: Vec<BusinessNumber>) -> Self {
        Self {
            numbers: RwLock::new(numbers),
        }
    }

    /// Adds a number, or replaces the one with the same phone number id.
    pub fn register(&self, number: BusinessNumber) {
        let mut numbers = self.numbers.write().unwrap_or_else(|e| e.into_inner());
        numbers.retain(|n| n.phone_number_id != number.phone_number_id);
        numbers.push(number);
    }

    /// Checks the signature header against every registered app secret; answers the label of
    /// the number whose secret verified the body.
    pub fn verify(&self, body: &[u8], header: Option<&str>) -> Result<String, SignatureError> {
        let claimed = parse_header(header)?;
        let numbers = self.numbers.read().unwrap_or_else(|e| e.into_inner());
        let mut tried: Vec<&str> = Vec::new();
        for number in numbers.iter() {
            let secret = number.app_secret.expose();
            if secret.is_empty() || tried.contains(&secret) {
                continue;
            }
            tried.push(secret);
            if verify_digest(secret.as_bytes(), body, &claimed) {
                return Ok(number.label().to_owned());
            }
        }
        Err(SignatureError::Mismatch)
    }

    /// Whether `token` is the verify token of any registered number (constant time each).
    pub fn verify_token_matches(&self, token: &str) -> bool {
        let numbers = self.numbers.read().unwrap_or_else(|e| e.into_inner());
        numbers.iter().fold(false, |found, n| {
            let expected = n.verify_token.expose().as_bytes();
            found | (!expected.is_empty() && bool::from(expected.ct_eq(token.as_bytes())))
        })
    }

    /// Whether any app secret is configured (without one every webhook is refused).
    pub fn has_secret(&self) -> bool {
        let numbers = self.numbers.read().unwrap_or_else(|e| e.into_inner());
        numbers.iter().any(|n| !n.app_secret.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use wamesh_runtime::Secret;

    use super::*;

    fn number(id: Option<&str>, secret: &str, token: &str) -> BusinessNumber {
        BusinessNumber {
            phone_number_id: id.map(str::to_owned),
            waba_id: None,
            app_secret: Secret::new(secret),
            verify_token: Secret::new(token),
            access_token: None,
            throughput: None,
            tier: None,
        }
    }

    #[test]
    fn the_app_whose_secret_signed_the_body_is_named() {
        let apps = Apps::new(vec![
            number(None, "default-secret", "t0"),
            number(Some("111"), "secret-b", "t1"),
        ]);
        let sig = wamesh_whatsapp::sign(b"secret-b", b"{}");
        assert_eq!(apps.verify(b"{}", Some(&sig)), Ok("111".to_owned()));
        let sig = wamesh_whatsapp::sign(b"default-secret", b"{}");
        assert_eq!(apps.verify(b"{}", Some(&sig)), Ok("default".to_owned()));
        let sig = wamesh_whatsapp::sign(b"unknown", b"{}");
        assert_eq!(
            apps.verify(b"{}", Some(&sig)),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn registering_adds_or_replaces_a_number() {
        let apps = Apps::default();
        assert!(!apps.has_secret());
        apps.register(number(Some("1"), "a", "t"));
        apps.register(number(Some("1"), "b", "t"));
        let sig = wamesh_whatsapp::sign(b"a", b"x");
        assert_eq!(apps.verify(b"x", Some(&sig)), Err(SignatureError::Mismatch));
        let sig = wamesh_whatsapp::sign(b"b", b"x");
        assert!(apps.verify(b"x", Some(&sig)).is_ok());
    }

    #[test]
    fn verify_tokens_match_exactly() {
        let apps = Apps::new(vec![
            number(None, "s", "token-1"),
            number(Some("2"), "s2", ""),
        ]);
        assert!(apps.verify_token_matches("token-1"));
        assert!(!apps.verify_token_matches("token-"));
        assert!(
            !apps.verify_token_matches(""),
            "an empty token never matches"
        );
    }
}
