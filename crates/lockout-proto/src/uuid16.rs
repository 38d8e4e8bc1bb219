//! UUIDs as the protocol (`docs/protocol.md`) wants them: a string in JSON, 16 raw bytes in
//! postcard.
//!
//! The `uuid` crate's own serde impl writes length-prefixed bytes (17 bytes in postcard);
//! the protocol says 16, so wire types use `#[serde(with = "crate::uuid16")]`.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use uuid::Uuid;

pub fn serialize<S: Serializer>(id: &Uuid, s: S) -> Result<S::Ok, S::Error> {
    if s.is_human_readable() {
        id.serialize(s)
    } else {
        id.as_bytes().serialize(s)
    }
}

pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Uuid, D::Error> {
    if d.is_human_readable() {
        Uuid::deserialize(d)
    } else {
        <[u8; 16]>::deserialize(d).map(Uuid::from_bytes)
    }
}
