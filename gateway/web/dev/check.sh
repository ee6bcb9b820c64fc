#!/bin/sh
# check.sh [SHOTS_DIR] - builds the web chat and drives it in headless Chromium
# against the fake gateway (fake_server.py), saving screenshots to SHOTS_DIR
# (default: build/web-check in the repository). Needs python3 and Debian's
# chromium (apt-get install chromium); CHROMIUM=path picks another binary.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
web=$(dirname "$here")
repo=$(cd "$web/../.." && pwd)
shots=${1:-$repo/build/web-check}
site=$(mktemp -d)
trap 'rm -rf "$site"' EXIT
sh "$web/build.sh" "$site"
cd "$web"
node --test dev/sse.test.mjs >/dev/null || node --test dev/sse.test.mjs
node dev/check.mjs "$site" "$shots"
