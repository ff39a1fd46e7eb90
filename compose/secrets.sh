#!/usr/bin/env bash
# Creates every secret the compose deployments read, and the files made from them:
#
#   bash compose/secrets.sh [DIR]          # DIR defaults to compose/secrets
#
# Each component reads its secret from DIR (mounted as a Docker secret or a read-only file):
#   ldap_admin_password.txt, ldap_bind_password.txt   OpenLDAP's admin, and tollgate's service account
#   ldap-passwords.ldif                              loaded by OpenLDAP at first start: the service
#                                                    account's and the example users' passwords ({SSHA})
#   keycloak_admin_password.txt, oidc_client_secret.txt, realm-tollgate.json
#                                                    Keycloak's admin; the realm with tollgate's client
#                                                    secret and the example users' passwords filled in
#   redis_password.txt, redis_url.txt                Redis (replicas) and the URL tollgate reads
#   signing.key, signing.crt, refresh_secret.txt     tollgate's token signing key and refresh secret
#   access_token_secret.txt                          the key of access-token hashes (shared by replicas)
#   accounts.yaml, robot-ci-payments.txt             tollgate's accounts file (a CI robot, hash only) and
#                                                    that robot's secret, for your CI settings
#   alice_password.txt, bob_password.txt             the example directory and realm users
#   tls-ca.crt, tls-ca.key, tls.crt, tls.key         a private CA and Traefik's certificate for
#                                                    registry., auth. and sso.example.com
#   grafana_admin_password.txt                       Grafana's admin
#
# A secret that exists is never replaced: delete its file and run again to rotate it (then restart what
# reads it). The files made from secrets (redis_url.txt, ldap-passwords.ldif, realm-tollgate.json) are
# written again on every run. DIR is made private to you (mode 0700); the files in it are 0644 so the
# containers' unprivileged users can read the ones mounted into them.
#
# Needs openssl and tollgate (to hash the robot's secret). Without tollgate on PATH, name the binary or
# the image: TOLLGATE=/path/to/tollgate, or TOLLGATE="docker run --rm -i tollgate:latest tollgate" after
# `docker compose build`.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="${1:-$here/secrets}"
read -r -a tollgate <<<"${TOLLGATE:-tollgate}"

die() { printf 'secrets.sh: %s\n' "$*" >&2; exit 1; }
command -v openssl >/dev/null || die "openssl is needed (Debian: apt-get install openssl)"

mkdir -p "$out"
chmod 700 "$out"
cd "$out"
created=()

# A random secret in FILE (hex, no newline), unless FILE exists.
secret() {
    local file=$1 bytes=${2:-24}
    [[ -s $file ]] && return 0
    openssl rand -hex "$bytes" | tr -d '\n' >"$file.tmp"
    chmod 644 "$file.tmp"
    mv "$file.tmp" "$file"
    created+=("$file")
}

# Write stdin to FILE (mode 0644) through a temporary file, so a failed run leaves no half file.
write() {
    cat >"$1.tmp"
    chmod 644 "$1.tmp"
    mv "$1.tmp" "$1"
}

# An RFC 2307 {SSHA} hash of a password, as slapd checks it: base64(SHA-1(password + salt) + salt).
ssha() {
    local salt
    salt=$(openssl rand -hex 8 | sed 's/../\\x&/g')
    printf '{SSHA}%s' "$({ { printf '%s' "$1"; printf '%b' "$salt"; } | openssl dgst -sha1 -binary; printf '%b' "$salt"; } | openssl base64 -A)"
}

for name in ldap_admin_password ldap_bind_password keycloak_admin_password oidc_client_secret \
            grafana_admin_password redis_password alice_password bob_password; do
    secret "$name.txt"
done
secret refresh_secret.txt 32
secret access_token_secret.txt 32
secret robot-ci-payments.txt 32

# The token signing key (EC P-256, PKCS#8) and its self-signed certificate: the registry trusts the
# certificate through the bundle `tollgate registry-config` writes.
if [[ ! -s signing.key ]]; then
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out signing.key.tmp 2>/dev/null
    openssl req -new -x509 -key signing.key.tmp -subj "/CN=tollgate token signing" -days 3650 \
        -out signing.crt.tmp 2>/dev/null
    chmod 644 signing.key.tmp signing.crt.tmp
    mv signing.crt.tmp signing.crt
    mv signing.key.tmp signing.key
    created+=(signing.key signing.crt)
fi

# Traefik's certificate, from a private CA (clients and tollgate trust tls-ca.crt). With certificates
# from a public CA, put them in tls.crt and tls.key instead and drop ca_file from the tollgate config.
if [[ ! -s tls.crt ]]; then
    openssl req -new -x509 -nodes -newkey ec -pkeyopt ec_paramgen_curve:P-256 -keyout tls-ca.key.tmp \
        -subj "/CN=tollgate example CA" -days 3650 -addext basicConstraints=critical,CA:TRUE \
        -addext keyUsage=critical,keyCertSign,cRLSign -out tls-ca.crt.tmp 2>/dev/null
    openssl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:P-256 -keyout tls.key.tmp \
        -subj "/CN=registry.example.com" -out tls.csr 2>/dev/null
    printf '%s\n' 'basicConstraints=critical,CA:FALSE' 'extendedKeyUsage=serverAuth' \
        'subjectAltName=DNS:registry.example.com,DNS:auth.example.com,DNS:sso.example.com' >tls.ext
    openssl x509 -req -in tls.csr -CA tls-ca.crt.tmp -CAkey tls-ca.key.tmp -CAcreateserial -days 825 \
        -extfile tls.ext -out tls.crt.tmp 2>/dev/null
    rm -f tls.csr tls.ext tls-ca.crt.srl tls-ca.srl
    chmod 644 tls-ca.crt.tmp tls.crt.tmp tls.key.tmp
    chmod 600 tls-ca.key.tmp
    mv tls-ca.key.tmp tls-ca.key
    mv tls-ca.crt.tmp tls-ca.crt
    mv tls.key.tmp tls.key
    mv tls.crt.tmp tls.crt
    created+=(tls-ca.crt tls-ca.key tls.crt tls.key)
fi

# tollgate's accounts file: one CI robot. Add more with `tollgate robot add NAME --groups ... --config`.
if [[ ! -s accounts.yaml ]]; then
    hash=$(printf '%s' "$(cat robot-ci-payments.txt)" | "${tollgate[@]}" hash-password) ||
        die "cannot run '${tollgate[*]} hash-password': set TOLLGATE (see the top of this script)"
    [[ $hash == '$argon2id$'* ]] || die "'${tollgate[*]} hash-password' printed no argon2id hash: $hash"
    write accounts.yaml <<EOF
# tollgate's accounts (compose/secrets.sh): hashes only; the robot's secret is in robot-ci-payments.txt.
accounts:
  - username: ci-payments
    password_hash: "$hash"
    groups: [robots, ci-payments]
    robot: true
    description: payments CI pipeline (example robot made by compose/secrets.sh)
EOF
    created+=(accounts.yaml)
fi

# Made from the secrets above on every run.
printf 'redis://:%s@redis:6379/0' "$(cat redis_password.txt)" | write redis_url.txt

write ldap-passwords.ldif <<EOF
# Passwords for the entries of compose/openldap/10-directory.ldif (compose/secrets.sh; {SSHA} hashes).
dn: cn=tollgate,ou=services,dc=example,dc=com
changetype: modify
replace: userPassword
userPassword: $(ssha "$(cat ldap_bind_password.txt)")

dn: uid=alice,ou=people,dc=example,dc=com
changetype: modify
replace: userPassword
userPassword: $(ssha "$(cat alice_password.txt)")

dn: uid=bob,ou=people,dc=example,dc=com
changetype: modify
replace: userPassword
userPassword: $(ssha "$(cat bob_password.txt)")
EOF

sed -e "s/@OIDC_CLIENT_SECRET@/$(cat oidc_client_secret.txt)/" \
    -e "s/@ALICE_PASSWORD@/$(cat alice_password.txt)/" \
    -e "s/@BOB_PASSWORD@/$(cat bob_password.txt)/" \
    "$here/keycloak/realm-tollgate.json" | write realm-tollgate.json
if grep -n '@[A-Z_]*@' realm-tollgate.json; then
    die "realm-tollgate.json: a placeholder above has no secret"
fi

if ((${#created[@]})); then
    printf 'created in %s: %s\n' "$out" "${created[*]}"
else
    printf 'every secret already exists in %s (delete a file and run again to rotate it)\n' "$out"
fi
printf 'written again: redis_url.txt ldap-passwords.ldif realm-tollgate.json\n'
printf 'the CI robot: ci-payments, secret in %s/robot-ci-payments.txt\n' "$out"
