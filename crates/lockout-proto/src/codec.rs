//! The two encodings and the headers that go with them.
//!
//! `Content-Type: application/json` or `application/postcard` (`; v=2` for the v2 layout of
//! [`layout`](crate::layout)); no header means postcard in the v1 layout.
//! Decoding refuses payloads over [`MAX_PAYLOAD`], trailing postcard bytes and unknown
//! enum values, each with a [`Rejection`] that says what to fix.

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{RejectReason, Rejection};
use crate::layout::{self, Layout};

/// Largest payload the service accepts, in bytes.
pub const MAX_PAYLOAD: usize = 64 * 1024;

pub const CONTENT_TYPE: &str = "Content-Type";
pub const JSON: &str = "application/json";
pub const POSTCARD: &str = "application/postcard";
/// The `Content-Type` of a postcard body in the v2 layout.
pub const POSTCARD_V2: &str = "application/postcard; v=2";
pub const NATS_MSG_ID: &str = "Nats-Msg-Id";
pub const EVENT_SEQ: &str = "Lockout-Event-Seq";
/// A notice's position among the notices of its event (an extension).
pub const NOTICE_INDEX: &str = "Lockout-Notice-Index";
pub const LOCKOUT_ERROR: &str = "Lockout-Error";
pub const LOCKOUT_SUBJECT: &str = "Lockout-Subject";
pub const LOCKOUT_SEQ: &str = "Lockout-Seq";
/// On notices and dead letters (an extension of contract v2): the partition of the user (or
/// IP) they are about, whose owner published them.
pub const PARTITION: &str = "Lockout-Partition";
pub const TRACEPARENT: &str = "traceparent";
pub const TRACESTATE: &str = "tracestate";
pub const SERVICE_ERROR: &str = "Nats-Service-Error";
pub const SERVICE_ERROR_CODE: &str = "Nats-Service-Error-Code";

/// A message encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Encoding {
    Json,
    /// Postcard, v1 layout.
    #[default]
    Postcard,
    /// Postcard, v2 layout (v1 followed by the fields contract v2 added).
    PostcardV2,
}

impl Encoding {
    /// Picks the encoding from a `Content-Type` value; `None` (no header) is postcard v1.
    /// The media type is case-insensitive; a postcard body's `v` parameter (`1` or `2`,
    /// absent: 1) picks the layout; other parameters such as `; charset=utf-8` are ignored.
    pub fn from_content_type(value: Option<&str>) -> Result<Encoding, Rejection> {
        let Some(value) = value else { return Ok(Encoding::Postcard) };
        let mut parts = value.split(';');
        let media = parts.next().unwrap_or("").trim();
        if media.eq_ignore_ascii_case(JSON) {
            Ok(Encoding::Json)
        } else if media.eq_ignore_ascii_case(POSTCARD) {
            let version = parts
                .filter_map(|p| p.split_once('='))
                .find(|(k, _)| k.trim().eq_ignore_ascii_case("v"))
                .map(|(_, v)| v.trim().trim_matches('"'));
            match version {
                None | Some("1") => Ok(Encoding::Postcard),
                Some("2") => Ok(Encoding::PostcardV2),
                Some(other) => Err(Rejection::new(
                    RejectReason::Encoding,
                    format!(
                        "Content-Type {value:?} names postcard layout v={other}, which this service does not know: send `{POSTCARD}` (v1) or `{POSTCARD_V2}`"
                    ),
                )),
            }
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
            Encoding::PostcardV2 => POSTCARD_V2,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Encoding::Json => "json",
            Encoding::Postcard => "postcard",
            Encoding::PostcardV2 => "postcard-v2",
        }
    }

    /// The postcard layout, `None` for JSON.
    pub fn layout(self) -> Option<Layout> {
        match self {
            Encoding::Json => None,
            Encoding::Postcard => Some(Layout::V1),
            Encoding::PostcardV2 => Some(Layout::V2),
        }
    }

    /// The encoding of the same kind in `layout`: postcard picks it, JSON has only one.
    pub fn with_layout(self, layout: Layout) -> Encoding {
        match (self, layout) {
            (Encoding::Json, _) => Encoding::Json,
            (_, Layout::V1) => Encoding::Postcard,
            (_, Layout::V2) => Encoding::PostcardV2,
        }
    }
}

impl std::str::FromStr for Encoding {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "json" => Ok(Encoding::Json),
            "postcard" => Ok(Encoding::Postcard),
            "postcard-v2" => Ok(Encoding::PostcardV2),
            other => Err(format!("unknown encoding {other:?}: use `json`, `postcard` or `postcard-v2`")),
        }
    }
}

/// Encodes a wire value. Wire types have no maps with non-string keys and no unsized
/// sequences postcard cannot write, so this cannot fail.
pub fn encode<T: Serialize>(enc: Encoding, value: &T) -> Vec<u8> {
    match enc {
        Encoding::Json => serde_json::to_vec(value).expect("wire types always encode to JSON"),
        Encoding::Postcard | Encoding::PostcardV2 => layout::with(enc.layout().unwrap_or_default(), || {
            postcard::to_allocvec(value).expect("wire types always encode to postcard")
        }),
    }
}

/// Decodes a wire value, refusing oversized payloads and trailing bytes.
pub fn decode<T: DeserializeOwned>(enc: Encoding, bytes: &[u8], what: &str) -> Result<T, Rejection> {
    check_size(bytes)?;
    match enc {
        Encoding::Json => serde_json::from_slice(bytes).map_err(|e| {
            Rejection::new(RejectReason::Undecodable, format!("{what} is not valid JSON for its type: {e}"))
        }),
        Encoding::Postcard | Encoding::PostcardV2 => {
            let layout = enc.layout().unwrap_or_default();
            let (value, rest) = layout::with(layout, || postcard::take_from_bytes::<T>(bytes)).map_err(|e| {
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
        assert_eq!(Encoding::from_content_type(Some("application/postcard; v=1")).unwrap(), Encoding::Postcard);
        assert_eq!(Encoding::from_content_type(Some("application/postcard; v=2")).unwrap(), Encoding::PostcardV2);
        assert_eq!(Encoding::from_content_type(Some("Application/Postcard;V=\"2\"")).unwrap(), Encoding::PostcardV2);
        assert_eq!(Encoding::from_content_type(Some(POSTCARD_V2)).unwrap(), Encoding::PostcardV2);
        let e = Encoding::from_content_type(Some("application/postcard; v=3")).unwrap_err();
        assert_eq!(e.reason, RejectReason::Encoding);
        assert!(e.message.contains("v=3") && e.message.contains(POSTCARD_V2), "{}", e.message);
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
