//! tollgate's integration tests: ONE test binary with one module per area.
//!
//! Every file directly under `tests/` would be linked as its own binary (minutes each on two cores),
//! so all integration tests live here as modules. `rig` is the shared library that starts real
//! registries and drives real clients (skopeo, podman, ctr, the docker CLI); `rig_selftest` proves the
//! rig works against those tools before any tollgate test relies on it. `harness` runs tollgate itself.
//!
//! Run with `bash scripts/test.sh` (installs the tools first) or `cargo test --test it`.

// Test and benchmark code may unwrap: a panic is the failure report (production code may not, Cargo.toml [lints]).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod access_tokens;
mod ad;
mod api;
mod audit_log;
mod cli;
mod compose;
mod docs;
mod e2e;
mod failover;
mod fairness;
mod faults;
mod harness;
mod hostile;
mod invalidation;
mod kube;
mod layout;
mod ldap;
mod oidc;
mod ops;
mod policy_scale;
mod probe;
mod props;
mod pull_bench;
mod replicas;
mod rig;
mod rig_selftest;
mod watch;
mod workload;
