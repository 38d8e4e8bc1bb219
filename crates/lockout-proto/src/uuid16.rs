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

/// An optional UUID the same way: `null` or a string in JSON, postcard's option of 16 bytes.
pub mod option {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use uuid::Uuid;

    #[derive(Serialize, Deserialize)]
    struct Wire(#[serde(with = "crate::uuid16")] Uuid);

    pub fn serialize<S: Serializer>(value: &Option<Uuid>, s: S) -> Result<S::Ok, S::Error> {
        value.map(Wire).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Uuid>, D::Error> {
        Ok(Option::<Wire>::deserialize(d)?.map(|w| w.0))
    }
}
