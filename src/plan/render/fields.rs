//! A created or deleted resource's attributes written straight from its typed spec, as the
//! plan shows them (`      mac            3e:89:...`), without building the spec's JSON first: a
//! big project's plan shows a hundred thousand creates, and a JSON object per spec (its map,
//! every key and value allocated) was a fifth of the plan's time.
//!
//! The text must be what [`super::body`] writes from the JSON (`multiline` of each value, so
//! `scalar` of its parts), so the spec is walked with its own `Serialize`: the fields, their
//! order and the ones left out are those of the JSON. A value of a shape this writer does not
//! handle (floats, bytes, enum variants with data, ...) reports [`Unsupported`] and the caller
//! shows the spec through its JSON instead.

use super::Style;
use crate::model::Spec;
use serde::ser::{self, Impossible, Serialize};
use std::fmt::{self, Display, Write};

/// The spec has a value this writer does not write like its JSON; show it from the JSON.
#[derive(Debug)]
pub(super) struct Unsupported;

impl Display for Unsupported {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a value shown through its JSON")
    }
}

impl std::error::Error for Unsupported {}

impl ser::Error for Unsupported {
    fn custom<T: Display>(_: T) -> Self {
        Unsupported
    }
}

type Result<T = ()> = std::result::Result<T, Unsupported>;

/// Every attribute of `spec` but its kind, one a line, appended to `out` (left as it was on
/// error).
pub(super) fn attributes(out: &mut String, spec: &Spec, st: &Style) -> Result {
    let start = out.len();
    let written = spec.serialize(Fields { out, spec, st });
    if written.is_err() {
        out.truncate(start);
    }
    written
}

/// The spec's struct: its fields become lines.
struct Fields<'o, 's> {
    out: &'o mut String,
    spec: &'s Spec,
    st: &'s Style,
}

impl ser::SerializeStruct for Fields<'_, '_> {
    type Ok = ();
    type Error = Unsupported;

    fn serialize_field<T: Serialize + ?Sized>(&mut self, key: &'static str, value: &T) -> Result {
        match key {
            "kind" => Ok(()),
            // A table's chains as the diff found them, not read back from their JSON.
            "chains" => match self.spec {
                Spec::Firewall(f) => {
                    super::listed(self.out, &f.chains);
                    Ok(())
                }
                _ => Err(Unsupported),
            },
            // And its maps and sets, not written out as JSON to be read back.
            "maps" | "sets" => match self.spec {
                Spec::Firewall(f) => {
                    match key {
                        "maps" => super::maps::typed_maps(self.out, &[], &f.maps, self.st),
                        _ => super::maps::typed_sets(self.out, &[], &f.sets, self.st),
                    }
                    Ok(())
                }
                _ => Err(Unsupported),
            },
            _ => {
                // `{key:<14} `, without the formatting machinery: it is every line's start.
                self.out.push_str("      ");
                self.out.push_str(key);
                let width = key.chars().count();
                self.out
                    .extend(std::iter::repeat_n(' ', 14usize.saturating_sub(width) + 1));
                value.serialize(Multiline { out: self.out })?;
                self.out.push('\n');
                Ok(())
            }
        }
    }

    fn end(self) -> Result {
        Ok(())
    }
}

/// `multiline` of render.rs: a list holding a string with whitespace one item a line, a map
/// of more than one entry one `key = value` a line, anything else as [`Scalar`] writes it.
struct Multiline<'o> {
    out: &'o mut String,
}

/// The padding that puts a continued value under the first line's value.
const PAD: &str = "\n                     ";

/// The items of a list or map written one after the other, with where each ends, so that the
/// separators can be chosen once every item is known.
struct Items<'o> {
    out: &'o mut String,
    /// Where the items start in `out`.
    start: usize,
    /// The end of each item (a map's: its key, then its value).
    ends: Vec<usize>,
    /// A list: whether an item is a string holding whitespace.
    spaced: bool,
}

impl<'o> Items<'o> {
    fn new(out: &'o mut String) -> Self {
        let start = out.len();
        Items {
            out,
            start,
            ends: Vec::new(),
            spaced: false,
        }
    }

    /// One more item, written as a scalar.
    fn item<T: Serialize + ?Sized>(&mut self, value: &T) -> Result {
        let at = self.out.len();
        let kind = value.serialize(Scalar { out: self.out })?;
        if kind == Kind::Str && self.out[at..].contains(char::is_whitespace) {
            self.spaced = true;
        }
        self.ends.push(self.out.len());
        Ok(())
    }

    /// A map's key, before its value ([`Items::item`]).
    fn key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result {
        key.serialize(Key { out: self.out })?;
        self.ends.push(self.out.len());
        Ok(())
    }

    /// The items written again, joined: `open`, each item (a map's as `key sep value`)
    /// followed by `between` but the last, `close`.
    fn join(self, open: &str, between: &str, sep: Option<&str>, close: &str) {
        let written = self.out.split_off(self.start);
        self.out.push_str(open);
        let mut from = 0;
        let step = if sep.is_some() { 2 } else { 1 };
        for (n, pair) in self.ends.chunks(step).enumerate() {
            if n > 0 {
                self.out.push_str(between);
            }
            match (sep, pair) {
                (Some(sep), [key, value]) => {
                    self.out.push_str(&written[from..*key]);
                    self.out.push_str(sep);
                    self.out.push_str(&written[*key..*value]);
                    from = *value;
                }
                (_, [.., end]) => {
                    self.out.push_str(&written[from..*end]);
                    from = *end;
                }
                (_, []) => {}
            }
        }
        self.out.push_str(close);
    }

    /// The ends as offsets into what was written after `start`.
    fn relative(mut self) -> Self {
        for end in &mut self.ends {
            *end -= self.start;
        }
        self
    }
}

/// serde's list traits for a writer of items (`.0`, [`Items`]) with an `end` of its own.
macro_rules! list_of {
    ($writer:ident) => {
        impl ser::SerializeSeq for $writer<'_> {
            type Ok = Kind;
            type Error = Unsupported;
            fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result {
                self.0.item(value)
            }
            fn end(self) -> Result<Kind> {
                $writer::end(self)
            }
        }

        impl ser::SerializeTuple for $writer<'_> {
            type Ok = Kind;
            type Error = Unsupported;
            fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result {
                self.0.item(value)
            }
            fn end(self) -> Result<Kind> {
                $writer::end(self)
            }
        }
    };
}

/// serde's map traits (a map's entries, a struct's fields) for a writer of items as
/// [`list_of`] takes it.
macro_rules! map_of {
    ($writer:ident) => {
        impl ser::SerializeMap for $writer<'_> {
            type Ok = Kind;
            type Error = Unsupported;
            fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result {
                self.0.key(key)
            }
            fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result {
                self.0.item(value)
            }
            fn end(self) -> Result<Kind> {
                $writer::end(self)
            }
        }

        impl ser::SerializeStruct for $writer<'_> {
            type Ok = Kind;
            type Error = Unsupported;
            fn serialize_field<T: Serialize + ?Sized>(
                &mut self,
                key: &'static str,
                value: &T,
            ) -> Result {
                self.0.key(key)?;
                self.0.item(value)
            }
            fn end(self) -> Result<Kind> {
                $writer::end(self)
            }
        }
    };
}

/// A list at the top of an attribute.
struct ListLines<'o>(Items<'o>);

impl ListLines<'_> {
    fn end(self) -> Result<Kind> {
        let items = self.0.relative();
        if items.spaced {
            items.join("", PAD, None, "");
        } else {
            items.join("[", ", ", None, "]");
        }
        Ok(Kind::Other)
    }
}

list_of!(ListLines);

/// A map or struct at the top of an attribute.
struct MapLines<'o>(Items<'o>);

impl MapLines<'_> {
    fn end(self) -> Result<Kind> {
        let items = self.0.relative();
        if items.ends.len() > 2 {
            items.join("", PAD, Some(" = "), "");
        } else {
            items.join("{", ", ", Some("="), "}");
        }
        Ok(Kind::Other)
    }
}

map_of!(MapLines);

/// A list or map inside a value, on one line: `[a, b]`, `{k=v, ...}`.
struct Inline<'o>(Items<'o>, bool);

impl Inline<'_> {
    fn end(self) -> Result<Kind> {
        let is_map = self.1;
        let items = self.0.relative();
        if is_map {
            items.join("{", ", ", Some("="), "}");
        } else {
            items.join("[", ", ", None, "]");
        }
        Ok(Kind::Other)
    }
}

list_of!(Inline);

map_of!(Inline);

/// What a scalar was in the JSON: only a string with whitespace changes how a list is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Str,
    Other,
}

/// `scalar` of render.rs: strings bare, numbers and booleans as JSON writes them, null as
/// `(none)`, lists in brackets, maps as `{k=v, ...}`.
struct Scalar<'o> {
    out: &'o mut String,
}

impl Scalar<'_> {
    fn text(self, s: &str) -> Result<Kind> {
        self.out.push_str(s);
        Ok(Kind::Str)
    }

    fn number(self, n: impl Display) -> Result<Kind> {
        let _ = write!(self.out, "{n}");
        Ok(Kind::Other)
    }

    fn none(self) -> Result<Kind> {
        self.out.push_str("(none)");
        Ok(Kind::Other)
    }
}

/// The serializer methods that write a scalar, shared by [`Scalar`] and [`Multiline`] (whose
/// scalars are written as [`Scalar`] writes them).
macro_rules! scalars {
    ($scalar:expr) => {
        fn serialize_bool(self, v: bool) -> Result<Kind> {
            $scalar(self).number(v)
        }
        fn serialize_i8(self, v: i8) -> Result<Kind> {
            $scalar(self).number(v)
        }
        fn serialize_i16(self, v: i16) -> Result<Kind> {
            $scalar(self).number(v)
        }
        fn serialize_i32(self, v: i32) -> Result<Kind> {
            $scalar(self).number(v)
        }
        fn serialize_i64(self, v: i64) -> Result<Kind> {
            $scalar(self).number(v)
        }
        fn serialize_u8(self, v: u8) -> Result<Kind> {
            $scalar(self).number(v)
        }
        fn serialize_u16(self, v: u16) -> Result<Kind> {
            $scalar(self).number(v)
        }
        fn serialize_u32(self, v: u32) -> Result<Kind> {
            $scalar(self).number(v)
        }
        fn serialize_u64(self, v: u64) -> Result<Kind> {
            $scalar(self).number(v)
        }
        // JSON's own number formatting: shown through the JSON.
        fn serialize_f32(self, _: f32) -> Result<Kind> {
            Err(Unsupported)
        }
        fn serialize_f64(self, _: f64) -> Result<Kind> {
            Err(Unsupported)
        }
        fn serialize_char(self, v: char) -> Result<Kind> {
            $scalar(self).text(v.encode_utf8(&mut [0; 4]))
        }
        fn serialize_str(self, v: &str) -> Result<Kind> {
            $scalar(self).text(v)
        }
        fn serialize_bytes(self, _: &[u8]) -> Result<Kind> {
            Err(Unsupported)
        }
        fn serialize_none(self) -> Result<Kind> {
            $scalar(self).none()
        }
        fn serialize_unit(self) -> Result<Kind> {
            $scalar(self).none()
        }
        fn serialize_unit_struct(self, _: &'static str) -> Result<Kind> {
            $scalar(self).none()
        }
        fn serialize_unit_variant(
            self,
            _: &'static str,
            _: u32,
            variant: &'static str,
        ) -> Result<Kind> {
            $scalar(self).text(variant)
        }
        fn serialize_newtype_variant<T: Serialize + ?Sized>(
            self,
            _: &'static str,
            _: u32,
            _: &'static str,
            _: &T,
        ) -> Result<Kind> {
            Err(Unsupported)
        }
        fn serialize_tuple_struct(
            self,
            _: &'static str,
            _: usize,
        ) -> Result<Self::SerializeTupleStruct> {
            Err(Unsupported)
        }
        fn serialize_tuple_variant(
            self,
            _: &'static str,
            _: u32,
            _: &'static str,
            _: usize,
        ) -> Result<Self::SerializeTupleVariant> {
            Err(Unsupported)
        }
        fn serialize_struct_variant(
            self,
            _: &'static str,
            _: u32,
            _: &'static str,
            _: usize,
        ) -> Result<Self::SerializeStructVariant> {
            Err(Unsupported)
        }
        fn collect_str<T: Display + ?Sized>(self, value: &T) -> Result<Kind> {
            let out = $scalar(self).out;
            let _ = write!(out, "{value}");
            Ok(Kind::Str)
        }
    };
}

/// Serializer methods of scalars that refuse them.
macro_rules! refuse {
    ($($name:ident($ty:ty))*) => {
        $(fn $name(self, _: $ty) -> Result {
            Err(Unsupported)
        })*
    };
}

impl<'o> ser::Serializer for Scalar<'o> {
    type Ok = Kind;
    type Error = Unsupported;
    type SerializeSeq = Inline<'o>;
    type SerializeTuple = Inline<'o>;
    type SerializeTupleStruct = Impossible<Kind, Unsupported>;
    type SerializeTupleVariant = Impossible<Kind, Unsupported>;
    type SerializeMap = Inline<'o>;
    type SerializeStruct = Inline<'o>;
    type SerializeStructVariant = Impossible<Kind, Unsupported>;

    scalars!(std::convert::identity);

    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<Kind> {
        value.serialize(self)
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        value: &T,
    ) -> Result<Kind> {
        value.serialize(self)
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Inline<'o>> {
        Ok(Inline(Items::new(self.out), false))
    }
    fn serialize_tuple(self, _: usize) -> Result<Inline<'o>> {
        Ok(Inline(Items::new(self.out), false))
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Inline<'o>> {
        Ok(Inline(Items::new(self.out), true))
    }
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Inline<'o>> {
        Ok(Inline(Items::new(self.out), true))
    }
}

impl<'o> ser::Serializer for Multiline<'o> {
    type Ok = Kind;
    type Error = Unsupported;
    type SerializeSeq = ListLines<'o>;
    type SerializeTuple = ListLines<'o>;
    type SerializeTupleStruct = Impossible<Kind, Unsupported>;
    type SerializeTupleVariant = Impossible<Kind, Unsupported>;
    type SerializeMap = MapLines<'o>;
    type SerializeStruct = MapLines<'o>;
    type SerializeStructVariant = Impossible<Kind, Unsupported>;

    scalars!(|m: Multiline<'o>| Scalar { out: m.out });

    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<Kind> {
        value.serialize(self)
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        value: &T,
    ) -> Result<Kind> {
        value.serialize(self)
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<ListLines<'o>> {
        Ok(ListLines(Items::new(self.out)))
    }
    fn serialize_tuple(self, _: usize) -> Result<ListLines<'o>> {
        Ok(ListLines(Items::new(self.out)))
    }
    fn serialize_map(self, _: Option<usize>) -> Result<MapLines<'o>> {
        Ok(MapLines(Items::new(self.out)))
    }
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<MapLines<'o>> {
        Ok(MapLines(Items::new(self.out)))
    }
}

/// A map's key as JSON writes it: a string, or a number, boolean or char as text.
struct Key<'o> {
    out: &'o mut String,
}

impl<'o> ser::Serializer for Key<'o> {
    type Ok = Kind;
    type Error = Unsupported;
    type SerializeSeq = Impossible<Kind, Unsupported>;
    type SerializeTuple = Impossible<Kind, Unsupported>;
    type SerializeTupleStruct = Impossible<Kind, Unsupported>;
    type SerializeTupleVariant = Impossible<Kind, Unsupported>;
    type SerializeMap = Impossible<Kind, Unsupported>;
    type SerializeStruct = Impossible<Kind, Unsupported>;
    type SerializeStructVariant = Impossible<Kind, Unsupported>;

    scalars!(|k: Key<'o>| Scalar { out: k.out });

    fn serialize_some<T: Serialize + ?Sized>(self, _: &T) -> Result<Kind> {
        Err(Unsupported)
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        value: &T,
    ) -> Result<Kind> {
        value.serialize(self)
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq> {
        Err(Unsupported)
    }
    fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple> {
        Err(Unsupported)
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap> {
        Err(Unsupported)
    }
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Self::SerializeStruct> {
        Err(Unsupported)
    }
}

/// The spec itself: a struct whose fields are the attributes (serde's internally tagged enum
/// writes its `kind` as the first field). A spec is never anything else; if it were, its JSON
/// would not be an object either, which the caller shows as such.
impl<'o, 's> ser::Serializer for Fields<'o, 's> {
    type Ok = ();
    type Error = Unsupported;
    type SerializeSeq = Impossible<(), Unsupported>;
    type SerializeTuple = Impossible<(), Unsupported>;
    type SerializeTupleStruct = Impossible<(), Unsupported>;
    type SerializeTupleVariant = Impossible<(), Unsupported>;
    type SerializeMap = Impossible<(), Unsupported>;
    type SerializeStruct = Self;
    type SerializeStructVariant = Impossible<(), Unsupported>;

    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Self> {
        Ok(self)
    }

    refuse! {
        serialize_bool(bool) serialize_i8(i8) serialize_i16(i16) serialize_i32(i32)
        serialize_i64(i64) serialize_u8(u8) serialize_u16(u16) serialize_u32(u32)
        serialize_u64(u64) serialize_f32(f32) serialize_f64(f64) serialize_char(char)
        serialize_str(&str) serialize_bytes(&[u8])
    }
    fn serialize_none(self) -> Result {
        Err(Unsupported)
    }
    fn serialize_unit(self) -> Result {
        Err(Unsupported)
    }
    fn serialize_unit_struct(self, _: &'static str) -> Result {
        Err(Unsupported)
    }
    fn serialize_unit_variant(self, _: &'static str, _: u32, _: &'static str) -> Result {
        Err(Unsupported)
    }
    fn serialize_some<T: Serialize + ?Sized>(self, _: &T) -> Result {
        Err(Unsupported)
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(self, _: &'static str, _: &T) -> Result {
        Err(Unsupported)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result {
        Err(Unsupported)
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq> {
        Err(Unsupported)
    }
    fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple> {
        Err(Unsupported)
    }
    fn serialize_tuple_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleStruct> {
        Err(Unsupported)
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant> {
        Err(Unsupported)
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap> {
        Err(Unsupported)
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant> {
        Err(Unsupported)
    }
}
