#!/usr/bin/env bash
# Vouch and Synapse side by side: vouch-bench's table mode (`--target`) against each server
# in turn on this machine, the same generator, the same SMTP sink, both on SQLite with
# bcrypt cost 12, rate limits off, each measured on an otherwise idle machine, RUNS times.
#
#   cargo build --release -p vouch -p vouch-bench
#   bash crates/bench/side-by-side.sh            # tables on stdout, JSON in $OUT (./side-by-side)
#
# Needs Synapse in a virtual environment (VOUCH_TEST_SYNAPSE_VENV, default
# /var/tmp/synapse-venv; `.ci/run` installs the pinned release there) and curl.
set -euo pipefail
cd "$(dirname "$0")/../.."

bin="${CARGO_TARGET_DIR:-target}/release"
venv="${VOUCH_TEST_SYNAPSE_VENV:-/var/tmp/synapse-venv}"
runs="${RUNS:-3}"
duration="${DURATION:-5}"
out="${OUT:-side-by-side}"
password="bench battery staple"
mkdir -p "$out"
work="$(mktemp -d)"
server_pid=""
cleanup() {
    if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
wait_for() {
    for _ in $(seq 1 600); do
        curl -fs -o /dev/null "$1/_matrix/client/versions" && return 0
        sleep 0.1
    done
    echo "$1 did not start" >&2
    return 1
}
measure() { # name base
    for i in $(seq 1 "$runs"); do
        echo "### $1, run $i"
        "$bin/vouch-bench" --target "$2" --target-pid "$server_pid" --smtp-port "$smtp" \
            --duration "$duration" --user bench --password "$password" --out "$out/$1-$i.json"
        sleep 2
    done
}
smtp="$(free_port)"

# Vouch on its defaults plus what the comparison needs.
port="$(free_port)"
cat > "$work/vouch.toml" <<EOF
server_name = "bench.example"
public_baseurl = "http://127.0.0.1:$port/"
[http]
listen = "127.0.0.1:$port"
[database]
url = "sqlite://$work/vouch.db"
[rate_limits]
enabled = false
[password]
scheme = "bcrypt"
bcrypt_cost = 12
[sms]
enabled = false
[email]
transport = "smtp"
from = "Bench <noreply@bench.example>"
[email.smtp]
host = "127.0.0.1"
port = $smtp
tls = "none"
[logging]
level = "warn"
EOF
"$bin/vouch" admin --config "$work/vouch.toml" create-user bench --password "$password" >/dev/null
RUST_LOG=warn "$bin/vouch" serve --config "$work/vouch.toml" >"$work/vouch.log" 2>&1 &
server_pid=$!
wait_for "http://127.0.0.1:$port"
measure vouch "http://127.0.0.1:$port"
kill "$server_pid"; wait "$server_pid" 2>/dev/null || true; server_pid=""

# Synapse, standalone, on the same terms.
port="$(free_port)"
mkdir -p "$work/synapse"
cat > "$work/synapse/homeserver.yaml" <<EOF
server_name: "bench.example"
public_baseurl: "http://127.0.0.1:$port/"
pid_file: "$work/synapse/hs.pid"
report_stats: false
listeners:
  - port: $port
    bind_addresses: ["127.0.0.1"]
    type: http
    tls: false
    resources:
      - names: [client]
        compress: false
database:
  name: sqlite3
  args:
    database: "$work/synapse/homeserver.db"
media_store_path: "$work/synapse/media"
signing_key_path: "$work/synapse/signing.key"
log_config: "$work/synapse/log.yaml"
trusted_key_servers: []
suppress_key_server_warning: true
enable_metrics: false
registration_shared_secret: "bench-shared-secret"
bcrypt_rounds: 12
email:
  smtp_host: "127.0.0.1"
  smtp_port: $smtp
  force_tls: false
  require_transport_security: false
  enable_tls: false
  notif_from: "Bench <noreply@bench.example>"
rc_message: {per_second: 100000, burst_count: 100000}
rc_registration: {per_second: 100000, burst_count: 100000}
rc_login:
  address: {per_second: 100000, burst_count: 100000}
  account: {per_second: 100000, burst_count: 100000}
  failed_attempts: {per_second: 100000, burst_count: 100000}
rc_3pid_validation: {per_second: 100000, burst_count: 100000}
EOF
printf 'version: 1\nroot:\n  level: WARNING\n  handlers: []\ndisable_existing_loggers: false\n' > "$work/synapse/log.yaml"
"$venv/bin/python" -m synapse.app.homeserver -c "$work/synapse/homeserver.yaml" --generate-keys >/dev/null
"$venv/bin/python" -m synapse.app.homeserver -c "$work/synapse/homeserver.yaml" >"$work/synapse.log" 2>&1 &
server_pid=$!
wait_for "http://127.0.0.1:$port"
"$venv/bin/register_new_matrix_user" -u bench -p "$password" --no-admin -k bench-shared-secret "http://127.0.0.1:$port" >/dev/null
measure synapse "http://127.0.0.1:$port"
