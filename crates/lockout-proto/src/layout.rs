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
