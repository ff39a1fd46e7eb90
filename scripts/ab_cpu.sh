#!/usr/bin/env bash
# `bash scripts/ab_cpu.sh BIN_A ENV_A BIN_B ENV_B [ROUNDS] [SECS]`: scripts/ab.sh's rounds, each also
# reporting the CPU time per request of the server's session (tollgate, its log reader, the shell between),
# read from /proc before and after the round. Other work on the machine changes requests per second much
# more than it changes CPU time per request, so this is the figure to compare on a busy machine.
set -euo pipefail
(($# >= 4)) || { sed -n '2,5p' "$0" >&2; exit 2; }
command -v wrk >/dev/null || { echo "ab_cpu.sh: wrk is missing (apt-get install wrk)" >&2; exit 1; }
a=$(realpath "$1") ea=$2 b=$(realpath "$3") eb=$4 rounds=${5:-3} secs=${6:-8}
work=$(mktemp -d)
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
start() {
    mkdir -p "$4"
    (cd "$4" && exec setsid bash -c "env $2 TOLLGATE_SERVER__LISTEN=127.0.0.1:$3 '$1' serve 2>&1 | cat >/dev/null") >/dev/null 2>&1 &
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
    curl -sf -H "Authorization: $auth" "http://127.0.0.1:$p$url" >/dev/null
done
ticks() { # CPU ticks of every process in session $1
    local t=0
    for pid in $(ps -o pid= -s "$1"); do
        [[ -r /proc/$pid/stat ]] || continue
        t=$((t + $(awk '{print $14 + $15}' /proc/$pid/stat)))
    done
    echo $t
}
hz=$(getconf CLK_TCK)
for r in $(seq "$rounds"); do
    for side in A B; do
        p=$pa_port s=$pa; [[ $side == B ]] && p=$pb_port s=$pb
        t0=$(ticks $s)
        out=$(wrk -t1 -c16 -d"${secs}s" -H "Authorization: $auth" "http://127.0.0.1:$p$url")
        t1=$(ticks $s)
        n=$(awk '/requests in/ {print $1}' <<<"$out"); rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
        awk -v s=$side -v r=$r -v n=$n -v rps=$rps -v d=$((t1 - t0)) -v hz=$hz \
            'BEGIN {printf "round %s %s %s req/s, %.2f us CPU per request\n", r, s, rps, 1e6 * d / hz / n}'
    done
done
