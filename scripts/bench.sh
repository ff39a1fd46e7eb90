#!/usr/bin/env bash
# THE benchmark command of tollgate: `bash scripts/bench.sh [SECTION...]` (release builds).
#
# Prints, as ratios measured within the same run (see BENCHMARKS.md for figures and how to read them):
#   1. raw ES256 signing on one core against GET /token throughput (warm cache, keep-alive), and p50/p99 at
#      half of saturation                                          (benches/tollgate.rs, section "signing")
#   2. warm against cold /token latency, static bcrypt and argon2id accounts        (section "cache")
#   3. start-up time to ready, idle RSS, memory of 100,000 cached identities        (section "memory")
#   4. /token throughput of the accept loop with deadlines against plain axum::serve (section "serve")
#   4b. one GET /token inside tollgate (router to response, no sockets) in signatures  (section "handler")
#   5. warm against cold /token latency with LDAP, LDAP operations per request     (tests/it/ldap.rs)
#   10. a CI job's JWT against a robot secret, warm and cold (RS256 and ES256)          (section "workload")
#   13. a warm access-token (tgp_) login against a warm robot/password login, CPU and p50   (section "access")
#   6. a 20-layer skopeo pull through registry 2.8 + tollgate against registry 2.8 with htpasswd,
#      alternating runs                                                             (tests/it/pull_bench.rs)
#   12. warm GET /token of the release binary with the audit line on against off, from outside (wrk),
#      alternating rounds                                                              (scripts/ab.sh)
#   11b. issue 28's policy-size table from outside: the release binary with 10, 1,000, 10,000 and 50,000
#      rules (one per team, a user in 50 teams), start to ready, warm /token req/s and p99 (wrk), peak RSS,
#      sizes alternating in rounds, each size's rate as a share of 10 rules          (scripts/rules-sweep.sh)
#   16. with BENCH_INSTRUCTIONS=1: instructions per warm GET /token under valgrind, by part of the request, a
#      figure the machine's load does not move (and BENCH_BEFORE's, to compare)  (scripts/instructions.sh)
#
# Knobs: BENCH_ROUNDS (3), BENCH_SECS (4), BENCH_CONNS (32 load connections), BENCH_N (LDAP requests per case, 300), BENCH_PULLS (10),
# BENCH_BCRYPT_COST (htpasswd cost, 5 as `htpasswd -B`). BENCH_SKIP_IT=1 runs only 1-4 (no slapd/registry).
# BENCH_SKIP_AUDIT=1 skips 12 (it needs wrk, Debian package wrk). BENCH_SKIP_SWEEP=1 skips 11b (wrk too; about
# 1 minute); BENCH_BEFORE=BINARY measures an older build in the same rounds as 11b, alternating (before, then after),
# and in 16. BENCH_INSTRUCTIONS=1 runs 16 (it needs valgrind, Debian package valgrind; about 15 s per binary).
# Needs what scripts/test.sh installs (slapd, docker-registry, skopeo); run that once first.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

echo "== machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
free -h | sed 's/^/== /'
echo "== load average: $(cut -d' ' -f1-3 /proc/loadavg) (other work on the machine skews every figure)"

cargo bench --bench tollgate -- "$@"

if [[ ${BENCH_SKIP_AUDIT:-0} != 1 ]]; then
    cargo build --release --bin tollgate
    echo "== 12. audit line on (A) against off (B), warm GET /token, wrk -t1 -c16"
    bin="${CARGO_TARGET_DIR:-target}/release/tollgate"
    bash scripts/ab.sh "$bin" "" "$bin" "TOLLGATE_LOG=info,tollgate::audit=off" \
        "${BENCH_ROUNDS:-3}" "${BENCH_SECS:-8}"
fi

if [[ ${BENCH_SKIP_SWEEP:-0} != 1 ]]; then
    cargo build --release --bin tollgate
    echo "== 11b. policy size from outside: the release binary at 10 to 50,000 rules, wrk -t1 -c16"
    SWEEP_ROUNDS=${BENCH_ROUNDS:-3} bash scripts/rules-sweep.sh ${BENCH_BEFORE:+"$BENCH_BEFORE"} "${CARGO_TARGET_DIR:-target}/release/tollgate"
fi

if [[ ${BENCH_INSTRUCTIONS:-0} == 1 ]]; then
    cargo build --release --bin tollgate
    echo "== 16. instructions per warm GET /token (valgrind's callgrind), by part of the request"
    bash scripts/instructions.sh ${BENCH_BEFORE:+"$BENCH_BEFORE"} "${CARGO_TARGET_DIR:-target}/release/tollgate"
fi

if [[ ${BENCH_SKIP_IT:-0} != 1 ]]; then
    for tool in slapd docker-registry skopeo; do
        command -v "$tool" >/dev/null 2>&1 || [[ -x /usr/sbin/$tool ]] ||
            { echo "bench.sh: $tool is missing; run scripts/test.sh once (it installs it)" >&2; exit 1; }
    done
    cargo test --release --test it -- --ignored --exact --nocapture --test-threads 1 \
        ldap::bench_ldap_token_latency pull_bench::bench_pull_20_layers_token_against_htpasswd
fi
