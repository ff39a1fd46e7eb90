//! Small helpers every layer uses and none owns: the clock, random ids, files written safely, and the
//! boxed future of the object-safe async traits. Nothing here knows about tollgate's own types, so it
//! sits at the bottom of the import order (see `tests/it/layout.rs`).

pub mod fs;
pub mod random;
pub mod time;

/// A boxed future, for object-safe async traits (providers, stores) without a macro crate.
pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

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
