//! Operator API keys: the middleware in front of the operator routes (`/api/analytics/...`).
//!
//! A request carries its key as `Authorization: Bearer <key>` or `X-API-Key: <key>`. Only the
//! SHA-256 digests of the configured keys are kept; a presented key is digested and compared
//! with every one of them in constant time, so neither the time taken nor an early exit tells
//! how much of a key was right or which key matched. Without a valid key the answer is 401
//! with `WWW-Authenticate: Bearer`; with no key configured at all, every request is refused
//! (fail closed). Keys are never logged.
use axum::extract::{Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use wamesh_runtime::Secret;

use crate::error::ApiError;

/// The header a key may come in besides `Authorization: Bearer`.
pub const API_KEY_HEADER: &str = "x-api-key";

/// The accepted keys, as digests.
#[derive(Clone, Default)]
pub struct OperatorKeys {
    digests: Vec<[u8; 32]>,
}

impl std::fmt::Debug for OperatorKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "OperatorKeys({} keys)", self.digests.len())
    }
}

impl OperatorKeys {
    /// Empty keys are left out: an empty key must never open the API.
    pub fn new(keys: &[Secret]) -> Self {
        Self {
            digests: keys
                .iter()
                .filter(|k| !k.is_empty())
                .map(|k| digest(k.expose()))
                .collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.digests.is_empty()
    }

    /// Whether `key` is one of the accepted keys.
    pub fn accepts(&self, key: &str) -> bool {
        if key.is_empty() {
            return false;
        }
        let presented = digest(key);
        self.digests.iter().fold(false, |found, d| {
            found | bool::from(d[..].ct_eq(&presented[..]))
        })
    }

    /// Checks the request's headers: `Ok` when a key they carry is accepted.
    pub fn check(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        if self.is_empty() {
            return Err(ApiError::NoApiKeys);
        }
        let bearer = headers
            .get_all(header::AUTHORIZATION)
            .iter()
            .filter_map(|v| bearer_token(v.to_str().ok()?));
        let api_key = headers
            .get_all(API_KEY_HEADER)
            .iter()
            .filter_map(|v| Some(v.to_str().ok()?.trim()));
        let accepted = bearer
            .chain(api_key)
            .fold(false, |found, key| found | self.accepts(key));
        if accepted {
            Ok(())
        } else {
            Err(ApiError::Unauthenticated)
        }
    }
}

/// The token of `Bearer <token>` (the scheme is case-insensitive, RFC 9110 §11.1).
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// The middleware: lets the request through only with an accepted key.
pub async fn require_key(
    State(keys): State<std::sync::Arc<OperatorKeys>>,
    request: Request,
    next: Next,
) -> Response {
    match keys.check(request.headers()) {
        Ok(()) => next.run(request).await,
        Err(refused) => {
            tracing::info!(
                path = request.uri().path(),
                reason = refused.code(),
                no_keys = keys.is_empty(),
                "operator request refused"
            );
            refused.into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn either_header_carries_the_key() {
        let keys = OperatorKeys::new(&[Secret::new("k1"), Secret::new("k2")]);
        assert!(
            keys.check(&headers(&[("authorization", "Bearer k1")]))
                .is_ok()
        );
        assert!(
            keys.check(&headers(&[("authorization", "bearer  k2 ")]))
                .is_ok()
        );
        assert!(keys.check(&headers(&[("x-api-key", "k2")])).is_ok());
        assert!(
            keys.check(&headers(&[
                ("authorization", "Basic k1"),
                ("x-api-key", "k1")
            ]))
            .is_ok(),
            "another scheme does not hide a valid X-API-Key"
        );
    }

    #[test]
    fn wrong_partial_or_missing_keys_are_refused() {
        let keys = OperatorKeys::new(&[Secret::new("k1")]);
        for refused in [
            headers(&[]),
            headers(&[("authorization", "Bearer k")]),
            headers(&[("authorization", "Bearer k1x")]),
            headers(&[("authorization", "Basic k1")]),
            headers(&[("authorization", "k1")]),
            headers(&[("x-api-key", "")]),
            headers(&[("x-api-key", "K1")]),
        ] {
            assert!(
                matches!(keys.check(&refused), Err(ApiError::Unauthenticated)),
                "{refused:?}"
            );
        }
    }

    #[test]
    fn no_keys_or_only_empty_ones_refuse_everything() {
        for keys in [
            OperatorKeys::new(&[]),
            OperatorKeys::new(&[Secret::new("")]),
        ] {
            assert!(keys.is_empty());
            let error = keys.check(&headers(&[("x-api-key", "")])).unwrap_err();
            assert!(matches!(error, ApiError::NoApiKeys));
        }
    }

    #[test]
    fn debug_shows_no_key() {
        let keys = OperatorKeys::new(&[Secret::new("hunter2")]);
        assert_eq!(format!("{keys:?}"), "OperatorKeys(1 keys)");
    }
}
