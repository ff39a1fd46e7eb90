//! Small helpers every layer uses and none owns: the clock, random ids, files written safely, and the
//! boxed future of the object-safe async traits. Nothing here knows about tollgate's own types, so it
//! sits at the bottom of the import order (see `tests/it/layout.rs`).

pub mod fs;
pub mod memory;
pub mod net;
pub mod random;
pub mod time;

/// A boxed future, for object-safe async traits (providers, stores) without a macro crate.
pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// At most `max` characters of `s`: how text a client chose (a service name, a scheme, an issuer) is cut
/// before it goes into a message, a log line or a cache key, so its size is ours, not theirs.
pub fn clip(s: &str, max: usize) -> std::borrow::Cow<'_, str> {
    match s.char_indices().nth(max) {
        Some((end, _)) => std::borrow::Cow::Owned(s[..end].to_string()),
        None => std::borrow::Cow::Borrowed(s),
    }
}

/// The whole cause chain of an error, for messages and the log (reqwest hides the useful part in sources).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    #[test]
    fn clip_cuts_at_characters_not_bytes() {
        assert_eq!(super::clip("abc", 5), "abc");
        assert_eq!(super::clip("abcdef", 3), "abc");
        assert_eq!(super::clip("ééé", 2), "éé");
        assert!(matches!(super::clip("ab", 2), std::borrow::Cow::Borrowed(_)), "short text is not copied");
    }
}
