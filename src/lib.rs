//! tollgate: a token server for container registries.
//!
//! The library holds everything; `main.rs` only parses the command line and calls in here, so the
//! integration tests can build a router and call it without a socket.

// In the order a request travels, which is also the direction of imports: a module imports only modules
// listed below it (`tests/it/layout.rs` checks this, and that no import circle exists).
pub mod access;
pub mod app;
pub mod authn;
pub mod cli;
pub mod config;
pub mod grant;
pub mod http;
pub mod identity;
pub mod invalidate;
pub mod policy;
pub mod policy_store;
pub mod scope;
pub mod server;
pub mod store;
pub mod support;
pub mod telemetry;
pub mod token;
