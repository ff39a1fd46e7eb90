#!/usr/bin/env bash
# LDAP token latency: GET /token against a real slapd with a cold identity cache (every request searches,
# binds and reads groups over pooled StartTLS/LDAPS connections) and with a warm one, in the same run.
# Prints p50/p95/mean per case, LDAP operations per request (counted by slapd's monitor backend) and the
# p50 ratios. The operation-count ASSERTIONS are a normal test: ldap::ldap_operations_per_token_request_*.
#
#   bash scripts/bench-ldap.sh            # 300 requests per case
#   BENCH_N=2000 bash scripts/bench-ldap.sh
#
# `bash scripts/bench-ldap.sh watch`: the directory watchers' cost instead (watch::bench_watch_cost): LDAP
# operations per minute the watcher sends and CPU (tollgate's side and the directory server's, against a
# baseline window with the same load and no watcher), on an idle directory and on one taking
# BENCH_WATCH_WRITES group-membership writes a second (default 10), for slapd with syncprov and for the
# Samba AD DC (uSNChanged polling); BENCH_WATCH_SECS per window (default 30).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
command -v slapd >/dev/null 2>&1 || [[ -x /usr/sbin/slapd ]] ||
    { echo "bench-ldap.sh: slapd is missing; run scripts/test.sh once (it installs slapd and ldap-utils)" >&2; exit 1; }
if [[ "${1:-}" == watch ]]; then
    exec cargo test --release --test it -- --ignored --exact watch::bench_watch_cost --nocapture
fi
exec cargo test --release --test it -- --ignored --exact ldap::bench_ldap_token_latency --nocapture
