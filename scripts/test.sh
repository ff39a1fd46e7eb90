#!/usr/bin/env bash
# The test command of tollgate: `bash scripts/test.sh [ARGS FOR cargo test...]`.
#
# On a Debian 12 machine (as root, or with sudo) it installs every tool the integration tests drive
# (docker-registry, skopeo, podman, containerd/ctr, the docker CLI, ...), builds the tests and runs ALL
# of them, then prints one summary line. It exits non-zero if anything fails. When everything is
# already installed it goes straight to cargo: no apt-get call at all.
#
# Examples:
#   bash scripts/test.sh               # everything
#   bash scripts/test.sh rig_selftest  # only tests whose name contains rig_selftest
#
# The tests never skip for a missing tool (they panic naming the package), so this script is the one
# place that makes a machine ready.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'test.sh: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------------------------------------------
# 1. System packages.
# ---------------------------------------------------------------------------------------------------

# Debian packages the tests need, checked with dpkg so the check is instant when they are there.
#   docker-registry  the registry under test (distribution 2.8), /usr/bin/docker-registry
#   skopeo, podman   containers/image clients; uidmap gives podman newuidmap/newgidmap
#   containerd       the containerd daemon and `ctr`
#   openssl          throwaway certificates for registry token auth
#   ca-certificates  HTTPS to crates.io and the package mirrors
#   gcc, libc6-dev   `ring` compiles C and assembly in its build script
#   docker-compose   validates the compose/ deployment files (`docker-compose -f F config -q`, no engine)
#   curl             an HTTPS client for the TLS listener tests
#   bsdutils         `script`: a pseudo-terminal for the hash-password prompt test
#   prometheus       `promtool`: checks and unit-tests the alert rules in compose/prometheus/
#   haproxy          the load balancer in front of two replicas started from compose/ (Traefik's stand-in)
#   wrk              HTTP load for the policy-size guard (tests/it/policy_scale.rs) and the benchmarks
#   slapd, ldap-utils  a private OpenLDAP per LDAP test (slapadd, ldapadd, ldapwhoami, ldapsearch)
#   glewlwyd         a real OpenID provider (password and device grants); dbconfig-no-thanks keeps its
#                    package from setting up a database server, sqlite3 loads the test databases
#   python3-venv     the virtualenv that holds kubernetes-validate (PyPI; see below)
#   samba            a private Samba 4 Active Directory domain controller per AD test (`samba`, `samba-tool`)
#   samba-ad-provision  the provisioning data `samba-tool domain provision` reads
#   samba-dsdb-modules  the directory database modules of the AD DC
#   samba-vfs-modules   only recommended by samba, yet provisioning fails without it (acl_xattr.so)
#   winbind, python3-samba  samba-tool's Python side and the DC's identity mapping
packages=(docker-registry redis-server skopeo podman containerd uidmap openssl ca-certificates gcc libc6-dev
          slapd ldap-utils glewlwyd dbconfig-no-thanks sqlite3 docker-compose curl bsdutils prometheus python3-venv haproxy wrk)
packages+=(samba samba-ad-provision samba-dsdb-modules samba-vfs-modules winbind python3-samba)

missing=()
for p in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
        missing+=("$p")
    fi
done
# Any docker CLI will do (the tests only use `docker login`, without a daemon); Debian's comes in
# docker.io, but a CLI installed another way (e.g. /usr/local/bin/docker) is used as is.
if ! command -v docker >/dev/null 2>&1; then
    missing+=(docker.io)
fi

if ((${#missing[@]})); then
    command -v apt-get >/dev/null 2>&1 ||
        die "missing ${missing[*]} and no apt-get: this script supports Debian 12; install them by hand"
    sudo=()
    if ((EUID != 0)); then
        command -v sudo >/dev/null 2>&1 || die "missing ${missing[*]}: run as root (or install sudo)"
        sudo=(sudo)
    fi
    # Installing docker.io, containerd and docker-registry would start their services: dockerd may fail
    # without cgroups (failing the whole apt-get), and the registry service takes port 5000. The
    # standard Debian policy-rc.d that answers 101 ("action forbidden") keeps them stopped; the tests
    # start private instances themselves. Only ours is removed again.
    policy=/usr/sbin/policy-rc.d
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\n# Written by tollgate scripts/test.sh during apt-get install.\nexit 101\n' |
            "${sudo[@]}" tee "$policy" >/dev/null
        "${sudo[@]}" chmod 755 "$policy"
        trap '"${sudo[@]}" rm -f "$policy"' EXIT
    fi
    # slapd's postinst would otherwise ask for a domain and create a system database; the tests run
    # private instances with their own cn=config.
    echo "slapd slapd/no_configuration boolean true" | "${sudo[@]}" debconf-set-selections
    # glewlwyd's default debconf answers make its install fail trying to configure PostgreSQL: answer
    # "no configuration" first (the tests give each instance its own config and SQLite database).
    if [[ " ${missing[*]} " == *" glewlwyd "* ]]; then
        printf '%s\n' 'glewlwyd glewlwyd/config_type select No configuration' \
            'glewlwyd glewlwyd/dbconfig-install boolean false' | "${sudo[@]}" debconf-set-selections
    fi
    log "installing ${missing[*]}"
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -q --no-install-recommends "${missing[@]}"
    if [[ $(trap -p EXIT) ]]; then
        "${sudo[@]}" rm -f "$policy"
        trap - EXIT
    fi
fi

# The OpenID provider the OIDC tests run (npm oidc-provider, tests/it/rig/oidc-provider/) needs the
# machine's Node.js and npm; Debian's nodejs works too when none is there.
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    command -v apt-get >/dev/null 2>&1 || die "node and npm are missing: install Node.js 20 or later"
    log "installing nodejs npm"
    sudo_=(); ((EUID == 0)) || sudo_=(sudo)
    "${sudo_[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends nodejs npm
fi
# Install exactly the locked versions, again only when the lockfile changed.
oidc_app=tests/it/rig/oidc-provider
if [[ ! -f $oidc_app/node_modules/.package-lock.json || $oidc_app/package-lock.json -nt $oidc_app/node_modules/.package-lock.json ]]; then
    log "npm ci in $oidc_app"
    (cd "$oidc_app" && npm ci --no-audit --no-fund --loglevel=error)
fi

# kubernetes-validate checks deploy/kubernetes/ against the Kubernetes schemas offline (tests/it/kube.rs).
# It lives in a virtualenv under target/ (gitignored), installed only when that exact version is missing;
# the tests find it through KUBERNETES_VALIDATE_BIN (not TOLLGATE_*: tollgate warns about those it ignores).
kube_venv=target/test-tools/venv
kube_validate=kubernetes-validate==1.37.0
if [[ $("$kube_venv/bin/kubernetes-validate" --version 2>/dev/null || true) != "${kube_validate#*==}" ]]; then
    log "pip install $kube_validate into $kube_venv"
    python3 -m venv "$kube_venv" || die "python3 -m venv failed: install python3-venv"
    "$kube_venv/bin/pip" install --quiet --disable-pip-version-check "$kube_validate"
fi
export KUBERNETES_VALIDATE_BIN="$PWD/$kube_venv/bin/kubernetes-validate"

# ---------------------------------------------------------------------------------------------------
# 2. Rust toolchain. Debian's own cargo is too old for this crate (rust-version in Cargo.toml), so a
#    rustup toolchain is expected; ~/.cargo/bin is where rustup puts it.
# ---------------------------------------------------------------------------------------------------
if ! command -v cargo >/dev/null 2>&1 && [[ -x ${CARGO_HOME:-$HOME/.cargo}/bin/cargo ]]; then
    PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
fi
command -v cargo >/dev/null 2>&1 ||
    die "cargo not found: install Rust with rustup (https://rustup.rs), then run this again"

# ---------------------------------------------------------------------------------------------------
# 3. Build, then run every test. --no-fail-fast so one failing binary does not hide the others.
# ---------------------------------------------------------------------------------------------------
export RUST_BACKTRACE="${RUST_BACKTRACE:-1}"
# Test output is read in CI logs: no colour codes unless this is a terminal.
if [[ -t 1 ]]; then export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-always}"; fi

start=$SECONDS
# Formatting is part of the check: unformatted code fails the run, before the long build.
if ! cargo fmt --version >/dev/null 2>&1; then
    command -v rustup >/dev/null 2>&1 || die "rustfmt missing and no rustup to install it with"
    rustup component add rustfmt
fi
log "cargo fmt --check"
cargo fmt --check || die "cargo fmt --check: the files above are not formatted; run cargo fmt"
# Lints are part of the check too (Cargo.toml [lints]: no unwrap or expect in production code).
if ! cargo clippy --version >/dev/null 2>&1; then
    command -v rustup >/dev/null 2>&1 || die "clippy missing and no rustup to install it with"
    rustup component add clippy
fi
log "cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets -- -D warnings || die "cargo clippy: fix the warnings above"
log "cargo build --tests"
cargo build --tests

results=$(mktemp)
trap 'rm -f "$results"' EXIT
status=0

run_tests() {
    log "cargo test $*"
    # tee keeps the live output; the copy is parsed for the summary. PIPESTATUS[0] is cargo's status
    # (read before any other command replaces it; set +e so a failure does not end the script here).
    set +e
    cargo test "$@" 2>&1 | tee -a "$results"
    local rc=${PIPESTATUS[0]}
    set -e
    if ((rc != 0)); then status=$rc; fi
}

run_tests --all-targets --no-fail-fast "$@"
# Doc tests are not part of --all-targets; run them too (quick when there are none).
if [[ -f src/lib.rs ]]; then
    run_tests --doc --no-fail-fast "$@"
fi

# ---------------------------------------------------------------------------------------------------
# 4. One summary line over every test binary: `test result: ok. 11 passed; 0 failed; 1 ignored; ...`
# ---------------------------------------------------------------------------------------------------
summary=$(awk '
    /^test result:/ {
        for (i = 1; i <= NF; i++) {
            if ($(i) ~ /^passed;?$/)  passed  += $(i-1)
            if ($(i) ~ /^failed;?$/)  failed  += $(i-1)
            if ($(i) ~ /^ignored;?$/) ignored += $(i-1)
        }
        binaries++
    }
    END { printf "%d passed, %d failed, %d ignored in %d test binaries", passed, failed, ignored, binaries }
' "$results")
elapsed=$((SECONDS - start))
if ((status == 0)); then
    printf '\ntest.sh: OK: %s (%ds)\n' "$summary" "$elapsed"
else
    printf '\ntest.sh: FAILED (cargo exit %d): %s (%ds)\n' "$status" "$summary" "$elapsed"
fi
exit "$status"
