//! The line of a key in a config file, found by the YAML parser itself.
//!
//! Searching the text for `key:` picks the wrong line as soon as the key's name turns up earlier (in a
//! comment, a string, another section) or the key sits in a flow mapping (`{a: 1, b: 2}`). Instead the
//! file is parsed again and walked down the key's path; at the key (or list item) the walk stops with an
//! error, and the parser marks that error with the position of the event it was reading: the key's own.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::tracked::{KeyPath, Seg};

/// The message of the error that stops the walk at its target.
const FOUND: &str = "\u{1}tollgate: found";

/// The 1-based line of the key (or list item) at `path` in `text`, if it is written there.
pub fn line_of(text: &str, path: &KeyPath) -> Option<usize> {
    if path.0.is_empty() {
        return None;
    }
    let de = serde_norway::Deserializer::from_str(text);
    match (Walk { path: &path.0 }).deserialize(de) {
        Ok(()) => None,
        Err(e) if e.to_string().contains(FOUND) => e.location().map(|l| l.line()),
        Err(_) => None,
    }
}

/// The line of `path`, or of the nearest enclosing key written in the file (a required key that is
/// missing is placed at the map it belongs in).
pub fn line_or_enclosing(text: &str, path: &KeyPath) -> Option<usize> {
    let mut p = path.clone();
    while !p.0.is_empty() {
        if let Some(line) = line_of(text, &p) {
            return Some(line);
        }
        p = p.parent();
    }
    None
}

/// Walks down `path`; stops with [`FOUND`] at its last step.
struct Walk<'p> {
    path: &'p [Seg],
}

impl<'de> DeserializeSeed<'de> for Walk<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Walk<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("anything")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }

    fn visit_enum<A: de::EnumAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        Err(de::Error::custom("a tagged value is not walked into"))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let Some((Seg::Index(n), rest)) = self.path.split_first() else {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            return Ok(());
        };
        for _ in 0..*n {
            if seq.next_element::<IgnoredAny>()?.is_none() {
                return Ok(());
            }
        }
        if rest.is_empty() {
            seq.next_element_seed(Here)?;
        } else {
            seq.next_element_seed(Walk { path: rest })?;
        }
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let Some((Seg::Key(k), rest)) = self.path.split_first() else {
            while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
            return Ok(());
        };
        while let Some(matched) = map.next_key_seed(Key { name: k, stop: rest.is_empty() })? {
            if matched {
                map.next_value_seed(Walk { path: rest })?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(())
    }
}

/// Stops at the value it is given: a list item.
struct Here;

impl<'de> DeserializeSeed<'de> for Here {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(Here)
    }
}

impl<'de> Visitor<'de> for Here {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("anything")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Err(E::custom(FOUND))
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Err(E::custom(FOUND))
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Err(E::custom(FOUND))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Err(E::custom(FOUND))
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Err(E::custom(FOUND))
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Err(E::custom(FOUND))
    }

    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        Err(E::custom(FOUND))
    }

    fn visit_some<D: Deserializer<'de>>(self, _: D) -> Result<(), D::Error> {
        Err(de::Error::custom(FOUND))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        Err(de::Error::custom(FOUND))
    }

    fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        Err(de::Error::custom(FOUND))
    }
}

/// A map key: true when it is `name`; stops there when `stop`.
struct Key<'n> {
    name: &'n str,
    stop: bool,
}

impl<'de> DeserializeSeed<'de> for Key<'_> {
    type Value = bool;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_any(self)
    }
}

impl Key<'_> {
    fn check<E: de::Error>(&self, key: &str) -> Result<bool, E> {
        match key == self.name {
            true if self.stop => Err(E::custom(FOUND)),
            matched => Ok(matched),
        }
    }
}

impl<'de> Visitor<'de> for Key<'_> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a key")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<bool, E> {
        self.check(v)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<bool, E> {
        self.check(&v.to_string())
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<bool, E> {
        self.check(&v.to_string())
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<bool, E> {
        self.check(&v.to_string())
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_unit<E: de::Error>(self) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(false)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str, path: &str) -> Option<usize> {
        line_of(text, &KeyPath::parse(path))
    }

    #[test]
    fn a_key_is_found_on_its_own_line_whatever_comes_before_it() {
        let text = "# listen: in a comment\nserver:\n  # max_scopes: 3\n  data_dir: \"listen: not here\"\n  note: |\n    listen: nor here\n  listen: 127.0.0.1:1\n";
        assert_eq!(at(text, "server.listen"), Some(7));
        assert_eq!(at(text, "server.data_dir"), Some(4));
        assert_eq!(at(text, "server.max_scopes"), None);
        assert_eq!(at(text, "token.issuer"), None);
    }

    #[test]
    fn flow_mappings_list_items_and_nested_keys_have_their_lines() {
        let text = "server: {listn: 1,\n  max_body_bytes: lots}\ntoken:\n  services:\n  - a\n  - [b]\n  keys: [{key_file: k}, {key_file: l,\n    active: maybe}]\nproviders:\n- type: ldap\n  groups:\n    nested: recursiv\n-\n  type: static\n";
        assert_eq!(at(text, "server.listn"), Some(1));
        assert_eq!(at(text, "server.max_body_bytes"), Some(2));
        assert_eq!(at(text, "token.services[1]"), Some(6));
        assert_eq!(at(text, "token.keys[1].active"), Some(8));
        assert_eq!(at(text, "providers[0].groups.nested"), Some(12));
        assert_eq!(at(text, "providers[1].type"), Some(14));
        assert_eq!(at(text, "providers[2]"), None);
        assert_eq!(line_or_enclosing(text, &KeyPath::parse("providers[0].url")), Some(10));
    }
}
