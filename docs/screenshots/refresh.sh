#!/usr/bin/env bash
# Refreshes the screenshots of the OAuth 2.0 pages in this folder (a phone-sized and a
# desktop window each), taken by the headless-Chromium test as it signs a user up and in.
# Needs what the test needs: chromium, chromium-driver, and axe-core (`.ci/run` installs them).
set -euo pipefail
cd "$(dirname "$0")/../.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/vouch-target}"
VOUCH_TEST_BROWSER=1 VOUCH_TEST_SCREENSHOTS="$PWD/docs/screenshots" \
    cargo test -p vouch --test api -- browser::oauth_sign_up_and_sign_in_in_headless_chromium --exact
ls -1 docs/screenshots/*.png
