#!/usr/bin/env bash
# /token throughput with the Redis state store against the embedded (local file) store, and with Redis under
# Sentinel and as a Cluster against the single Redis, in the same run, on a release build. Four tollgate
# processes with the same config except `state`: local files; a private redis-server on loopback (no
# persistence); the same server found through a Sentinel (with a replica); a three-master Cluster made with
# `redis-cli --cluster create`. A warm identity cache (every login seen once before measuring), and
# concurrent keep-alive clients (one process each, so the client is not limited by Python's GIL):
#   - refresh grant: GET /token with a refresh token as the password (docker's way); every request checks
#     the revocation store (Redis: one pipelined round trip; local: a stat of the revocation file);
#   - password login: a static account whose password is in the identity cache (no store access; the
#     failed-login limiter is only consulted for failures).
# Rounds alternate the order of the servers; the median of the rounds is printed with the ratios redis/local
# and sentinel/redis, cluster/redis.
# Prints figures; asserts nothing about speed.
#
#   bash scripts/bench-redis.sh                    # 3 rounds of 5 s per case, 4 clients
#   BENCH_SECONDS=10 BENCH_CLIENTS=8 BENCH_ROUNDS=5 bash scripts/bench-redis.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
command -v redis-server >/dev/null 2>&1 ||
    { echo "bench-redis.sh: redis-server is missing; run scripts/test.sh once (it installs it)" >&2; exit 1; }
cargo build --release --bin tollgate >&2
exec python3 - "${CARGO_TARGET_DIR:-target}/release/tollgate" "${BENCH_SECONDS:-5}" "${BENCH_CLIENTS:-4}" "${BENCH_ROUNDS:-3}" <<'PY'
import base64, http.client, json, multiprocessing, os, re, socket, statistics, subprocess, sys, tempfile, threading, time

binary, seconds, clients, rounds = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
PASSWORD = "bench-password-0123"
SCOPE = "service=registry.bench&scope=repository:team-payments/app:pull"

def basic(user, pw):
    return "Basic " + base64.b64encode(f"{user}:{pw}".encode()).decode()

def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p

def start_tollgate(d, name, store_yaml):
    cfg = f"{d}/{name}.yaml"
    open(cfg, "w").write(
        f"server: {{listen: 127.0.0.1:0, data_dir: data-{name}}}\n"
        "token: {issuer: bench, services: [registry.bench], keys: [{key_file: shared/signing.key, cert_file: shared/signing.crt}]}\n"
        "refresh_tokens: {secret_file: shared/refresh-secret}\n"
        "providers: [{type: static, name: local, file: accounts.yaml}]\n"
        "policy: {builtin_example: true}\n"
        "identity_cache: {ttl: 10m}\n"
        f"{store_yaml}"
        "log: {level: warn}\n")
    env = dict(os.environ, TOLLGATE_LOG="info")
    env.pop("TOLLGATE_CONFIG", None)
    proc = subprocess.Popen([binary, "serve", "--config", cfg], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env=env)
    for line in proc.stderr:
        m = re.search(r"addr=(\S+).*tollgate listening|tollgate listening.*addr=(\S+)", line)
        if m:
            addr = m.group(1) or m.group(2)
            break
    else:
        sys.exit(f"tollgate ({name}) did not start")
    # Keep draining the log (one audit line per request), or the server blocks on a full pipe.
    threading.Thread(target=lambda: [None for _ in proc.stderr], daemon=True).start()
    return proc, addr

def get(conn, auth):
    conn.request("GET", f"/token?{SCOPE}", headers={"Authorization": auth})
    r = conn.getresponse(); body = r.read()
    return r.status, body

def client(addr, auth, deadline, out):
    host, port = addr.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port))
    ok = bad = 0
    while time.time() < deadline:
        status, _ = get(conn, auth)
        if status == 200: ok += 1
        else: bad += 1
    out.put((ok, bad))

def measure(addr, auth):
    q = multiprocessing.Queue()
    deadline = time.time() + seconds
    ps = [multiprocessing.Process(target=client, args=(addr, auth, deadline, q)) for _ in range(clients)]
    for p in ps: p.start()
    results = [q.get() for _ in ps]
    for p in ps: p.join()
    ok = sum(r[0] for r in results); bad = sum(r[1] for r in results)
    if bad:
        sys.exit(f"{bad} requests failed against {addr}: the figures would be meaningless")
    return ok / seconds

with tempfile.TemporaryDirectory() as d:
    os.makedirs(f"{d}/shared")
    h = subprocess.run([binary, "hash-password"], input=PASSWORD, capture_output=True, text=True, check=True).stdout.strip()
    open(f"{d}/accounts.yaml", "w").write(f'accounts:\n  - username: alice\n    password_hash: "{h}"\n    groups: [team-payments]\n')
    open(f"{d}/shared/refresh-secret", "w").write("bench-refresh-secret-shared-by-both-servers-0123456789")
    # The shared key: generated by registry-config into a throwaway data dir.
    open(f"{d}/keygen.yaml", "w").write("server: {data_dir: shared}\ntoken: {issuer: bench, services: [registry.bench]}\n"
                                        "providers: []\npolicy: {builtin_example: true}\n")
    subprocess.run([binary, "registry-config", "--config", f"{d}/keygen.yaml"], check=True, capture_output=True)

    rport = free_port()
    password = "bench-redis-password"
    redis = subprocess.Popen(["redis-server", "--port", str(rport), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                              "--requirepass", password, "--dir", d], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    procs = [redis]
    def redis_node(port, *extra, cwd=d):
        p = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                              "--requirepass", password, "--masterauth", password, "--dir", cwd, *extra],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(p)
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.1).close(); return
            except OSError:
                time.sleep(0.05)
        sys.exit(f"redis-server on {port} did not start")
    def cli(port, *args):
        return subprocess.run(["redis-cli", "--no-auth-warning", "-a", password, "-p", str(port), *args],
                              capture_output=True, text=True).stdout
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", rport), timeout=0.1).close(); break
            except OSError:
                time.sleep(0.05)
        open(f"{d}/redis-url", "w").write(f"redis://:{password}@127.0.0.1:{rport}/0\n")
        local, local_addr = start_tollgate(d, "local", "")
        procs.append(local)
        remote, redis_addr = start_tollgate(d, "redis", "state: {store: redis, redis_url_file: redis-url}\n")
        procs.append(remote)
        # Sentinel: a replica of the same server, one sentinel watching it.
        replica_port, sentinel_port = free_port(), free_port()
        redis_node(replica_port, "--replicaof", "127.0.0.1", str(rport))
        open(f"{d}/sentinel.conf", "w").write(f"port {sentinel_port}\nbind 127.0.0.1\nsentinel monitor bench 127.0.0.1 {rport} 1\n"
                                             f"sentinel auth-pass bench {password}\n")
        procs.append(subprocess.Popen(["redis-server", f"{d}/sentinel.conf", "--sentinel"],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        for _ in range(200):
            out = subprocess.run(["redis-cli", "-p", str(sentinel_port), "SENTINEL", "get-master-addr-by-name", "bench"],
                                 capture_output=True, text=True).stdout
            if str(rport) in out: break
            time.sleep(0.05)
        sentinel, sentinel_addr = start_tollgate(d, "sentinel", "state: {store: redis, redis_url_file: redis-url, key_prefix: 's:', "
                                                f"sentinel: {{nodes: ['127.0.0.1:{sentinel_port}'], master_name: bench}}}}\n")
        procs.append(sentinel)
        # Cluster: three masters, each in a directory of its own.
        cports = [free_port() for _ in range(3)]
        for cp in cports:
            os.makedirs(f"{d}/c{cp}")
            redis_node(cp, "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", cwd=f"{d}/c{cp}")
        subprocess.run(["redis-cli", "--no-auth-warning", "-a", password, "--cluster", "create",
                        *[f"127.0.0.1:{cp}" for cp in cports], "--cluster-replicas", "0", "--cluster-yes"],
                       check=True, capture_output=True)
        for cp in cports:
            for _ in range(200):
                if "cluster_state:ok" in cli(cp, "CLUSTER", "INFO"): break
                time.sleep(0.05)
        nodes = ", ".join(f"'127.0.0.1:{cp}'" for cp in cports)
        cluster, cluster_addr = start_tollgate(d, "cluster", "state: {store: redis, redis_url_file: redis-url, "
                                              f"cluster: {{nodes: [{nodes}]}}}}\n")
        procs.append(cluster)
        servers = {"local": local_addr, "redis": redis_addr, "sentinel": sentinel_addr, "cluster": cluster_addr}
        # Warm: one login per server fills its identity cache and yields a refresh token (valid on both: same
        # secret); one refresh each warms the revocation path.
        cases = {}
        for name, addr in servers.items():
            host, port = addr.rsplit(":", 1)
            conn = http.client.HTTPConnection(host, int(port))
            conn.request("GET", f"/token?{SCOPE}&offline_token=true&client_id=docker", headers={"Authorization": basic("alice", PASSWORD)})
            r = conn.getresponse(); body = json.loads(r.read())
            assert r.status == 200, body
            refresh = body["refresh_token"]
            assert get(conn, basic("alice", refresh))[0] == 200
            cases[name] = {"refresh grant": basic("alice", refresh), "password login (warm cache)": basic("alice", PASSWORD)}
        figures = {}
        for rnd in range(rounds):
            for case in ["refresh grant", "password login (warm cache)"]:
                order = list(servers)
                for name in (order if rnd % 2 == 0 else order[::-1]):
                    figures.setdefault((case, name), []).append(measure(servers[name], cases[name][case]))
        print(f"/token throughput, {clients} concurrent keep-alive clients, {rounds} rounds x {seconds:g} s per case "
              f"(median), release build, {os.cpu_count()} CPUs")
        names = list(servers)
        print(f"  {'case':30s} " + " ".join(f"{n + ' req/s':>15s}" for n in names)
              + f" {'redis/local':>12s} {'sentinel/redis':>15s} {'cluster/redis':>14s}")
        for case in ["refresh grant", "password login (warm cache)"]:
            m = {n: statistics.median(figures[(case, n)]) for n in names}
            print(f"  {case:30s} " + " ".join(f"{m[n]:15.0f}" for n in names)
                  + f" {m['redis'] / m['local']:12.2f} {m['sentinel'] / m['redis']:15.2f} {m['cluster'] / m['redis']:14.2f}")
    finally:
        for p in procs:
            p.terminate()
            p.wait(timeout=30)
PY
