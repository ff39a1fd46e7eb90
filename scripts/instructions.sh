#!/usr/bin/env bash
# Instructions per warm GET /token, counted by valgrind's callgrind: a figure the machine's load does not
# move, for finding where a release got slower. `bash scripts/instructions.sh BIN [BIN...] [-- N]`
#
#   BIN   tollgate release binaries to compare (each serves the embedded demo config in a directory of its own)
#   N     requests counted per binary (default 1000), after 200 uncounted ones that fill the caches
#
# Each binary runs under callgrind with instrumentation off until the warm-up is done; then N requests of
# alice's Basic credentials and one scope are counted, sequentially over one keep-alive connection. Prints,
# per binary, the user-space instructions per request in total and in the parts of a request (inclusive):
# the signature, the audit line, authentication, the policy, the rest. Kernel work (the sockets) is not
# counted, and valgrind's CPU lacks some instructions the real one has (the signature takes a slower
# path), so compare binaries with each other, not these figures with a CPU profile.
#
# Needs valgrind (Debian package valgrind) and python3.
set -euo pipefail
bins=() n=1000
while (($#)); do
    if [[ $1 == -- ]]; then n=${2:?N after --}; break; fi
    bins+=("$(realpath "$1")"); shift
done
((${#bins[@]})) || { sed -n '2,14p' "$0" >&2; exit 2; }
command -v valgrind >/dev/null || { echo "instructions.sh: valgrind is missing (apt-get install valgrind)" >&2; exit 1; }
work=$(mktemp -d)
pid=
trap '[[ -n $pid ]] && kill "$pid" 2>/dev/null; rm -rf "$work"' EXIT
cat >"$work/client.py" <<'PY'
import base64, http.client, sys
port, n = int(sys.argv[1]), int(sys.argv[2])
auth = {"Authorization": "Basic " + base64.b64encode(b"alice:alice-demo-password").decode()}
conn = http.client.HTTPConnection("127.0.0.1", port)
for _ in range(n):
    conn.request("GET", "/token?service=registry.local&scope=repository:payments/api:push,pull", headers=auth)
    reply = conn.getresponse()
    body = reply.read()
    if reply.status != 200:
        sys.exit(f"status {reply.status}: {body[:200]!r}")
PY
# The parts of a request: a name, then the functions whose inclusive count is that part (the first one
# found: older releases named some differently).
parts=(
    "signature|tollgate::token::keys::SigningKey::sign"
    "audit line|tollgate::http::audit::Audit::finish"
    "authentication|tollgate::authn::authenticate::{{closure}}|tollgate::http::authn::password_login::{{closure}}"
    "policy|tollgate::policy::Policy::authorize"
)
printf '%-40s %12s' binary "instr/req"
for p in "${parts[@]}"; do printf ' %15s' "${p%%|*}"; done
printf ' %15s\n' rest
for bin in "${bins[@]}"; do
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    dir=$work/$(basename "$bin")-$port
    mkdir -p "$dir"
    (cd "$dir" && exec env TOLLGATE_SERVER__LISTEN=127.0.0.1:$port valgrind --tool=callgrind --instr-atstart=no \
        --callgrind-out-file="$dir/cg.out" "$bin" serve >"$dir/stdout" 2>"$dir/stderr") &
    pid=$!
    for _ in $(seq 600); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.2; done
    python3 "$work/client.py" "$port" 200
    callgrind_control -i on "$pid" >/dev/null 2>&1
    python3 "$work/client.py" "$port" "$n"
    callgrind_control -d "$pid" >/dev/null 2>&1
    kill "$pid"; wait "$pid" 2>/dev/null || true
    pid=
    # The dump taken on request holds the counted requests only (instrumentation was off before them).
    dump=$(ls "$dir"/cg.out.* | head -1)
    annotated=$(callgrind_annotate --inclusive=yes --threshold=100 "$dump" 2>/dev/null)
    total=$(awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}' <<<"$annotated")
    name=$bin
    ((${#name} <= 40)) || name=...${name: -37}
    printf '%-40s %12.0f' "$name" "$(bc -l <<<"$total / $n")"
    rest=$total
    for p in "${parts[@]}"; do
        IFS='|' read -r -a fns <<<"${p#*|}"
        c=
        for fn in "${fns[@]}"; do
            c=$(awk -v fn="???:$fn [" '$0 ~ /\(/ && index($0, fn) {gsub(",", "", $1); print $1; exit}' <<<"$annotated")
            [[ -n $c ]] && break
        done
        c=${c:-0}
        rest=$((rest - c))
        printf ' %15.0f' "$(bc -l <<<"$c / $n")"
    done
    printf ' %15.0f\n' "$(bc -l <<<"$rest / $n")"
done
