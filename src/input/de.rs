//! Deserializing from a located tree while collecting every problem. Serde stops at the
//! first error; a user fixing a file wants them all. So this deserializer records each
//! problem (with line, column and field path) in a shared list and carries on:
//! - unknown keys are checked against the struct's field list before it is visited, so all
//!   of them are reported and skipped;
//! - a scalar of the wrong type is recorded and the visitor gets a placeholder (zero, empty,
//!   false), so the rest of the struct is still checked; the result is thrown away once
//!   anything was recorded, so a placeholder can never reach a simulation;
//! - anything else (a mapping where a list was expected, a custom check) aborts the nearest
//!   enclosing [`Recover`] (a list item, typically), and its siblings are still checked.

use super::tree::{Loc, Node, Value};
use serde::de::{
    self, DeserializeOwned, DeserializeSeed, EnumAccess, IntoDeserializer, MapAccess, SeqAccess,
    VariantAccess, Visitor,
};
use serde::{Deserialize, forward_to_deserialize_any};
use std::cell::RefCell;
use std::fmt;

/// One problem in an input file.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Problem {
    pub loc: Loc,
    /// Field path from the document root, such as `links[3].bandwidth_gb_s`; empty for
    /// the root itself.
    pub path: String,
    pub message: String,
}

impl Problem {
    pub fn new(loc: Loc, path: impl Into<String>, message: impl Into<String>) -> Self {
        Problem {
            loc,
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}: {}", self.loc, self.message)
        } else {
            write!(f, "{}: {}: {}", self.loc, self.path, self.message)
        }
    }
}

/// Deserializes `T` from `node`, returning every problem found, sorted by position.
pub fn from_node<T: DeserializeOwned>(node: &Node) -> Result<T, Vec<Problem>> {
    let sink = Sink::default();
    let de = NodeDe {
        node,
        sink: &sink,
        path: String::new(),
    };
    let result = T::deserialize(de.clone()).map_err(|e| de.settle(e));
    let mut problems = sink.problems.into_inner();
    problems.sort();
    problems.dedup();
    match result {
        Ok(value) if problems.is_empty() => Ok(value),
        _ if problems.is_empty() => Err(vec![Problem::new(
            node.loc,
            "",
            "invalid document (no further detail)",
        )]),
        _ => Err(problems),
    }
}

/// A value with the position of the YAML node it came from, for checks made after parsing
/// ("bandwidth must be > 0", "no such node") that must still point at the right line.
#[derive(Debug, Clone, PartialEq)]
pub struct At<T> {
    pub loc: Loc,
    pub value: T,
}

/// A value whose problems, once recorded, do not abort the enclosing struct or list: it
/// deserializes to `None` instead, so sibling items are still checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Recover<T>(pub Option<T>);

const AT_MARKER: &str = "$epsim::At";
const RECOVER_MARKER: &str = "$epsim::Recover";
/// The message of the error that says "already recorded in the problem list".
const RECORDED: &str = "$epsim: problem recorded";

#[derive(Default)]
struct Sink {
    problems: RefCell<Vec<Problem>>,
    /// (mapping position, field) for each "did you mean `field`?" given: that field's
    /// "missing field" report would only repeat the suggestion.
    suggested: RefCell<Vec<(Loc, &'static str)>>,
}

/// The error travelling through serde. Almost always `Recorded`: the detail is in the sink.
#[derive(Debug)]
pub struct DeError {
    kind: DeErrorKind,
}

#[derive(Debug)]
enum DeErrorKind {
    Recorded,
    MissingField(&'static str),
    Message(String),
}

impl DeError {
    fn recorded() -> Self {
        DeError {
            kind: DeErrorKind::Recorded,
        }
    }
}

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            DeErrorKind::Recorded => f.write_str(RECORDED),
            DeErrorKind::MissingField(field) => write!(f, "missing field `{field}`"),
            DeErrorKind::Message(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for DeError {}

impl de::Error for DeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        let text = msg.to_string();
        let kind = if text == RECORDED {
            DeErrorKind::Recorded
        } else {
            DeErrorKind::Message(text)
        };
        DeError { kind }
    }

    fn missing_field(field: &'static str) -> Self {
        DeError {
            kind: DeErrorKind::MissingField(field),
        }
    }
}

#[derive(Clone)]
struct NodeDe<'a> {
    node: &'a Node,
    sink: &'a Sink,
    path: String,
}

impl<'a> NodeDe<'a> {
    fn child(&self, node: &'a Node, segment: &str) -> NodeDe<'a> {
        let path = if self.path.is_empty() {
            segment.to_owned()
        } else {
            format!("{}.{segment}", self.path)
        };
        NodeDe {
            node,
            sink: self.sink,
            path,
        }
    }

    fn item(&self, node: &'a Node, index: usize) -> NodeDe<'a> {
        NodeDe {
            node,
            sink: self.sink,
            path: format!("{}[{index}]", self.path),
        }
    }

    fn record_at(&self, loc: Loc, message: String) {
        self.sink
            .problems
            .borrow_mut()
            .push(Problem::new(loc, self.path.clone(), message));
    }

    fn record(&self, message: String) {
        self.record_at(self.node.loc, message);
    }

    /// Records an error that is not yet in the sink, at this node; returns the marker.
    fn settle(&self, e: DeError) -> DeError {
        match e.kind {
            DeErrorKind::Recorded => {}
            DeErrorKind::MissingField(field) => {
                let explained = self
                    .sink
                    .suggested
                    .borrow()
                    .contains(&(self.node.loc, field));
                if !explained {
                    self.record(format!("missing field `{field}`"));
                }
            }
            DeErrorKind::Message(m) => self.record(house_style(m)),
        }
        DeError::recorded()
    }

    fn mismatch(&self, expected: &str) {
        let found = match &self.node.value {
            Value::Str(s) => format!("the string \"{s}\""),
            Value::UInt(v) => format!("the integer {v}"),
            Value::Int(v) => format!("the integer {v}"),
            Value::Float(v) => format!("the number {v}"),
            Value::Bool(v) => format!("the boolean {v}"),
            other => other.kind().to_owned(),
        };
        self.record(format!("expected {expected}, found {found}"));
    }

    fn settled<T>(&self, result: Result<T, DeError>) -> Result<T, DeError> {
        result.map_err(|e| self.settle(e))
    }

    fn integer<V: Visitor<'a>>(
        self,
        v: V,
        lo: i128,
        hi: i128,
        ty: &str,
    ) -> Result<V::Value, DeError> {
        let value = match self.node.value {
            Value::UInt(u) => Some(i128::from(u)),
            Value::Int(i) => Some(i128::from(i)),
            _ => None,
        };
        match value {
            Some(x) if (lo..=hi).contains(&x) => {
                let r = if x < 0 {
                    v.visit_i64(x as i64)
                } else {
                    v.visit_u64(x as u64)
                };
                self.settled(r)
            }
            Some(x) => {
                self.record(format!("{x} is out of range for {ty} ({lo} to {hi})"));
                self.settled(v.visit_u64(0))
            }
            None => {
                self.mismatch(if lo < 0 {
                    "an integer"
                } else {
                    "a whole number >= 0"
                });
                self.settled(v.visit_u64(0))
            }
        }
    }
}

macro_rules! integer_methods {
    ($($method:ident => $ty:ty),* $(,)?) => {
        $(
            fn $method<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
                self.integer(v, i128::from(<$ty>::MIN), i128::from(<$ty>::MAX), stringify!($ty))
            }
        )*
    };
}

impl<'de> de::Deserializer<'de> for NodeDe<'de> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        let r = match &self.node.value {
            Value::Null => v.visit_unit(),
            Value::Bool(b) => v.visit_bool(*b),
            Value::Int(i) => v.visit_i64(*i),
            Value::UInt(u) => v.visit_u64(*u),
            Value::Float(f) => v.visit_f64(*f),
            Value::Str(s) => v.visit_str(s),
            Value::Seq(items) => v.visit_seq(SeqDe::new(self.clone(), items)),
            Value::Map(_) => v.visit_map(MapDe::new(self.clone(), None)),
        };
        self.settled(r)
    }

    integer_methods!(
        deserialize_u8 => u8, deserialize_u16 => u16, deserialize_u32 => u32,
        deserialize_u64 => u64, deserialize_i8 => i8, deserialize_i16 => i16,
        deserialize_i32 => i32, deserialize_i64 => i64,
    );

    fn deserialize_f64<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        let r = match self.node.value {
            Value::Float(f) => v.visit_f64(f),
            Value::UInt(u) => v.visit_f64(u as f64),
            Value::Int(i) => v.visit_f64(i as f64),
            _ => {
                self.mismatch("a number");
                v.visit_f64(0.0)
            }
        };
        self.settled(r)
    }

    fn deserialize_f32<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        self.deserialize_f64(v)
    }

    fn deserialize_bool<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        let r = match self.node.value {
            Value::Bool(b) => v.visit_bool(b),
            _ => {
                self.mismatch("true or false");
                v.visit_bool(false)
            }
        };
        self.settled(r)
    }

    fn deserialize_str<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        let r = match &self.node.value {
            Value::Str(s) => v.visit_str(s),
            _ => {
                self.mismatch("a string");
                v.visit_str("")
            }
        };
        self.settled(r)
    }

    fn deserialize_string<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        self.deserialize_str(v)
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        self.deserialize_str(v)
    }

    fn deserialize_char<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        self.deserialize_str(v)
    }

    fn deserialize_option<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        let r = match self.node.value {
            Value::Null => v.visit_none(),
            _ => v.visit_some(self.clone()),
        };
        self.settled(r)
    }

    fn deserialize_unit<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        let r = match self.node.value {
            Value::Null => v.visit_unit(),
            _ => {
                self.mismatch("null");
                v.visit_unit()
            }
        };
        self.settled(r)
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        v: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_unit(v)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        v: V,
    ) -> Result<V::Value, DeError> {
        let r = match name {
            AT_MARKER => v.visit_seq(AtSeq {
                de: self.clone(),
                step: 0,
            }),
            _ => v.visit_newtype_struct(self.clone()),
        };
        self.settled(r)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        let r = match &self.node.value {
            Value::Seq(items) => v.visit_seq(SeqDe::new(self.clone(), items)),
            _ => {
                self.mismatch("a list");
                return Err(DeError::recorded());
            }
        };
        self.settled(r)
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, _: usize, v: V) -> Result<V::Value, DeError> {
        self.deserialize_seq(v)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: usize,
        v: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_seq(v)
    }

    fn deserialize_map<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        let r = match &self.node.value {
            Value::Map(_) => v.visit_map(MapDe::new(self.clone(), None)),
            _ => {
                self.mismatch("a mapping");
                return Err(DeError::recorded());
            }
        };
        self.settled(r)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, DeError> {
        let r = match &self.node.value {
            Value::Map(_) => v.visit_map(MapDe::new(self.clone(), Some(fields))),
            Value::Null if fields.is_empty() => v.visit_map(MapDe::empty(self.clone())),
            _ => {
                self.mismatch(&format!("a mapping with fields {}", quote_list(fields)));
                return Err(DeError::recorded());
            }
        };
        self.settled(r)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _: &'static str,
        variants: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, DeError> {
        let (tag, tag_loc, content) = match &self.node.value {
            Value::Str(s) => (s.as_str(), self.node.loc, None),
            Value::Map(entries) if entries.len() == 1 => {
                let (key, value) = &entries[0];
                (key.name.as_str(), key.loc, Some(value))
            }
            _ => {
                self.mismatch(&format!("one of {}", quote_list(variants)));
                return Err(DeError::recorded());
            }
        };
        if !variants.contains(&tag) {
            self.record_at(tag_loc, unknown_name_message("value", tag, variants));
            // A bare name stands in for the first variant, so the fields beside it are
            // still checked (the document is refused either way).
            let Some(&first) = variants.first().filter(|_| content.is_none()) else {
                return Err(DeError::recorded());
            };
            return v.visit_enum(EnumDe {
                de: self.clone(),
                tag: first,
                content: None,
                placeholder: true,
            });
        }
        let r = v.visit_enum(EnumDe {
            de: self.clone(),
            tag,
            content,
            placeholder: false,
        });
        self.settled(r)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        v.visit_unit()
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        self.deserialize_any(v)
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        self.deserialize_any(v)
    }
}

struct SeqDe<'a> {
    parent: NodeDe<'a>,
    items: &'a [Node],
    next: usize,
}

impl<'a> SeqDe<'a> {
    fn new(parent: NodeDe<'a>, items: &'a [Node]) -> Self {
        SeqDe {
            parent,
            items,
            next: 0,
        }
    }
}

impl<'de> SeqAccess<'de> for SeqDe<'de> {
    type Error = DeError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, DeError> {
        let Some(item) = self.items.get(self.next) else {
            return Ok(None);
        };
        let de = self.parent.item(item, self.next);
        self.next += 1;
        seed.deserialize(de.clone())
            .map(Some)
            .map_err(|e| de.settle(e))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.items.len() - self.next)
    }
}

struct MapDe<'a> {
    parent: NodeDe<'a>,
    entries: Vec<(&'a str, &'a Node)>,
    next: usize,
}

impl<'a> MapDe<'a> {
    /// For a struct (`fields` given), unknown keys are recorded here and skipped.
    fn new(parent: NodeDe<'a>, fields: Option<&'static [&'static str]>) -> Self {
        let Value::Map(all) = &parent.node.value else {
            return Self::empty(parent);
        };
        let mut entries = Vec::with_capacity(all.len());
        for (key, value) in all {
            match fields {
                Some(known) if !known.contains(&key.name.as_str()) => {
                    if let Some(field) = closest(&key.name, known) {
                        parent
                            .sink
                            .suggested
                            .borrow_mut()
                            .push((parent.node.loc, field));
                    }
                    parent
                        .child(value, &key.name)
                        .record_at(key.loc, unknown_name_message("field", &key.name, known));
                }
                _ => entries.push((key.name.as_str(), value)),
            }
        }
        MapDe {
            parent,
            entries,
            next: 0,
        }
    }

    fn empty(parent: NodeDe<'a>) -> Self {
        MapDe {
            parent,
            entries: Vec::new(),
            next: 0,
        }
    }
}

impl<'de> MapAccess<'de> for MapDe<'de> {
    type Error = DeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DeError> {
        let Some(&(name, _)) = self.entries.get(self.next) else {
            return Ok(None);
        };
        let key: de::value::StrDeserializer<'_, DeError> = name.into_deserializer();
        seed.deserialize(key)
            .map(Some)
            .map_err(|e| self.parent.settle(e))
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        let (name, node) = self.entries[self.next];
        self.next += 1;
        let de = self.parent.child(node, name);
        seed.deserialize(de.clone()).map_err(|e| de.settle(e))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.entries.len() - self.next)
    }
}

struct EnumDe<'a> {
    de: NodeDe<'a>,
    tag: &'a str,
    content: Option<&'a Node>,
    /// Standing in for an unknown name already recorded: a unit variant is accepted, any
    /// other fails without a further problem.
    placeholder: bool,
}

impl<'de> EnumAccess<'de> for EnumDe<'de> {
    type Error = DeError;
    type Variant = Self;

    fn variant_seed<S: DeserializeSeed<'de>>(self, seed: S) -> Result<(S::Value, Self), DeError> {
        let key: de::value::StrDeserializer<'_, DeError> = self.tag.into_deserializer();
        let variant = seed.deserialize(key).map_err(|e| self.de.settle(e))?;
        Ok((variant, self))
    }
}

impl<'de> EnumDe<'de> {
    fn content_de(&self, expected: &str) -> Result<NodeDe<'de>, DeError> {
        if self.placeholder {
            return Err(DeError::recorded());
        }
        match self.content {
            Some(node) => Ok(self.de.child(node, self.tag)),
            None => {
                self.de.record(format!("`{}` needs {expected}", self.tag));
                Err(DeError::recorded())
            }
        }
    }
}

impl<'de> VariantAccess<'de> for EnumDe<'de> {
    type Error = DeError;

    fn unit_variant(self) -> Result<(), DeError> {
        match self.content {
            None => Ok(()),
            Some(node) => {
                self.de
                    .child(node, self.tag)
                    .record(format!("`{}` takes no value", self.tag));
                Err(DeError::recorded())
            }
        }
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, DeError> {
        let de = self.content_de("a value")?;
        seed.deserialize(de.clone()).map_err(|e| de.settle(e))
    }

    fn tuple_variant<V: Visitor<'de>>(self, _: usize, v: V) -> Result<V::Value, DeError> {
        de::Deserializer::deserialize_seq(self.content_de("a list")?, v)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, DeError> {
        de::Deserializer::deserialize_struct(self.content_de("a mapping")?, "", fields, v)
    }
}

/// The sequence an [`At`] is read from: line, column, then the value itself.
struct AtSeq<'a> {
    de: NodeDe<'a>,
    step: u8,
}

impl<'de> SeqAccess<'de> for AtSeq<'de> {
    type Error = DeError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, DeError> {
        self.step += 1;
        match self.step {
            1 => seed.deserialize(U32(self.de.node.loc.line)).map(Some),
            2 => seed.deserialize(U32(self.de.node.loc.column)).map(Some),
            3 => seed.deserialize(self.de.clone()).map(Some),
            _ => Ok(None),
        }
    }
}

/// A bare number handed to [`At`]'s visitor.
struct U32(u32);

impl<'de> de::Deserializer<'de> for U32 {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        v.visit_u32(self.0)
    }

    forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map struct enum identifier ignored_any
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for At<T> {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct AtVisitor<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for AtVisitor<T> {
            type Value = At<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a located value (read through epsim's input module)")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<At<T>, A::Error> {
                let missing = || de::Error::custom("a located value needs line, column and value");
                let line: u32 = seq.next_element()?.ok_or_else(missing)?;
                let column: u32 = seq.next_element()?.ok_or_else(missing)?;
                let value: T = seq.next_element()?.ok_or_else(missing)?;
                Ok(At {
                    loc: Loc { line, column },
                    value,
                })
            }
        }
        deserializer.deserialize_newtype_struct(AT_MARKER, AtVisitor(std::marker::PhantomData))
    }
}

/// A value standing in for one whose problems were recorded (see [`recovering`]).
pub trait Placeholder {
    fn placeholder() -> Self;
}

impl<T: Placeholder> Placeholder for At<T> {
    fn placeholder() -> Self {
        At {
            loc: Loc { line: 0, column: 0 },
            value: T::placeholder(),
        }
    }
}

impl<T> Placeholder for Option<T> {
    fn placeholder() -> Self {
        None
    }
}

impl<T> Placeholder for Vec<T> {
    fn placeholder() -> Self {
        Vec::new()
    }
}

/// Implements [`Placeholder`] as `Default::default()`.
#[macro_export]
macro_rules! placeholder_is_default {
    ($($ty:ty),* $(,)?) => {
        $(impl $crate::input::Placeholder for $ty {
            fn placeholder() -> Self {
                <$ty as Default>::default()
            }
        })*
    };
}

/// `#[serde(deserialize_with = "input::recovering")]` for a section of a file: when the
/// section has problems (recorded), it reads as a placeholder instead of aborting the
/// struct around it, so the sections after it are still checked and every problem in the
/// file is reported at once. Any recorded problem refuses the whole document, so a
/// placeholder never reaches a simulation.
pub fn recovering<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: de::Deserializer<'de>,
    T: Deserialize<'de> + Placeholder,
{
    let Recover(value) = Recover::<T>::deserialize(deserializer)?;
    Ok(value.unwrap_or_else(T::placeholder))
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Recover<T> {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct RecoverVisitor<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for RecoverVisitor<T> {
            type Value = Recover<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a value")
            }
            fn visit_newtype_struct<D: de::Deserializer<'de>>(
                self,
                d: D,
            ) -> Result<Recover<T>, D::Error> {
                match T::deserialize(d) {
                    Ok(value) => Ok(Recover(Some(value))),
                    // Only errors already in the problem list are absorbed; any other
                    // deserializer's errors pass through untouched.
                    Err(e) if e.to_string() == RECORDED => Ok(Recover(None)),
                    Err(e) => Err(e),
                }
            }
        }
        deserializer
            .deserialize_newtype_struct(RECOVER_MARKER, RecoverVisitor(std::marker::PhantomData))
    }
}

fn quote_list(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The known name a typo most likely meant: within 2 edits, or a quarter of its length.
fn closest<'k>(name: &str, known: &[&'k str]) -> Option<&'k str> {
    known
        .iter()
        .map(|k| (edit_distance(name, k), *k))
        .filter(|&(d, k)| d <= 2.max(k.len() / 4))
        .min()
        .map(|(_, k)| k)
}

/// "unknown field `bandwith_gb_s` (did you mean `bandwidth_gb_s`?); expected one of ...".
fn unknown_name_message(what: &str, name: &str, known: &[&str]) -> String {
    let suggestion = closest(name, known)
        .map(|k| format!(" (did you mean `{k}`?)"))
        .unwrap_or_default();
    format!(
        "unknown {what} `{name}`{suggestion}; expected one of {}",
        quote_list(known)
    )
}

/// Serde's "unknown variant `x`, expected one of `a`, `b`" (from tagged enums, whose names
/// this deserializer never sees) in the words and with the suggestion of the others.
fn house_style(message: String) -> String {
    if let Some(rest) = message.strip_prefix("invalid type: ") {
        return invalid_type(rest).unwrap_or(message);
    }
    let Some(rest) = message.strip_prefix("unknown variant `") else {
        return message;
    };
    let parts: Vec<&str> = rest.split('`').collect();
    let known: Vec<&str> = parts.iter().skip(2).step_by(2).copied().collect();
    if known.is_empty() {
        return message;
    }
    unknown_name_message("value", parts[0], &known)
}

/// Serde's "floating point `1e9`, expected u64" (from inside tagged enums) as the other
/// type mismatches say it.
fn invalid_type(rest: &str) -> Option<String> {
    let (found, expected) = rest.split_once(", expected ")?;
    let expected = match expected {
        "u8" | "u16" | "u32" | "u64" | "usize" => "a whole number >= 0",
        "i8" | "i16" | "i32" | "i64" => "an integer",
        "f32" | "f64" => "a number",
        "a string" => "a string",
        "a boolean" => "true or false",
        _ => return None,
    };
    let found = match found.split_once(" `") {
        Some(("floating point" | "integer", v)) => {
            format!("the number {}", v.trim_end_matches('`'))
        }
        Some(("boolean", v)) => format!("the boolean {}", v.trim_end_matches('`')),
        _ => match found.strip_prefix("string ") {
            Some(quoted) => format!("the string {quoted}"),
            None => found.to_owned(),
        },
    };
    Some(format!("expected {expected}, found {found}"))
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diag = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let next = (diag + usize::from(ca != cb))
                .min(row[j] + 1)
                .min(row[j + 1] + 1);
            diag = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Link {
        a: String,
        b: String,
        bandwidth_gb_s: At<f64>,
        #[serde(default)]
        lanes: Option<u32>,
        #[serde(default)]
        sharing: Option<Sharing>,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(rename_all = "snake_case")]
    enum Sharing {
        Shared,
        Fatpipe,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Doc {
        name: String,
        links: Vec<Recover<Link>>,
    }

    fn problems_of<T: DeserializeOwned + fmt::Debug>(yaml: &str) -> Vec<String> {
        let node = crate::input::tree::parse_node(yaml).expect("valid YAML");
        from_node::<T>(&node)
            .expect_err("should fail")
            .iter()
            .map(|p| p.to_string())
            .collect()
    }

    #[test]
    fn a_valid_document_with_locations() {
        let yaml = "name: x\nlinks:\n  - {a: g0, b: s0, bandwidth_gb_s: 50}\n  - a: g1\n    b: s0\n    bandwidth_gb_s: 25.5\n    sharing: fatpipe\n";
        let node = crate::input::tree::parse_node(yaml).unwrap();
        let doc: Doc = from_node(&node).unwrap();
        let second = doc.links[1].0.as_ref().unwrap();
        assert_eq!(second.bandwidth_gb_s.value, 25.5);
        assert_eq!(
            second.bandwidth_gb_s.loc,
            Loc {
                line: 6,
                column: 21
            }
        );
        assert_eq!(second.sharing, Some(Sharing::Fatpipe));
        assert_eq!(doc.links[0].0.as_ref().unwrap().bandwidth_gb_s.value, 50.0);
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let yaml = "\
name: x
colour: red
links:
  - {a: g0, b: s0, bandwith_gb_s: 50}
  - {a: g1, b: s0, bandwidth_gb_s: fast, lanes: -1}
  - {a: g2, b: s0, bandwidth_gb_s: 5, sharing: bus}
  - [not, a, mapping]
  - {a: g3, b: s0, bandwidth_gb_s: 5, lanes: 2}
";
        let got = problems_of::<Doc>(yaml);
        assert_eq!(
            got,
            vec![
                "2:1: colour: unknown field `colour`; expected one of `name`, `links`",
                "4:20: links[0].bandwith_gb_s: unknown field `bandwith_gb_s` (did you mean `bandwidth_gb_s`?); expected one of `a`, `b`, `bandwidth_gb_s`, `lanes`, `sharing`",
                "5:36: links[1].bandwidth_gb_s: expected a number, found the string \"fast\"",
                "5:49: links[1].lanes: -1 is out of range for u32 (0 to 4294967295)",
                "6:48: links[2].sharing: unknown value `bus`; expected one of `shared`, `fatpipe`",
                "7:5: links[3]: expected a mapping with fields `a`, `b`, `bandwidth_gb_s`, `lanes`, `sharing`, found a list",
            ]
        );
    }

    #[test]
    fn wrong_types_at_the_top_level_are_reported_with_the_rest() {
        let got = problems_of::<Doc>("name: 72\nlinks: {a: b}\n");
        assert_eq!(
            got,
            vec![
                "1:7: name: expected a string, found the integer 72",
                "2:8: links: expected a list, found a mapping",
            ]
        );
    }

    #[test]
    fn missing_fields_are_reported_unless_a_suggestion_explains_them() {
        let got = problems_of::<Doc>(
            "name: x\nlinks:\n  - {a: g0, b: s0}\n  - {a: g0, b: s0, bandwidht_gb_s: 1}\n",
        );
        assert_eq!(
            got,
            vec![
                "3:5: links[0]: missing field `bandwidth_gb_s`",
                "4:20: links[1].bandwidht_gb_s: unknown field `bandwidht_gb_s` (did you mean `bandwidth_gb_s`?); expected one of `a`, `b`, `bandwidth_gb_s`, `lanes`, `sharing`",
            ]
        );
    }

    #[test]
    fn integers_are_range_checked() {
        #[derive(Debug, Deserialize)]
        #[allow(dead_code)]
        struct Small {
            x: u8,
            y: i64,
        }
        let got = problems_of::<Small>("x: 300\ny: 1.5\n");
        assert_eq!(
            got,
            vec![
                "1:4: x: 300 is out of range for u8 (0 to 255)",
                "2:4: y: expected an integer, found the number 1.5",
            ]
        );
    }

    #[test]
    fn recover_only_absorbs_recorded_problems() {
        let ok: Recover<u32> = serde_saphyr::from_str("5").unwrap();
        assert_eq!(ok, Recover(Some(5)));
        assert!(serde_saphyr::from_str::<Recover<u32>>("five").is_err());
    }

    #[test]
    fn suggestions_only_for_near_misses() {
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "ab"), 2);
        let msg = unknown_name_message("field", "zzz", &["bandwidth_gb_s"]);
        assert!(!msg.contains("did you mean"), "{msg}");
    }
}
