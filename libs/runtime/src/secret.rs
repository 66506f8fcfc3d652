//! Secrets (app secrets, verify tokens, access tokens) wrapped so that `{:?}` and `{}` never
//! print them: a secret reaches a log only if code calls [`Secret::expose`] on purpose.
use std::fmt;

#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// A random secret of 32 hex characters, for development defaults.
    pub fn generate() -> Self {
        let bytes: [u8; 16] = rand::random();
        Self(bytes.iter().map(|b| format!("{b:02x}")).collect())
    }

    /// The value itself: for checking signatures and calling APIs, never for logging.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_prints_itself() {
        let s = Secret::new("hunter2");
        assert!(!format!("{s} {s:?}").contains("hunter2"));
        assert_eq!(s.expose(), "hunter2");
        assert_eq!(Secret::generate().expose().len(), 32);
    }
}
