#!/usr/bin/env bash
# Runs schemathesis against a real Vouch, restricted to the endpoints Vouch implements:
# no 5xx, every status documented for its endpoint, every body valid against its schema.
# Usage: conformance/run.sh [path to the vouch binary]   (default: target/debug/vouch)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
bin="${1:-${CARGO_TARGET_DIR:-$root/target}/debug/vouch}"
venv="${SCHEMATHESIS_VENV:-/var/tmp/vouch-schemathesis}"
if ! [ -x "$venv/bin/st" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q "schemathesis==4.32.5"
fi
work="$(mktemp -d)"
trap 'kill $(cat "$work/pid" 2>/dev/null) 2>/dev/null || true; rm -rf "$work"' EXIT
port=$(python3 -c "import socket; s=socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
cat >"$work/vouch.toml" <<TOML
server_name = "vouch.test"
[http]
listen = "127.0.0.1:$port"
[database]
url = "sqlite://$work/vouch.db"
[rate_limits]
enabled = false
[password]
argon2_m_cost_kib = 1024
argon2_t_cost = 1
TOML
"$bin" admin --config "$work/vouch.toml" create-user tester --password "tester battery staple" >/dev/null
# `exec`: the recorded PID is Vouch's own, so the trap above stops it (not only a subshell).
(cd "$work" && exec "$bin" serve --config "$work/vouch.toml" >"$work/log" 2>&1) &
echo $! >"$work/pid"
for _ in $(seq 1 100); do curl -fsS "http://127.0.0.1:$port/_matrix/client/versions" >/dev/null 2>&1 && break; sleep 0.1; done
token=$(curl -fsS -XPOST "http://127.0.0.1:$port/_matrix/client/v3/login" \
    -d '{"type":"m.login.password","identifier":{"type":"m.id.user","user":"tester"},"password":"tester battery staple"}' |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
python3 "$here/augment.py" "$root/crates/server/tests/spec/client-server-api.json" "$work/spec.json"

# The operations Vouch implements (see docs/ARCHITECTURE.md and the route table). Logout is
# left out: it would end the run's own session.
ops='^/_matrix/client/versions$|^/\.well-known/matrix/client$|^/_matrix/client/v3/capabilities$'
ops+='|^/_matrix/client/v3/login$|^/_matrix/client/v3/refresh$|^/_matrix/client/v3/account/whoami$'
ops+='|^/_matrix/client/v3/register(/available|/email/requestToken|/msisdn/requestToken)?$'
ops+='|^/_matrix/client/v1/register/m\.login\.registration_token/validity$'
ops+='|^/_matrix/client/v3/account/(password|deactivate|3pid|3pid/add|3pid/bind|3pid/unbind|3pid/delete)$'
ops+='|^/_matrix/client/v3/account/(password|3pid)/(email|msisdn)/requestToken$'
ops+='|^/_matrix/client/v3/(devices|devices/\{deviceId\}|delete_devices)$'
ops+='|^/_matrix/client/v3/profile/\{userId\}$'

cd "$work" # schemathesis keeps a cache in the working directory
"$venv/bin/st" run "$work/spec.json" \
    --url "http://127.0.0.1:$port" \
    --include-path-regex "$ops" \
    --header "Authorization: Bearer $token" \
    --checks not_a_server_error,status_code_conformance,response_schema_conformance,content_type_conformance \
    --phases examples,coverage,fuzzing \
    --max-examples "${SCHEMATHESIS_EXAMPLES:-30}" \
    --seed "${SCHEMATHESIS_SEED:-20261127}" \
    --workers 1 --no-color --warnings off
