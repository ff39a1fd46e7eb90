//! The one integration-test binary (one link step instead of one per file).

mod api;
mod cli;
mod harness;
