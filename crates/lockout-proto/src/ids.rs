//! Tenants and users, validated once.
//!
//! A [`Tenant`] is 1–64 characters of `[A-Za-z0-9_-]`; a [`UserId`] is 1–256 bytes of UTF-8,
//! written in subjects as its *user token*: base64url without padding (RFC 4648 §5).

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use compact_str::CompactString;

use crate::error::{RejectReason, Rejection};

/// Longest tenant, in characters.
pub const TENANT_MAX: usize = 64;
/// Longest user id, in bytes of UTF-8.
pub const USER_MAX_BYTES: usize = 256;

/// A tenant name: 1–64 characters of `[A-Za-z0-9_-]`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Tenant(CompactString);

impl Tenant {
    pub fn parse(s: &str) -> Result<Tenant, Rejection> {
        if is_token(s, TENANT_MAX) {
            Ok(Tenant(s.into()))
        } else {
            Err(Rejection::new(
                RejectReason::BadSubject,
                format!("tenant {s:?} is invalid: use 1 to {TENANT_MAX} characters of A-Z, a-z, 0-9, '_' and '-'"),
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_inner(self) -> CompactString {
        self.0
    }
}

impl fmt::Display for Tenant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// True when `s` is 1..=max characters of `[A-Za-z0-9_-]` (tenants and the root prefix).
pub fn is_token(s: &str, max: usize) -> bool {
    !s.is_empty() && s.len() <= max && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// An account's canonical id: opaque, case-sensitive UTF-8 of 1–256 bytes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UserId(CompactString);

impl UserId {
    /// Validates a user id as it appears in a body (reason `out_of_range` when its length is off).
    pub fn parse(s: &str) -> Result<UserId, Rejection> {
        Self::check(s)?;
        Ok(UserId(s.into()))
    }

    /// [`UserId::parse`] without keeping the result.
    pub fn check(s: &str) -> Result<(), Rejection> {
        if s.is_empty() || s.len() > USER_MAX_BYTES {
            return Err(Rejection::out_of_range(format!(
                "field `user` has {} bytes; a user id must have 1 to {USER_MAX_BYTES} bytes of UTF-8",
                s.len()
            )));
        }
        Ok(())
    }

    /// Decodes a user token from a subject (reason `bad_subject` when it is malformed).
    pub fn from_token(token: &str) -> Result<UserId, Rejection> {
        let bad = |why: &str| {
            Rejection::new(
                RejectReason::BadSubject,
                format!("user token {token:?} is invalid: {why}; write the user id's UTF-8 bytes as base64url without padding"),
            )
        };
        // Decoded on the stack (one user token per event); only a token too long for any valid
        // id takes the allocating path, to say how long it is.
        // (3 bytes to spare: base64 may ask for room for a whole last quantum.)
        let mut buf = [0u8; USER_MAX_BYTES + 3];
        let too_long;
        let not_base64 = || bad("it is not base64url without padding");
        let bytes = match URL_SAFE_NO_PAD.decode_slice(token, &mut buf) {
            Ok(n) => &buf[..n],
            Err(base64::DecodeSliceError::OutputSliceTooSmall) => {
                too_long = URL_SAFE_NO_PAD.decode(token).map_err(|_| not_base64())?;
                &too_long[..]
            }
            Err(base64::DecodeSliceError::DecodeError(_)) => return Err(not_base64()),
        };
        let s = std::str::from_utf8(bytes).map_err(|_| bad("it does not decode to UTF-8"))?;
        if s.is_empty() || s.len() > USER_MAX_BYTES {
            return Err(bad(&format!("it decodes to {} bytes, not 1 to {USER_MAX_BYTES}", s.len())));
        }
        Ok(UserId(s.into()))
    }

    /// The user token: base64url without padding of the id's UTF-8 bytes.
    pub fn token(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.0.as_bytes())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_inner(self) -> CompactString {
        self.0
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example user token of `docs/protocol.md`.
    #[test]
    fn protocol_example_token() {
        let u = UserId::parse("alice@acme.com").unwrap();
        assert_eq!(u.token(), "YWxpY2VAYWNtZS5jb20");
        assert_eq!(UserId::from_token("YWxpY2VAYWNtZS5jb20").unwrap(), u);
    }

    #[test]
    fn tenant_charset_and_length() {
        assert!(Tenant::parse("acme_EU-1").is_ok());
        assert!(Tenant::parse(&"a".repeat(64)).is_ok());
        for bad in ["", "a.b", "a b", "ä", "*", ">", &"a".repeat(65)] {
            let e = Tenant::parse(bad).unwrap_err();
            assert_eq!(e.reason, RejectReason::BadSubject, "{bad:?}");
            assert!(e.message.contains("1 to 64 characters"), "{}", e.message);
        }
    }

    #[test]
    fn user_token_errors() {
        // Padding, standard-alphabet characters, non-UTF-8 and over-long ids are refused.
        let too_long = URL_SAFE_NO_PAD.encode("x".repeat(257));
        let not_utf8 = URL_SAFE_NO_PAD.encode([0xff, 0xfe]);
        for bad in ["YQ==", "a+b", "a/b", "", not_utf8.as_str(), too_long.as_str()] {
            let e = UserId::from_token(bad).unwrap_err();
            assert_eq!(e.reason, RejectReason::BadSubject, "{bad:?}");
        }
        assert_eq!(UserId::from_token(&URL_SAFE_NO_PAD.encode("x".repeat(256))).unwrap().as_str().len(), 256);
        // Every length around the limit: decoded exactly, or refused with the length it has.
        for len in 250..=262 {
            let r = UserId::from_token(&URL_SAFE_NO_PAD.encode("é".repeat(len / 2) + &"x".repeat(len % 2)));
            match r {
                Ok(u) => assert!(len <= USER_MAX_BYTES && u.as_str().len() == len, "{len}"),
                Err(e) => {
                    assert!(len > USER_MAX_BYTES, "{len}: {}", e.message);
                    assert!(e.message.contains(&format!("decodes to {len} bytes")), "{}", e.message);
                }
            }
        }
        // Not base64url, however long: that is the reason given.
        let e = UserId::from_token(&"*".repeat(400)).unwrap_err();
        assert!(e.message.contains("not base64url"), "{}", e.message);
    }

    #[test]
    fn user_length_in_body() {
        assert_eq!(UserId::parse("").unwrap_err().reason, RejectReason::OutOfRange);
        assert_eq!(UserId::parse(&"é".repeat(129)).unwrap_err().reason, RejectReason::OutOfRange);
        assert!(UserId::parse(&"é".repeat(128)).is_ok());
    }

    proptest::proptest! {
        #[test]
        fn token_round_trips(s in "\\PC{1,64}") {
            let u = UserId::parse(&s).unwrap();
            let tok = u.token();
            proptest::prop_assert!(is_token(&tok, 400), "token {} must be subject-safe", tok);
            proptest::prop_assert_eq!(UserId::from_token(&tok).unwrap(), u);
        }
    }
}
