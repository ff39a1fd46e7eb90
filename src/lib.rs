//! tollgate: a token server for container registries.
//!
//! The library holds everything; `main.rs` only parses the command line and calls in here, so the
//! integration tests can build a router and call it without a socket.

pub mod app;
pub mod cli;
pub mod config;
pub mod health;
pub mod http;
pub mod identity;
pub mod login;
pub mod policy;
pub mod reload;
pub mod revocation;
pub mod scope;
pub mod sessions;
pub mod telemetry;
pub mod tls;
pub mod token;
