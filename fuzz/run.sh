#!/usr/bin/env bash
# Builds the cargo-fuzz targets with nightly and runs each for a short, fixed time
# (FUZZ_SECONDS, default 20). Longer runs: see docs/SECURITY.md.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! rustup toolchain list | grep -q '^nightly'; then
    echo "fuzz: this machine has no nightly toolchain (cargo fuzz needs one); skipped"
    exit 0
fi
command -v cargo-fuzz >/dev/null 2>&1 || cargo install --locked cargo-fuzz
target_dir="${FUZZ_TARGET_DIR:-/var/tmp/vouch-fuzz-target}"
seconds="${FUZZ_SECONDS:-20}"
for target in request_bodies email_canonical phone_numbers next_link mail_builder; do
    mkdir -p "fuzz/corpus/$target"
    echo "== fuzz $target (${seconds}s)"
    log="$(mktemp)"
    if ! cargo +nightly fuzz run -O --target-dir "$target_dir" "$target" "fuzz/corpus/$target" fuzz/seeds -- \
        -max_total_time="$seconds" -rss_limit_mb=4096 >"$log" 2>&1; then
        cat "$log"
        echo "fuzz: $target found a crash; its input is in fuzz/artifacts/$target/"
        exit 1
    fi
    grep -E '^(#[0-9]+|Done)' "$log" | tail -n 2
done
