#!/usr/bin/env bash
# The hostile-network figures of BENCHMARKS.md (sections 9 and 13): runs the attacks of tests/it/hostile.rs,
# those of tests/it/fairness.rs (an attacker with many loopback addresses, issue 23) and the Redis one of
# tests/it/replicas.rs against the real `tollgate serve` binary, one at a time, and
# prints what each measured (the HOSTILE lines) and the test summary. Every figure is also asserted by the
# test that prints it, so this fails when a bound is broken.
#
# Needs what the test command installs (redis-server and the rest): on a fresh machine run
# `bash scripts/test.sh` once first.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
out=$(mktemp)
trap 'rm -f "$out"' EXIT
status=0
cargo test --test it -- hostile:: fairness:: replicas::a_redis_restarted_empty --nocapture --test-threads 1 >"$out" 2>&1 || status=$?
grep -oE '(HOSTILE .*|test result.*|test .*FAILED)' "$out" || true
if ((status != 0)); then
    echo "abuse.sh: a bound was broken; the full output follows" >&2
    cat "$out" >&2
fi
exit "$status"
