//! The two encodings and the headers that go with them.
//!
//! `Content-Type: application/json` or `application/postcard`; no header means postcard.
//! Decoding refuses payloads over [`MAX_PAYLOAD`], trailing postcard bytes and unknown
//! enum values, each with a [`Rejection`] that says what to fix.

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{RejectReason, Rejection};

/// Largest payload the service accepts, in bytes.
pub const MAX_PAYLOAD: usize = 64 * 1024;

pub const CONTENT_TYPE: &str = "Content-Type";
pub const JSON: &str = "application/json";
pub const POSTCARD: &str = "application/postcard";
pub const NATS_MSG_ID: &str = "Nats-Msg-Id";
pub const EVENT_SEQ: &str = "Lockout-Event-Seq";
/// A notice's position among the notices of its event (an extension).
pub const NOTICE_INDEX: &str = "Lockout-Notice-Index";
pub const LOCKOUT_ERROR: &str = "Lockout-Error";
pub const LOCKOUT_SUBJECT: &str = "Lockout-Subject";
pub const LOCKOUT_SEQ: &str = "Lockout-Seq";
pub const TRACEPARENT: &str = "traceparent";
pub const TRACESTATE: &str = "tracestate";
pub const SERVICE_ERROR: &str = "Nats-Service-Error";
pub const SERVICE_ERROR_CODE: &str = "Nats-Service-Error-Code";

/// A message encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Encoding {
    Json,
    #[default]
    Postcard,
}

impl Encoding {
    /// Picks the encoding from a `Content-Type` value; `None` (no header) is postcard.
    /// Parameters such as `; charset=utf-8` are ignored and the media type is case-insensitive.
    pub fn from_content_type(value: Option<&str>) -> Result<Encoding, Rejection> {
        let Some(value) = value else { return Ok(Encoding::Postcard) };
        let media = value.split(';').next().unwrap_or("").trim();
        if media.eq_ignore_ascii_case(JSON) {
            Ok(Encoding::Json)
        } else if media.eq_ignore_ascii_case(POSTCARD) {
            Ok(Encoding::Postcard)
        } else {
            Err(Rejection::new(
                RejectReason::Encoding,
                format!(
                    "Content-Type {value:?} is not supported: send `{JSON}` or `{POSTCARD}` (no header means postcard)"
                ),
            ))
        }
    }

    /// The `Content-Type` header value.
    pub fn content_type(self) -> &'static str {
        match self {
            Encoding::Json => JSON,
            Encoding::Postcard => POSTCARD,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Encoding::Json => "json",
            Encoding::Postcard => "postcard",
        }
    }
}

impl std::str::FromStr for Encoding {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "json" => Ok(Encoding::Json),
            "postcard" => Ok(Encoding::Postcard),
            other => Err(format!("unknown encoding {other:?}: use `json` or `postcard`")),
        }
    }
}

/// Encodes a wire value. Wire types have no maps with non-string keys and no unsized
/// sequences postcard cannot write, so this cannot fail.
pub fn encode<T: Serialize>(enc: Encoding, value: &T) -> Vec<u8> {
    match enc {
        Encoding::Json => serde_json::to_vec(value).expect("wire types always encode to JSON"),
        Encoding::Postcard => postcard::to_allocvec(value).expect("wire types always encode to postcard"),
    }
}

/// Decodes a wire value, refusing oversized payloads and trailing bytes.
pub fn decode<T: DeserializeOwned>(enc: Encoding, bytes: &[u8], what: &str) -> Result<T, Rejection> {
    check_size(bytes)?;
    match enc {
        Encoding::Json => serde_json::from_slice(bytes).map_err(|e| {
            Rejection::new(RejectReason::Undecodable, format!("{what} is not valid JSON for its type: {e}"))
        }),
        Encoding::Postcard => {
            let (value, rest) = postcard::take_from_bytes::<T>(bytes).map_err(|e| {
                Rejection::new(
                    RejectReason::Undecodable,
                    format!(
                        "{what} is not valid postcard for its type ({e}); see schemas/postcard.md for the layout (no Content-Type header means postcard: send `Content-Type: {JSON}` with JSON)"
                    ),
                )
            })?;
            if !rest.is_empty() {
                return Err(Rejection::new(
                    RejectReason::Undecodable,
                    format!(
                        "{what} has {} trailing bytes after a complete postcard value; send exactly one value",
                        rest.len()
                    ),
                ));
            }
            Ok(value)
        }
    }
}

/// Refuses payloads larger than [`MAX_PAYLOAD`].
pub fn check_size(bytes: &[u8]) -> Result<(), Rejection> {
    if bytes.len() > MAX_PAYLOAD {
        return Err(Rejection::out_of_range(format!(
            "payload has {} bytes; the limit is {MAX_PAYLOAD} bytes",
            bytes.len()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_type_selection() {
        assert_eq!(Encoding::from_content_type(None).unwrap(), Encoding::Postcard);
        assert_eq!(Encoding::from_content_type(Some("application/json")).unwrap(), Encoding::Json);
        assert_eq!(Encoding::from_content_type(Some("Application/JSON; charset=utf-8")).unwrap(), Encoding::Json);
        assert_eq!(Encoding::from_content_type(Some("application/postcard")).unwrap(), Encoding::Postcard);
        let e = Encoding::from_content_type(Some("text/plain")).unwrap_err();
        assert_eq!(e.reason, RejectReason::Encoding);
        assert!(e.message.contains("application/json"), "{}", e.message);
    }

    #[test]
    fn oversized_payload_is_out_of_range() {
        let big = vec![b' '; MAX_PAYLOAD + 1];
        let e = decode::<u32>(Encoding::Json, &big, "the body").unwrap_err();
        assert_eq!(e.reason, RejectReason::OutOfRange);
        assert!(e.message.contains("65536"), "{}", e.message);
    }

    #[test]
    fn trailing_postcard_bytes_are_refused() {
        let e = decode::<u32>(Encoding::Postcard, &[5, 0], "the body").unwrap_err();
        assert_eq!(e.reason, RejectReason::Undecodable);
        assert!(e.message.contains("1 trailing bytes"), "{}", e.message);
        assert_eq!(decode::<u32>(Encoding::Postcard, &[5], "the body").unwrap(), 5);
    }
}
