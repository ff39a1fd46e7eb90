//! Reading a YAML tree into a section's struct while keeping track of where reading is, so that a
//! failure names the key it happened at (`server.max_body_bytes`, `providers[1].groups.nested`) and the
//! keys the struct does not know are listed with their place.
//!
//! serde's messages say what went wrong but not where; this wraps the deserializer of a
//! [`serde_norway::Value`] so that every map key and list index it goes through is remembered, and the
//! deepest place an error came out of is recorded. [`super::load`] uses it to report one bad value, take it
//! out of the tree and read again, so that one wrong key costs only itself.

use std::cell::RefCell;
use std::fmt;

use serde::de::{self, DeserializeOwned, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_norway::Value;

/// One step of a key path: a map key or a list index.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Seg {
    Key(String),
    Index(usize),
}

/// Where a value is in the config tree, printed as operators write it: `providers[1].groups.nested`.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyPath(pub Vec<Seg>);

impl KeyPath {
    /// This path with `seg` after it.
    pub fn join(&self, seg: Seg) -> KeyPath {
        let mut v = self.0.clone();
        v.push(seg);
        KeyPath(v)
    }

    pub fn key(&self, key: &str) -> KeyPath {
        self.join(Seg::Key(key.to_string()))
    }

    /// The path of the map or list holding this value (the root holds itself).
    pub fn parent(&self) -> KeyPath {
        KeyPath(self.0[..self.0.len().saturating_sub(1)].to_vec())
    }

    /// The last map key of the path, if it ends with one.
    pub fn last_key(&self) -> Option<&str> {
        match self.0.last() {
            Some(Seg::Key(k)) => Some(k),
            _ => None,
        }
    }

    /// Whether `self` is `other` or inside it.
    pub fn starts_with(&self, other: &KeyPath) -> bool {
        self.0.starts_with(&other.0)
    }

    /// Read back a printed path (`providers[1].groups.nested`). Keys holding dots cannot be told apart.
    pub fn parse(s: &str) -> KeyPath {
        let mut segs = Vec::new();
        for part in s.split('.').filter(|p| !p.is_empty()) {
            let mut rest = part;
            if let Some(open) = rest.find('[') {
                if open > 0 {
                    segs.push(Seg::Key(rest[..open].to_string()));
                }
                rest = &rest[open..];
                while let Some(body) = rest.strip_prefix('[') {
                    let Some((n, after)) = body.split_once(']') else { break };
                    match n.parse() {
                        Ok(i) => segs.push(Seg::Index(i)),
                        Err(_) => segs.push(Seg::Key(n.to_string())),
                    }
                    rest = after;
                }
            } else {
                segs.push(Seg::Key(rest.to_string()));
            }
        }
        KeyPath(segs)
    }

    /// The dotted form environment overrides are recorded in: list indices as numbers (`providers.1.name`).
    pub fn dotted(&self) -> String {
        let parts: Vec<String> = self
            .0
            .iter()
            .map(|s| match s {
                Seg::Key(k) => k.clone(),
                Seg::Index(i) => i.to_string(),
            })
            .collect();
        parts.join(".")
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Key(k) if i == 0 => f.write_str(k)?,
                Seg::Key(k) => write!(f, ".{k}")?,
                Seg::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

/// A read that failed: where, and serde's own message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub path: KeyPath,
    pub message: String,
}

/// Read `value` as a `T`. On success, the paths of the keys `T` does not know (and ignores); on failure,
/// the deepest path the error came out of. Paths are relative to `value`.
pub fn read<T: DeserializeOwned>(value: Value) -> Result<(T, Vec<KeyPath>), Failure> {
    let track = Track::default();
    let result = T::deserialize(Wrap { de: value, path: KeyPath::default(), track: &track });
    match result {
        Ok(t) => Ok((t, track.ignored.into_inner())),
        Err(e) => {
            let path = track.failed_at.into_inner().unwrap_or_default();
            Err(Failure { path, message: e.to_string() })
        }
    }
}

#[derive(Default)]
struct Track {
    failed_at: RefCell<Option<KeyPath>>,
    ignored: RefCell<Vec<KeyPath>>,
}

impl Track {
    /// Remember `path` as the place of `error` unless a deeper place was remembered already.
    fn fail<E>(&self, path: &KeyPath, error: E) -> E {
        let mut at = self.failed_at.borrow_mut();
        if at.is_none() {
            *at = Some(path.clone());
        }
        error
    }
}

/// A deserializer that remembers where it is.
struct Wrap<'t, D> {
    de: D,
    path: KeyPath,
    track: &'t Track,
}

macro_rules! forward_deserialize {
    ($($method:ident($($arg:ident: $ty:ty),*);)*) => {
        $(
            fn $method<V: Visitor<'de>>(self, $($arg: $ty,)* visitor: V) -> Result<V::Value, D::Error> {
                let Wrap { de, path, track } = self;
                let visitor = WrapVisitor { inner: visitor, path: path.clone(), track };
                de.$method($($arg,)* visitor).map_err(|e| track.fail(&path, e))
            }
        )*
    };
}

impl<'de, 't, D: Deserializer<'de>> Deserializer<'de> for Wrap<'t, D> {
    type Error = D::Error;

    forward_deserialize! {
        deserialize_any();
        deserialize_bool();
        deserialize_i8();
        deserialize_i16();
        deserialize_i32();
        deserialize_i64();
        deserialize_i128();
        deserialize_u8();
        deserialize_u16();
        deserialize_u32();
        deserialize_u64();
        deserialize_u128();
        deserialize_f32();
        deserialize_f64();
        deserialize_char();
        deserialize_str();
        deserialize_string();
        deserialize_bytes();
        deserialize_byte_buf();
        deserialize_option();
        deserialize_unit();
        deserialize_unit_struct(name: &'static str);
        deserialize_newtype_struct(name: &'static str);
        deserialize_seq();
        deserialize_tuple(len: usize);
        deserialize_tuple_struct(name: &'static str, len: usize);
        deserialize_map();
        deserialize_struct(name: &'static str, fields: &'static [&'static str]);
        deserialize_enum(name: &'static str, variants: &'static [&'static str]);
        deserialize_identifier();
    }

    /// Only a key the struct does not know is ignored: it is listed.
    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        self.track.ignored.borrow_mut().push(self.path.clone());
        self.de.deserialize_ignored_any(visitor)
    }

    fn is_human_readable(&self) -> bool {
        self.de.is_human_readable()
    }
}

/// A visitor that hands on the place to what it visits.
struct WrapVisitor<'t, V> {
    inner: V,
    path: KeyPath,
    track: &'t Track,
}

macro_rules! forward_visit {
    ($($method:ident($ty:ty);)*) => {
        $(
            fn $method<E: de::Error>(self, v: $ty) -> Result<Self::Value, E> {
                self.inner.$method(v)
            }
        )*
    };
}

impl<'de, 't, V: Visitor<'de>> Visitor<'de> for WrapVisitor<'t, V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.expecting(f)
    }

    forward_visit! {
        visit_bool(bool);
        visit_i8(i8);
        visit_i16(i16);
        visit_i32(i32);
        visit_i64(i64);
        visit_i128(i128);
        visit_u8(u8);
        visit_u16(u16);
        visit_u32(u32);
        visit_u64(u64);
        visit_u128(u128);
        visit_f32(f32);
        visit_f64(f64);
        visit_char(char);
        visit_str(&str);
        visit_borrowed_str(&'de str);
        visit_string(String);
        visit_bytes(&[u8]);
        visit_borrowed_bytes(&'de [u8]);
        visit_byte_buf(Vec<u8>);
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        self.inner.visit_none()
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        self.inner.visit_unit()
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        self.inner.visit_some(Wrap { de: d, path: self.path, track: self.track })
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        self.inner.visit_newtype_struct(Wrap { de: d, path: self.path, track: self.track })
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        self.inner.visit_seq(WrapSeq { inner: seq, path: self.path, index: 0, track: self.track })
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        self.inner.visit_map(WrapMap { inner: map, path: self.path, key: None, track: self.track })
    }

    fn visit_enum<A: de::EnumAccess<'de>>(self, data: A) -> Result<Self::Value, A::Error> {
        // The variants of the config's enums are plain words: an error in one is the enum's.
        self.inner.visit_enum(data)
    }
}

struct WrapSeq<'t, A> {
    inner: A,
    path: KeyPath,
    index: usize,
    track: &'t Track,
}

impl<'de, 't, A: SeqAccess<'de>> SeqAccess<'de> for WrapSeq<'t, A> {
    type Error = A::Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>, A::Error> {
        let path = self.path.join(Seg::Index(self.index));
        self.index += 1;
        self.inner.next_element_seed(WrapSeed { inner: seed, path, track: self.track })
    }

    fn size_hint(&self) -> Option<usize> {
        self.inner.size_hint()
    }
}

struct WrapMap<'t, A> {
    inner: A,
    path: KeyPath,
    key: Option<String>,
    track: &'t Track,
}

impl<'de, 't, A: MapAccess<'de>> MapAccess<'de> for WrapMap<'t, A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, A::Error> {
        // The key is read as a Value first, so its text is known when the struct refuses it.
        let Some(key) = self.inner.next_key::<Value>()? else { return Ok(None) };
        let name = match &key {
            Value::String(s) => s.clone(),
            Value::Bool(b) => b.to_string(),
            Value::Number(n) => n.to_string(),
            _ => "?".to_string(),
        };
        let path = self.path.key(&name);
        self.key = Some(name);
        match seed.deserialize(key) {
            Ok(k) => Ok(Some(k)),
            Err(e) => {
                let e = self.track.fail(&path, e);
                Err(de::Error::custom(e))
            }
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, A::Error> {
        let path = self.path.key(self.key.as_deref().unwrap_or("?"));
        self.inner.next_value_seed(WrapSeed { inner: seed, path, track: self.track })
    }

    fn size_hint(&self) -> Option<usize> {
        self.inner.size_hint()
    }
}

struct WrapSeed<'t, S> {
    inner: S,
    path: KeyPath,
    track: &'t Track,
}

impl<'de, 't, S: DeserializeSeed<'de>> DeserializeSeed<'de> for WrapSeed<'t, S> {
    type Value = S::Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<S::Value, D::Error> {
        self.inner.deserialize(Wrap { de: d, path: self.path, track: self.track })
    }
}
