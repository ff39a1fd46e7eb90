#!/usr/bin/env python3
"""Load figures for the operations features: what a failed login, a rate-limited (429) request and a cached
login cost, measured against the same running tollgate, as ratios to a baseline taken in the same run
(an anonymous token request). Prints figures; asserts nothing about speed.

Usage: python3 scripts/load-ops.py [path/to/tollgate] [requests-per-case]
"""
import base64, http.client, os, re, subprocess, sys, tempfile, threading, time

binary = sys.argv[1] if len(sys.argv) > 1 else "target/release/tollgate"
n = int(sys.argv[2]) if len(sys.argv) > 2 else 200
password = "load-test-password"

def basic(user, pw):
    return "Basic " + base64.b64encode(f"{user}:{pw}".encode()).decode()

with tempfile.TemporaryDirectory() as d:
    h = subprocess.run([binary, "hash-password"], input=password, capture_output=True, text=True, check=True).stdout.strip()
    open(f"{d}/accounts.yaml", "w").write(f'accounts:\n  - username: alice\n    password_hash: "{h}"\n    groups: [team-payments]\n')
    open(f"{d}/config.yaml", "w").write(
        "server: {listen: 127.0.0.1:0, data_dir: data, trusted_proxies: [127.0.0.1]}\n"
        "token: {issuer: load, services: [registry.load]}\n"
        "providers: [{type: static, name: local, file: accounts.yaml}]\n"
        "policy: {builtin_example: true}\n"
        "rate_limit: {ip_failures: 5, account_failures: 1000000, window: 1h}\n"
        "log: {level: warn}\n")
    env = dict(os.environ, TOLLGATE_LOG="info")
    proc = subprocess.Popen([binary, "serve", "--config", f"{d}/config.yaml"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env=env)
    try:
        addr = None
        for line in proc.stderr:
            m = re.search(r"addr=(\S+).*tollgate listening|tollgate listening.*addr=(\S+)", line)
            if m:
                addr = m.group(1) or m.group(2)
                break
        # Keep draining the log (one audit line per request), or the server blocks on a full pipe.
        threading.Thread(target=lambda: [None for _ in proc.stderr], daemon=True).start()
        host, port = addr.rsplit(":", 1)

        def run(name, auth, xff_for):
            conn = http.client.HTTPConnection(host, int(port))
            statuses = {}
            start = time.perf_counter()
            for i in range(n):
                headers = {"X-Forwarded-For": xff_for(i)}
                a = auth(i) if callable(auth) else auth
                if a:
                    headers["Authorization"] = a
                conn.request("GET", "/token?service=registry.load&scope=repository:payments/api:pull", headers=headers)
                r = conn.getresponse()
                r.read()
                statuses[r.status] = statuses.get(r.status, 0) + 1
            per = (time.perf_counter() - start) / n
            return name, per, statuses

        results = [
            run("anonymous (baseline)", None, lambda i: "192.0.2.1"),
            run("cached login", basic("alice", password), lambda i: "192.0.2.2"),
            # a new wrong password each time, each from a fresh address: every one pays a full hash check
            # (a repeated wrong password is answered by the identity cache's negative entries)
            run("wrong password", lambda i: basic("alice", f"wrong-{i}"),
                lambda i: f"10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}"),
            # one address: 5 failures, then only 429s that check no password
            run("wrong password, rate limited", lambda i: basic("alice", f"guess-{i}"), lambda i: "198.51.100.9"),
        ]
        base = results[0][1]
        print(f"{n} sequential requests per case against {binary}")
        for name, per, statuses in results:
            print(f"  {name:32s} {per * 1000:8.3f} ms/request  x{per / base:7.2f} baseline  statuses {statuses}")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
