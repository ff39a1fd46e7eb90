#!/usr/bin/env bash
# Issue 28's table, measured from outside on real binaries: `bash scripts/rules-sweep.sh [BINARY [BINARY_B]]`.
#
#   BINARY     the tollgate binary to measure (default target/release/tollgate)
#   BINARY_B   a second binary (e.g. an older build), measured in the same rounds, alternating with the first
#
# The workload of issue 28: a policy of one rule per team (rule `team-N` lets group `team-N` pull and push
# `team-N/**`) at 10, 1,000, 10,000 and 50,000 rules; one static account, alice, in 50 groups `team-0` to
# `team-49`; warm `GET /token` for `repository:team-7/app:pull`, loaded by wrk (Debian package wrk), one
# thread and 16 keep-alive connections. Every size (and binary) gets a config directory of its own in a
# temp dir. In each round, each size of each binary in turn: `tollgate serve` is spawned, the time to the
# first 200 of /readyz taken, one warming request made, wrk run, the peak RSS read (VmHWM of
# /proc/PID/status) and the server stopped. The server's stderr goes through a pipe to a reader, as a
# container runtime's log collector reads it; the audit line is on (the default).
#
# Also taken: the server's CPU time (all threads, /proc/PID/stat) per request during the wrk run, a second
# view of the cost (other work on the machine moves it too, by 20-50 % on a busy 2-core machine).
#
# Prints each round's figures, then per binary the medians (start to ready, req/s, p99, peak RSS, CPU per
# request) with the req/s as a share of the 10-rule rate (issue 28's goals: 10,000 rules >= 90 %, 50,000
# >= 80 %) and the CPU per request as a share of the 10-rule figure; with two binaries, also the second's
# median rate as a share of the first's at each size.
#
# Knobs: SWEEP_ROUNDS (3), SWEEP_SECS (4, seconds of wrk per measurement), SWEEP_SIZES ("10 1000 10000 50000"),
#        SWEEP_CONNS (16), SWEEP_ENV (extra environment for every server, "K=V K2=V2").
#
# Examples:
#   cargo build --release --bin tollgate && bash scripts/rules-sweep.sh
#   bash scripts/rules-sweep.sh /tmp/tollgate-before-index target/release/tollgate
set -euo pipefail
shopt -s inherit_errexit
bins=("$(realpath "${1:-target/release/tollgate}")")
[[ -n ${2:-} ]] && bins+=("$(realpath "$2")")
for b in "${bins[@]}"; do [[ -x $b ]] || { echo "rules-sweep.sh: $b is not an executable" >&2; exit 2; }; done
rounds=${SWEEP_ROUNDS:-3} secs=${SWEEP_SECS:-4} conns=${SWEEP_CONNS:-16}
read -r -a sizes <<<"${SWEEP_SIZES:-10 1000 10000 50000}"
read -r -a extra_env <<<"${SWEEP_ENV:-}"
for tool in wrk python3 curl; do
    command -v "$tool" >/dev/null || { echo "rules-sweep.sh: $tool is missing (apt-get install $tool)" >&2; exit 1; }
done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
password=rules-sweep-password
auth="Basic $(printf 'alice:%s' "$password" | base64)"
url='/token?service=registry.local&scope=repository:team-7/app:pull'
hash=$(printf '%s\n' "$password" | "${bins[0]}" hash-password | tail -n1)
groups=$(seq -s ', ' -f 'team-%g' 0 49)

# One config directory per binary and size (each binary keeps its own signing key and data).
for i in "${!bins[@]}"; do
    for n in "${sizes[@]}"; do
        d=$work/b$i-$n
        mkdir -p "$d"
        printf 'accounts:\n  - username: alice\n    password_hash: "%s"\n    groups: [%s]\n' "$hash" "$groups" >"$d/accounts.yaml"
        awk -v n="$n" 'BEGIN { print "rules:"; for (i = 0; i < n; i++)
            printf "  - name: team-%d\n    match: { group: [team-%d] }\n    resources: [\"team-%d/**\"]\n    actions: [pull, push]\n", i, i, i }' \
            >"$d/policy.yaml"
        cat >"$d/config.yaml" <<EOF
server:
  listen: 127.0.0.1:0
  data_dir: $d/data
token:
  issuer: tollgate-rules-sweep
  services: [registry.local]
providers:
  - type: static
    name: local
    file: $d/accounts.yaml
policy:
  paths: [$d/policy.yaml]
  reload_interval: 0s
EOF
    done
done

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
# The launcher: spawns BINARY serve --config CONFIG on PORT with its stderr piped to a reader (`cat`), polls
# /readyz every 2 ms until it answers 200 (at most 60 s), prints the server's PID and the milliseconds from
# spawn to ready, and leaves the server running. The interpreter starts before the clock does.
cat >"$work/spawn_ready.py" <<'EOF'
import http.client, os, subprocess, sys, time
binary, config, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
env = dict(os.environ, TOLLGATE_SERVER__LISTEN=f"127.0.0.1:{port}")
reader = subprocess.Popen(["cat"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
t0 = time.monotonic_ns()
server = subprocess.Popen([binary, "serve", "--config", config], env=env, stdin=subprocess.DEVNULL,
                          stdout=subprocess.DEVNULL, stderr=reader.stdin)
reader.stdin.close()
while time.monotonic_ns() - t0 < 60e9 and server.poll() is None:
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
        c.request("GET", "/readyz")
        if c.getresponse().status == 200:
            print(server.pid, f"{(time.monotonic_ns() - t0) / 1e6:.0f}", flush=True)
            sys.exit(0)
    except OSError:
        pass
    time.sleep(0.002)
server.kill()
sys.exit(1)
EOF
# wrk's latency figure ("1.61ms", "850.00us", "1.20s") in milliseconds.
to_ms() { awk -v v="$1" 'BEGIN { u = v; sub(/^[0-9.]+/, "", u); x = v + 0;
    if (u == "us") x /= 1000; else if (u == "s") x *= 1000; else if (u == "m") x *= 60000; printf "%.2f", x }'; }

# CPU time of process PID so far (all its threads, user + system), in clock ticks.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# One measurement: prints "READY_MS REQ_PER_S P99_MS PEAK_RSS_MIB CPU_US_PER_REQUEST".
measure() { # BINARY DIR
    local p pid ms out rps p99 hwm c0 cpu
    p=$(port)
    read -r pid ms < <(env "${extra_env[@]}" python3 "$work/spawn_ready.py" "$1" "$2/config.yaml" "$p") || true
    [[ -n ${ms:-} ]] || { echo "rules-sweep.sh: $1 with $2 never became ready" >&2; exit 1; }
    trap 'kill "$pid" 2>/dev/null || true' EXIT # this function runs in a subshell: stop its server if it fails
    curl -sf -H "Authorization: $auth" "http://127.0.0.1:$p$url" | grep -q '"token"' ||
        { echo "rules-sweep.sh: $1 with $2 gives alice no token" >&2; exit 1; }
    c0=$(cpu_ticks "$pid")
    out=$(wrk -t1 -c"$conns" -d"${secs}s" --latency -H "Authorization: $auth" "http://127.0.0.1:$p$url")
    if grep -q 'Non-2xx' <<<"$out"; then echo "rules-sweep.sh: non-2xx answers under load:" >&2; echo "$out" >&2; exit 1; fi
    rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
    p99=$(to_ms "$(awk '$1 == "99%" {print $2}' <<<"$out")")
    cpu=$(awk -v t="$(($(cpu_ticks "$pid") - c0))" -v hz="$(getconf CLK_TCK)" \
        '/ requests in / {printf "%.1f", t / hz * 1e6 / $1}' <<<"$out")
    hwm=$(awk '/^VmHWM/ {printf "%.1f", $2 / 1024}' "/proc/$pid/status")
    kill "$pid"
    while kill -0 "$pid" 2>/dev/null; do sleep 0.02; done # not a child of this shell: wait for it to go
    trap - EXIT
    echo "$ms $rps $p99 $hwm $cpu"
}

echo "== rules sweep: ${bins[*]}; ${#sizes[@]} sizes x $rounds rounds, wrk -t1 -c$conns ${secs}s each; load average $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-6s %-3s %7s %14s %10s %9s %10s %12s\n' round bin rules "ready ms" "req/s" "p99 ms" "RSS MiB" "CPU us/req"
declare -A res
for r in $(seq "$rounds"); do
    for n in "${sizes[@]}"; do
        for i in "${!bins[@]}"; do
            m=$(measure "${bins[$i]}" "$work/b$i-$n")
            res[$i,$n]+="$m;"
            read -r ms rps p99 hwm cpu <<<"$m"
            printf '%-6s %-3s %7s %14s %10.0f %9s %10s %12s\n' "$r" "$((i + 1))" "$n" "$ms" "$rps" "$p99" "$hwm" "$cpu"
        done
    done
done

median() { sort -g | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}'; }
col() { tr ';' '\n' <<<"${res[$1,$2]}" | awk -v c="$3" 'NF {print $c}'; } # BIN SIZE COLUMN: one figure per round
echo "== medians of $rounds rounds (load average now $(cut -d' ' -f1-3 /proc/loadavg))"
for i in "${!bins[@]}"; do
    echo "binary $((i + 1)): ${bins[$i]} ($("${bins[$i]}" --version 2>/dev/null || echo '?'))"
    printf '%9s %14s %10s %9s %10s %12s %11s %14s %24s\n' rules "start to ready" "req/s" "p99" "peak RSS" "of 10 rules" \
        "CPU us/req" "CPU of 10" "rounds req/s"
    base=$(col "$i" "${sizes[0]}" 2 | median) cbase=$(col "$i" "${sizes[0]}" 5 | median)
    for n in "${sizes[@]}"; do
        rps=$(col "$i" "$n" 2 | median) cpu=$(col "$i" "$n" 5 | median)
        printf '%9s %11s ms %10.0f %6s ms %6s MiB %11.1f%% %11s %10.1f%% %24s\n' "$n" "$(col "$i" "$n" 1 | median)" "$rps" \
            "$(col "$i" "$n" 3 | median)" "$(col "$i" "$n" 4 | median)" "$(awk -v a="$rps" -v b="$base" 'BEGIN {print 100 * a / b}')" \
            "$cpu" "$(awk -v a="$cpu" -v b="$cbase" 'BEGIN {print 100 * a / b}')" \
            "$(col "$i" "$n" 2 | awk '{printf "%s%.0f", (NR > 1 ? " " : ""), $1}')"
    done
    h=""
    for n in "${sizes[@]}"; do
        [[ $n == 10000 || $n == 50000 ]] || continue
        h+="$(awk -v a="$(col "$i" "$n" 2 | median)" -v b="$base" -v n="$n" 'BEGIN {printf " %d rules %.1f%%", n, 100 * a / b}')"
    done
    [[ -n $h ]] && echo "HEADLINE rules-sweep binary $((i + 1)): /token req/s against ${sizes[0]} rules:$h (goals: 10000 >= 90%, 50000 >= 80%)"
done
if ((${#bins[@]} == 2)); then
    for n in "${sizes[@]}"; do
        awk -v a="$(col 0 "$n" 2 | median)" -v b="$(col 1 "$n" 2 | median)" -v n="$n" \
            'BEGIN {printf "at %6d rules binary 2 serves %.1f%% of binary 1 (medians %.0f and %.0f req/s)\n", n, 100 * b / a, b, a}'
    done
fi
