//! The two postcard layouts (contract, "Compatibility").
//!
//! A message's v2 layout is its v1 layout followed by the fields contract v2 added to it, in
//! the order the contract lists them; `Content-Type: application/postcard; v=2` says which.
//! One Rust type serves both: each added field is declared with
//! `#[serde(default, with = "crate::layout::v2")]`. While [`codec`](crate::codec) reads or writes a v1 postcard body, such
//! a field takes no bytes at all (postcard writes a unit as nothing) and decodes to its
//! default; in JSON and in the v2 layout it is an ordinary field. Nested messages (the Status
//! items of a `locked` page) follow the same layout as the message around them.
//!
//! The layout is a thread-local set around one synchronous encode or decode, never across an
//! `.await`; code outside the codec (a direct `postcard` call, sled's state codec) sees v2.

use std::cell::Cell;

use serde::de::{Deserialize, Deserializer, Visitor};
use serde::ser::{Serialize, Serializer};

/// A postcard layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Layout {
    /// Contract v1: the fields of `docs/protocol.md` only.
    V1,
    /// Contract v2: v1 followed by the added fields.
    #[default]
    V2,
}

thread_local! {
    static CURRENT: Cell<Layout> = const { Cell::new(Layout::V2) };
}

/// Runs `f` with `layout` in force for the v2 fields it encodes or decodes.
pub fn with<R>(layout: Layout, f: impl FnOnce() -> R) -> R {
    struct Restore(Layout);
    impl Drop for Restore {
        fn drop(&mut self) {
            CURRENT.with(|c| c.set(self.0));
        }
    }
    let _restore = Restore(CURRENT.with(|c| c.replace(layout)));
    f()
}

/// Whether a v2 field is written and read here: always in JSON, in postcard unless a v1
/// body is being read or written.
fn present(human_readable: bool) -> bool {
    human_readable || CURRENT.with(Cell::get) == Layout::V2
}

struct Unit;

impl<'de> Visitor<'de> for Unit {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("nothing (a field the v1 layout does not have)")
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
}

/// A field contract v2 added, defaulting to `T::default()`.
pub mod v2 {
    use super::*;

    pub fn serialize<T: Serialize, S: Serializer>(value: &T, s: S) -> Result<S::Ok, S::Error> {
        if present(s.is_human_readable()) {
            value.serialize(s)
        } else {
            s.serialize_unit()
        }
    }

    pub fn deserialize<'de, T: Deserialize<'de> + Default, D: Deserializer<'de>>(d: D) -> Result<T, D::Error> {
        if present(d.is_human_readable()) {
            T::deserialize(d)
        } else {
            d.deserialize_unit(Unit)?;
            Ok(T::default())
        }
    }
}

/// Declares a module like [`v2`] whose field, absent from a v1 postcard body, reads as
/// `$value` rather than `T::default()` (JSON's absent fields take the struct's defaults).
macro_rules! v2_defaulting {
    ($(#[$meta:meta])* $name:ident: $ty:ty = $value:expr) => {
        $(#[$meta])*
        pub mod $name {
            use super::*;

            pub fn serialize<S: Serializer>(value: &$ty, s: S) -> Result<S::Ok, S::Error> {
                v2::serialize(value, s)
            }

            pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<$ty, D::Error> {
                if present(d.is_human_readable()) {
                    <$ty>::deserialize(d)
                } else {
                    d.deserialize_unit(Unit)?;
                    Ok($value)
                }
            }
        }
    };
}

v2_defaulting!(
    /// A v2 `bool` field whose default is true (`final`, `unlock_on_password_reset`).
    v2_true: bool = true
);

v2_defaulting!(
    /// A v2 window or block length whose default is an hour (`ip_window_seconds`,
    /// `ip_block_seconds`).
    v2_hour: u32 = 3600
);

/// `true`, for `#[serde(default = ...)]` of a JSON field whose default is true.
pub fn yes() -> bool {
    true
}

/// An hour in seconds, for `#[serde(default = ...)]`.
pub fn hour() -> u32 {
    3600
}

/// A v2 field that is an optional UUID: 16 raw bytes in postcard like every protocol UUID
/// ([`crate::uuid16`]), a string in JSON; absent from a v1 postcard body.
pub mod v2_uuid {
    use super::*;
    use uuid::Uuid;

    #[derive(serde::Serialize, serde::Deserialize)]
    struct Wire(#[serde(with = "crate::uuid16")] Uuid);

    pub fn serialize<S: Serializer>(value: &Option<Uuid>, s: S) -> Result<S::Ok, S::Error> {
        v2::serialize(&value.map(Wire), s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Uuid>, D::Error> {
        Ok(v2::deserialize::<Option<Wire>, D>(d)?.map(|w| w.0))
    }
}
