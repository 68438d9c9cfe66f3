//! A serde `Deserializer` over [`Node`], so typed definitions can `#[derive(Deserialize)]` and
//! still get errors with `file:line:col`, the key path and a "did you mean" hint.
//!
//! Types that need to know where a value came from ([`Located`], [`SourceText`],
//! [`crate::config_value::ConfigValue`]) ask for the newtype struct named [`META`]; this
//! deserializer answers with a small map describing the node instead of the node itself.

use std::fmt;
use std::marker::PhantomData;
use std::path::PathBuf;

use serde::Deserialize;
use serde::de::{self, DeserializeOwned, DeserializeSeed, IntoDeserializer, MapAccess, SeqAccess, Visitor};

use super::node::{Node, Value};
use super::resolve::join;
use crate::diagnostic::{Diagnostic, Location};

/// The newtype name that asks for a node's metadata.
pub const META: &str = "$lfeval::meta";
/// Like [`META`], for values that are needed right away: an unset `$VAR` is reported at the
/// place it was written instead of being described in the metadata.
const META_REQUIRED: &str = "$lfeval::meta-required";

#[derive(Debug)]
pub struct DeError {
    pub diagnostic: Diagnostic,
    located: bool,
}

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.diagnostic.fmt(f)
    }
}

impl std::error::Error for DeError {}

impl de::Error for DeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        DeError {
            diagnostic: Diagnostic::new(msg.to_string()),
            located: false,
        }
    }

    fn invalid_type(unexp: de::Unexpected<'_>, exp: &dyn de::Expected) -> Self {
        Self::custom(format_args!("expected {exp}, found {}", describe(&unexp)))
    }

    fn unknown_field(field: &str, expected: &'static [&'static str]) -> Self {
        let mut err = Self::custom(format_args!("unknown key `{field}`"));
        err.diagnostic.hint = Some(match crate::diagnostic::closest(field, expected.iter().copied()) {
            Some(candidate) => format!("did you mean `{candidate}`?"),
            None => format!(
                "expected one of {}",
                expected.iter().map(|e| format!("`{e}`")).collect::<Vec<_>>().join(", ")
            ),
        });
        err
    }

    fn unknown_variant(variant: &str, expected: &'static [&'static str]) -> Self {
        let mut err = Self::unknown_field(variant, expected);
        err.diagnostic.message = format!("unknown value `{variant}`");
        if err
            .diagnostic
            .hint
            .as_deref()
            .is_some_and(|h| h.starts_with("expected"))
        {
            err.diagnostic.hint = Some(format!(
                "expected one of {}",
                expected.iter().map(|e| format!("`{e}`")).collect::<Vec<_>>().join(", ")
            ));
        }
        err
    }

    fn missing_field(field: &'static str) -> Self {
        Self::custom(format_args!("missing required key `{field}`"))
    }

    fn duplicate_field(field: &'static str) -> Self {
        Self::custom(format_args!("duplicate key `{field}`"))
    }
}

fn describe(unexp: &de::Unexpected<'_>) -> String {
    match unexp {
        de::Unexpected::Str(s) => format!("the string \"{s}\""),
        de::Unexpected::Map => "a mapping".to_owned(),
        de::Unexpected::Seq => "a list".to_owned(),
        de::Unexpected::Unit => "null".to_owned(),
        other => other.to_string(),
    }
}

/// Deserializes `node` into `T`; `path` is the key path of `node` in its document.
pub fn from_node<T: DeserializeOwned>(node: &Node, path: &str) -> Result<T, Diagnostic> {
    T::deserialize(NodeDe {
        node,
        path: path.to_owned(),
    })
    .map_err(|e| e.diagnostic)
}

pub fn unset_error(node: &Node, path: &str) -> Diagnostic {
    let Value::Unset(unset) = &node.value else {
        return Diagnostic::new("internal error: not an unset variable");
    };
    let mut diag = Diagnostic::new(match &unset.message {
        Some(message) => format!("environment variable `{}` is not set: {message}", unset.var),
        None => format!("environment variable `{}` is not set", unset.var),
    })
    .at(&node.span)
    .with_path(path);
    diag.hint = Some("set it in the environment, in the project's `.env`, or in a file passed with `--env`".to_owned());
    diag
}

pub struct NodeDe<'a> {
    node: &'a Node,
    path: String,
}

impl NodeDe<'_> {
    fn locate(&self, mut err: DeError) -> DeError {
        if !err.located {
            let hint = err.diagnostic.hint.take();
            err.diagnostic = std::mem::replace(&mut err.diagnostic, Diagnostic::new(""))
                .at(&self.node.span)
                .with_path(self.path.clone());
            err.diagnostic.hint = hint;
            err.located = true;
        }
        err
    }

    fn unset(&self) -> DeError {
        DeError {
            diagnostic: unset_error(self.node, &self.path),
            located: true,
        }
    }
}

macro_rules! coerce_number {
    ($($method:ident => $ty:ty, $visit:ident;)*) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
            // Numbers written as strings (often from `$VAR`) are accepted, as pydantic does.
            if let Value::Str(s) = &self.node.value
                && let Ok(n) = s.trim().parse::<$ty>()
            {
                return visitor.$visit(n).map_err(|e| self.locate(e));
            }
            self.deserialize_any(visitor)
        }
    )*};
}

impl<'de> de::Deserializer<'de> for NodeDe<'_> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let result = match &self.node.value {
            Value::Null => visitor.visit_unit(),
            Value::Bool(b) => visitor.visit_bool(*b),
            Value::Int(i) => visitor.visit_i64(*i),
            Value::Float(f) => visitor.visit_f64(*f),
            Value::Str(s) => visitor.visit_str(s),
            Value::Seq(items) => visitor.visit_seq(SeqDe {
                items: items.iter(),
                path: &self.path,
                index: 0,
            }),
            Value::Map(entries) => visitor.visit_map(MapDe {
                entries: entries.iter(),
                path: &self.path,
                pending: None,
            }),
            Value::Unset(_) => return Err(self.unset()),
        };
        result.map_err(|e| self.locate(e))
    }

    coerce_number! {
        deserialize_u8 => u8, visit_u8;
        deserialize_u16 => u16, visit_u16;
        deserialize_u32 => u32, visit_u32;
        deserialize_u64 => u64, visit_u64;
        deserialize_i8 => i8, visit_i8;
        deserialize_i16 => i16, visit_i16;
        deserialize_i32 => i32, visit_i32;
        deserialize_i64 => i64, visit_i64;
        deserialize_f32 => f32, visit_f32;
        deserialize_f64 => f64, visit_f64;
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        if let Value::Str(s) = &self.node.value {
            match s.trim().to_ascii_lowercase().as_str() {
                "true" => return visitor.visit_bool(true).map_err(|e| self.locate(e)),
                "false" => return visitor.visit_bool(false).map_err(|e| self.locate(e)),
                _ => {}
            }
        }
        self.deserialize_any(visitor)
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let result = match &self.node.value {
            Value::Int(i) => visitor.visit_string(i.to_string()),
            Value::Float(f) => visitor.visit_string(f.to_string()),
            Value::Bool(b) => visitor.visit_string(b.to_string()),
            _ => return self.deserialize_any(visitor),
        };
        result.map_err(|e| self.locate(e))
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match &self.node.value {
            Value::Null => visitor.visit_none().map_err(|e| self.locate(e)),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(self, name: &'static str, visitor: V) -> Result<V::Value, DeError> {
        if name == META || name == META_REQUIRED {
            if name == META_REQUIRED && node_is_unset(self.node) {
                return Err(self.unset());
            }
            let meta = MetaDe::new(self.node, &self.path);
            return visitor.visit_map(meta).map_err(|e| self.locate(e));
        }
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        let result = match &self.node.value {
            Value::Str(s) => visitor.visit_enum(s.as_str().into_deserializer()),
            Value::Map(entries) if entries.len() == 1 => {
                let (key, value) = &entries[0];
                visitor.visit_enum(EnumDe {
                    variant: &key.name,
                    value,
                    path: join(&self.path, &key.name),
                })
            }
            Value::Unset(_) => return Err(self.unset()),
            _ => Err(de::Error::custom(format_args!(
                "expected a string, found {}",
                self.node.kind()
            ))),
        };
        result.map_err(|e| self.locate(e))
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_unit()
    }

    serde::forward_to_deserialize_any! {
        i128 u128 char bytes byte_buf unit unit_struct seq tuple tuple_struct map struct identifier
    }
}

struct SeqDe<'a, 'p> {
    items: std::slice::Iter<'a, Node>,
    path: &'p str,
    index: usize,
}

impl<'de> SeqAccess<'de> for SeqDe<'_, '_> {
    type Error = DeError;

    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>, DeError> {
        let Some(node) = self.items.next() else { return Ok(None) };
        let path = format!("{}[{}]", self.path, self.index);
        self.index += 1;
        seed.deserialize(NodeDe { node, path }).map(Some)
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.items.len())
    }
}

struct MapDe<'a, 'p> {
    entries: std::slice::Iter<'a, (super::node::Key, Node)>,
    path: &'p str,
    pending: Option<(&'a Node, String)>,
}

impl<'de> MapAccess<'de> for MapDe<'_, '_> {
    type Error = DeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, DeError> {
        let Some((key, value)) = self.entries.next() else {
            return Ok(None);
        };
        let path = join(self.path, &key.name);
        let de: de::value::StrDeserializer<'_, DeError> = key.name.as_str().into_deserializer();
        let result = seed.deserialize(de).map_err(|mut e| {
            if !e.located {
                let hint = e.diagnostic.hint.take();
                e.diagnostic = std::mem::replace(&mut e.diagnostic, Diagnostic::new(""))
                    .at(&key.span)
                    .with_path(path.clone());
                e.diagnostic.hint = hint;
                e.located = true;
            }
            e
        })?;
        self.pending = Some((value, path));
        Ok(Some(result))
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        let Some((node, path)) = self.pending.take() else {
            return Err(de::Error::custom("value requested before key"));
        };
        seed.deserialize(NodeDe { node, path })
    }
}

struct EnumDe<'a> {
    variant: &'a str,
    value: &'a Node,
    path: String,
}

impl<'de, 'a> de::EnumAccess<'de> for EnumDe<'a> {
    type Error = DeError;
    type Variant = NodeDe<'a>;

    fn variant_seed<V: DeserializeSeed<'de>>(self, seed: V) -> Result<(V::Value, NodeDe<'a>), DeError> {
        let de: de::value::StrDeserializer<'_, DeError> = self.variant.into_deserializer();
        let variant = seed.deserialize(de)?;
        Ok((
            variant,
            NodeDe {
                node: self.value,
                path: self.path,
            },
        ))
    }
}

impl<'de> de::VariantAccess<'de> for NodeDe<'_> {
    type Error = DeError;

    fn unit_variant(self) -> Result<(), DeError> {
        Ok(())
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, DeError> {
        seed.deserialize(self)
    }

    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, visitor: V) -> Result<V::Value, DeError> {
        de::Deserializer::deserialize_any(self, visitor)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        de::Deserializer::deserialize_any(self, visitor)
    }
}

enum MetaValue<'a> {
    Node(&'a Node, String),
    Str(String),
    Num(u64),
    Missing,
}

/// The description of a node handed to [`META`] newtypes.
struct MetaDe<'a> {
    fields: std::vec::IntoIter<(&'static str, MetaValue<'a>)>,
    pending: Option<MetaValue<'a>>,
}

impl<'a> MetaDe<'a> {
    fn new(node: &'a Node, path: &str) -> Self {
        let (text_file, line_offset, col_offset) = node.text_origin();
        let location = Location::from(&node.span);
        let opt = |v: Option<String>| v.map_or(MetaValue::Missing, MetaValue::Str);
        let (unset_var, unset_message) = match &node.value {
            Value::Unset(u) => (Some(u.var.clone()), u.message.clone()),
            _ => (None, None),
        };
        let value = if unset_var.is_some() {
            MetaValue::Missing
        } else {
            MetaValue::Node(node, path.to_owned())
        };
        let fields = vec![
            ("value", value),
            ("path", MetaValue::Str(path.to_owned())),
            ("file", MetaValue::Str(location.file)),
            ("line", MetaValue::Num(location.line as u64)),
            ("col", MetaValue::Num(location.col as u64)),
            ("width", MetaValue::Num(location.width as u64)),
            ("source_line", opt(location.source_line)),
            ("text_file", MetaValue::Str(text_file.display.clone())),
            ("text_path", MetaValue::Str(text_file.path.display().to_string())),
            ("text_line_offset", MetaValue::Num(line_offset as u64)),
            ("text_col_offset", MetaValue::Num(col_offset as u64)),
            ("env_var", opt(node.env_var.clone())),
            ("unset_var", opt(unset_var)),
            ("unset_message", opt(unset_message)),
            (
                "unset_error",
                if node_is_unset(node) {
                    MetaValue::Str(unset_error(node, path).to_string())
                } else {
                    MetaValue::Missing
                },
            ),
        ];
        MetaDe {
            fields: fields.into_iter(),
            pending: None,
        }
    }
}

fn node_is_unset(node: &Node) -> bool {
    matches!(node.value, Value::Unset(_))
}

impl<'de> MapAccess<'de> for MetaDe<'_> {
    type Error = DeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, DeError> {
        loop {
            let Some((name, value)) = self.fields.next() else {
                return Ok(None);
            };
            if matches!(value, MetaValue::Missing) {
                continue;
            }
            self.pending = Some(value);
            let de: de::value::StrDeserializer<'_, DeError> = name.into_deserializer();
            return seed.deserialize(de).map(Some);
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        match self.pending.take() {
            Some(MetaValue::Node(node, path)) => seed.deserialize(NodeDe { node, path }),
            Some(MetaValue::Str(s)) => seed.deserialize(MetaStr(s)),
            Some(MetaValue::Num(n)) => seed.deserialize(n.into_deserializer()),
            _ => Err(de::Error::custom("value requested before key")),
        }
    }
}

/// A string in a meta map; unlike serde's own string deserializer it also fills `Option`s.
struct MetaStr(String);

impl<'de> de::Deserializer<'de> for MetaStr {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_string(self.0)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_some(self)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf unit
        unit_struct newtype_struct seq tuple tuple_struct map struct enum identifier ignored_any
    }
}

/// The raw description of a node, as produced by [`MetaDe`].
#[derive(Debug, Clone, Deserialize)]
pub struct MetaWire<T> {
    pub value: Option<T>,
    pub path: String,
    pub file: String,
    pub line: usize,
    pub col: usize,
    pub width: usize,
    pub source_line: Option<String>,
    pub text_file: String,
    pub text_path: PathBuf,
    pub text_line_offset: usize,
    pub text_col_offset: usize,
    pub env_var: Option<String>,
    pub unset_var: Option<String>,
    pub unset_message: Option<String>,
    pub unset_error: Option<String>,
}

impl<T> MetaWire<T> {
    pub fn location(&self) -> Location {
        Location {
            file: self.file.clone(),
            line: self.line,
            col: self.col,
            width: self.width,
            source_line: self.source_line.clone(),
        }
    }
}

/// Deserializes a [`MetaWire`] through the [`META`] newtype; `fallback` builds one for
/// deserializers other than ours (which have no positions).
pub fn deserialize_meta<'de, D, T>(deserializer: D) -> Result<MetaWire<T>, D::Error>
where
    D: de::Deserializer<'de>,
    T: Deserialize<'de>,
{
    deserialize_meta_as(deserializer, META)
}

fn deserialize_meta_as<'de, D, T>(deserializer: D, name: &'static str) -> Result<MetaWire<T>, D::Error>
where
    D: de::Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct MetaVisitor<T>(PhantomData<T>);

    impl<'de, T: Deserialize<'de>> Visitor<'de> for MetaVisitor<T> {
        type Value = MetaWire<T>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a value")
        }

        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
            MetaWire::deserialize(de::value::MapAccessDeserializer::new(map))
        }

        fn visit_newtype_struct<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            Ok(MetaWire {
                value: Some(T::deserialize(d)?),
                path: String::new(),
                file: String::new(),
                line: 0,
                col: 0,
                width: 0,
                source_line: None,
                text_file: String::new(),
                text_path: PathBuf::new(),
                text_line_offset: 0,
                text_col_offset: 0,
                env_var: None,
                unset_var: None,
                unset_message: None,
                unset_error: None,
            })
        }
    }

    deserializer.deserialize_newtype_struct(name, MetaVisitor(PhantomData))
}

/// A value with the place it was written.
#[derive(Debug, Clone)]
pub struct Located<T> {
    pub value: T,
    pub location: Location,
    pub path: String,
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Located<T> {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let meta = deserialize_meta_as::<D, T>(deserializer, META_REQUIRED)?;
        let location = meta.location();
        let value = match meta.value {
            Some(v) => v,
            None => {
                return Err(de::Error::custom(
                    meta.unset_error.unwrap_or_else(|| "missing value".to_owned()),
                ));
            }
        };
        Ok(Located {
            value,
            location,
            path: meta.path,
        })
    }
}

// Editors see what is written, so a located value has its value's schema.
impl<T: schemars::JsonSchema> schemars::JsonSchema for Located<T> {
    fn inline_schema() -> bool {
        T::inline_schema()
    }
    fn schema_name() -> std::borrow::Cow<'static, str> {
        T::schema_name()
    }
    fn schema_id() -> std::borrow::Cow<'static, str> {
        T::schema_id()
    }
    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        T::json_schema(generator)
    }
}

impl<T> std::ops::Deref for Located<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

/// Text that is code (a template, a Python snippet): where its first line sits in which file.
#[derive(Debug, Clone)]
pub struct SourceText {
    pub text: String,
    /// File shown to users (the included file, or the YAML file for inline text).
    pub file: String,
    /// Absolute path of that file.
    pub path: PathBuf,
    pub line_offset: usize,
    pub col_offset: usize,
    pub location: Location,
}

impl schemars::JsonSchema for SourceText {
    fn inline_schema() -> bool {
        true
    }
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "SourceText".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "description": "Code, inline or `!include \"./file\"`."
        })
    }
}

impl<'de> Deserialize<'de> for SourceText {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let meta = deserialize_meta_as::<D, String>(deserializer, META_REQUIRED)?;
        let location = meta.location();
        let text = match meta.value {
            Some(v) => v,
            None => {
                return Err(de::Error::custom(
                    meta.unset_error.unwrap_or_else(|| "missing value".to_owned()),
                ));
            }
        };
        Ok(SourceText {
            text,
            file: meta.text_file,
            path: meta.text_path,
            line_offset: meta.text_line_offset,
            col_offset: meta.text_col_offset,
            location,
        })
    }
}
