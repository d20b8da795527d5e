#!/usr/bin/env bash
# Builds the cargo-fuzz targets with nightly and runs each one. By default (CI) the run is
# reproducible: a fixed seed and a fixed number of inputs (FUZZ_RUNS, default 100000) from
# the committed seeds, so the same commit always passes or always fails. FUZZ_SECONDS=N
# explores instead: a random seed for N seconds per target (see docs/SECURITY.md).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! rustup toolchain list | grep -q '^nightly'; then
    echo "fuzz: this machine has no nightly toolchain (cargo fuzz needs one); skipped"
    exit 0
fi
command -v cargo-fuzz >/dev/null 2>&1 || cargo install --locked cargo-fuzz
target_dir="${FUZZ_TARGET_DIR:-/var/tmp/vouch-fuzz-target}"
if [ -n "${FUZZ_SECONDS:-}" ]; then
    budget=(-max_total_time="$FUZZ_SECONDS")
else
    budget=(-seed=1 -runs="${FUZZ_RUNS:-100000}")
fi
for target in request_bodies email_canonical phone_numbers next_link mail_builder; do
    mkdir -p "fuzz/corpus/$target"
    echo "== fuzz $target (${budget[*]})"
    log="$(mktemp)"
    if ! cargo +nightly fuzz run -O --target-dir "$target_dir" "$target" "fuzz/corpus/$target" fuzz/seeds -- \
        "${budget[@]}" -rss_limit_mb=4096 >"$log" 2>&1; then
        cat "$log"
        echo "fuzz: $target found a crash; its input is in fuzz/artifacts/$target/"
        exit 1
    fi
    grep -E '^(#[0-9]+|Done)' "$log" | tail -n 2
done
