#!/usr/bin/env bash
# Warm GET /token throughput of two tollgate servers side by side, in alternating rounds of one run, so
# the machine's noise falls on both: `bash scripts/ab.sh BIN_A ENV_A BIN_B ENV_B [ROUNDS] [SECS]`.
#
#   BIN_A, BIN_B   tollgate binaries (the same one twice to compare settings)
#   ENV_A, ENV_B   extra environment for each, "K=V K2=V2" or "" (e.g. TOLLGATE_LOG=info,tollgate::audit=off)
#
# Each serves the embedded demo config from a directory of its own; its stderr goes through a pipe to a
# reader, as a container runtime's log collector reads it. The load is wrk (Debian package wrk), one
# thread and 16 keep-alive connections, alice's Basic credentials and one scope, after one warming
# request. Prints each round's requests per second and the CPU time per request of the server's session
# (tollgate, its log reader and the shell between, read from /proc before and after the round), then B's
# medians as a share of A's. Other work on the machine moves requests per second much more than CPU time
# per request, so the second is the figure to compare on a busy machine.
#
# Examples:
#   bash scripts/ab.sh target/release/tollgate "" target/release/tollgate "TOLLGATE_LOG=info,tollgate::audit=off"
#   bash scripts/ab.sh /tmp/tollgate-before "" target/release/tollgate ""
set -euo pipefail
(($# >= 4)) || { sed -n '2,15p' "$0" >&2; exit 2; }
a=$(realpath "$1") ea=$2 b=$(realpath "$3") eb=$4 rounds=${5:-3} secs=${6:-8}
command -v wrk >/dev/null || { echo "ab.sh: wrk is missing (apt-get install wrk)" >&2; exit 1; }
work=$(mktemp -d)
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
start() { # BIN ENV PORT DIR: a server in a session of its own, so it and its log reader stop together
    mkdir -p "$4"
    (cd "$4" && exec setsid bash -c "env $2 TOLLGATE_SERVER__LISTEN=127.0.0.1:$3 '$1' serve 2>&1 | cat >/dev/null") \
        >/dev/null 2>&1 &
    echo $!
}
pa_port=$(port) pb_port=$(port)
pa=$(start "$a" "$ea" "$pa_port" "$work/a")
pb=$(start "$b" "$eb" "$pb_port" "$work/b")
trap 'kill -- -$pa -$pb 2>/dev/null; rm -rf "$work"' EXIT
auth="Basic $(printf 'alice:alice-demo-password' | base64)"
url='/token?service=registry.local&scope=repository:payments/api:push,pull'
for p in "$pa_port" "$pb_port"; do
    for _ in $(seq 100); do curl -sf "http://127.0.0.1:$p/healthz" >/dev/null && break; sleep 0.1; done
    curl -sf -H "Authorization: $auth" "http://127.0.0.1:$p$url" >/dev/null || { echo "ab.sh: server on $p does not answer" >&2; exit 1; }
done
ticks() { # CPU ticks of every process in session $1
    local t=0
    for pid in $(ps -o pid= -s "$1"); do
        [[ -r /proc/$pid/stat ]] || continue
        t=$((t + $(awk '{print $14 + $15}' "/proc/$pid/stat")))
    done
    echo $t
}
hz=$(getconf CLK_TCK)
ra=() rb=() ca=() cb=()
for r in $(seq "$rounds"); do
    for side in A B; do
        p=$pa_port s=$pa; [[ $side == B ]] && p=$pb_port s=$pb
        t0=$(ticks "$s")
        out=$(wrk -t1 -c16 -d"${secs}s" -H "Authorization: $auth" "http://127.0.0.1:$p$url")
        t1=$(ticks "$s")
        rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
        cpu=$(awk -v n="$(awk '/requests in/ {print $1}' <<<"$out")" -v d=$((t1 - t0)) -v hz="$hz" \
            'BEGIN {printf "%.2f", 1e6 * d / hz / n}')
        echo "round $r $side $rps req/s, $cpu us CPU per request"
        if [[ $side == A ]]; then ra+=("$rps") ca+=("$cpu"); else rb+=("$rps") cb+=("$cpu"); fi
    done
done
median() { printf '%s\n' "$@" | sort -g | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }
ma=$(median "${ra[@]}") mb=$(median "${rb[@]}")
awk -v a="$ma" -v b="$mb" 'BEGIN {printf "median A %.0f, B %.0f req/s: B is %.1f %% of A\n", a, b, 100 * b / a}'
ma=$(median "${ca[@]}") mb=$(median "${cb[@]}")
awk -v a="$ma" -v b="$mb" 'BEGIN {printf "median A %.2f, B %.2f us CPU per request: B is %.1f %% of A\n", a, b, 100 * b / a}'
