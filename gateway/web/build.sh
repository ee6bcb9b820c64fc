#!/bin/sh
# build.sh OUT_DIR - bundles the web chat (src/) into OUT_DIR: index.html,
# app.js, app.css, theme.js, favicon.svg and the font. The Makefile runs it,
# then gateway/embed.py embeds OUT_DIR into the gateway binary.
#
# Installs the pinned npm packages (npm ci) when node_modules is missing or
# older than package-lock.json. Quiet on success; on failure it prints what
# went wrong and exits non-zero.
set -eu

if [ $# -ne 1 ] || [ -z "$1" ]; then
    echo "usage: sh gateway/web/build.sh OUT_DIR" >&2
    exit 2
fi
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$1"
out=$(cd "$1" && pwd)

die() {
    echo "gateway/web/build.sh: $*" >&2
    exit 1
}

command -v node >/dev/null 2>&1 || die "node is missing (apt-get install nodejs npm)"
command -v npm >/dev/null 2>&1 || die "npm is missing (apt-get install npm)"

log=$(mktemp)
trap 'rm -f "$log"' EXIT

cd "$here"
# npm writes node_modules/.package-lock.json on every install: it is the
# stamp of the last install.
stamp=node_modules/.package-lock.json
if [ ! -f "$stamp" ] || [ package-lock.json -nt "$stamp" ]; then
    if ! npm ci --no-audit --no-fund --loglevel=error >"$log" 2>&1; then
        cat "$log" >&2
        die "npm ci failed in gateway/web"
    fi
    touch "$stamp"
fi

esbuild=node_modules/.bin/esbuild
[ -x "$esbuild" ] || die "$esbuild is missing: remove gateway/web/node_modules and build again"

# Start from a clean set of what this script writes (the font's name has a hash).
rm -f "$out/index.html" "$out/app.js" "$out/app.css" "$out/theme.js" "$out/favicon.svg" "$out"/inter-*.woff2

run_esbuild() {
    if ! "$esbuild" --log-level=warning "$@" >"$log" 2>&1; then
        cat "$log" >&2
        die "esbuild failed"
    fi
    if [ -s "$log" ]; then
        # Warnings fail the build: they are bugs waiting to happen.
        cat "$log" >&2
        die "esbuild warned (see above)"
    fi
}

target=es2020,chrome100,firefox100,safari15
run_esbuild src/main.js --bundle --minify --format=esm --target="$target" \
    --legal-comments=eof --outfile="$out/app.js"
run_esbuild src/theme.js --minify --target="$target" --outfile="$out/theme.js"
run_esbuild src/styles.css --bundle --minify --target="$target" \
    --loader:.woff2=file --asset-names=[name]-[hash] --outfile="$out/app.css"

cp src/index.html src/favicon.svg "$out/"

# Every file must have an extension that gateway/embed.py knows.
for f in "$out"/*; do
    case "$f" in
        *.html|*.js|*.css|*.svg|*.png|*.ico|*.json|*.txt|*.woff2|*.map) ;;
        *) die "unexpected output file: $f" ;;
    esac
done
[ -s "$out/index.html" ] && [ -s "$out/app.js" ] && [ -s "$out/app.css" ] || die "missing output in $out"
