#!/bin/sh
# deps.sh - installs the Debian packages smolmq needs, only those missing.
#
#   deploy/deps.sh           building and testing (what `make deps` runs, and
#                            so `make`, `make run` and `make test`)
#   deploy/deps.sh --build   building the programs only (no test tools: the
#                            container image's build stage)
#   deploy/deps.sh --run     running the built programs (their shared
#                            libraries, and curl for health checks: the
#                            container image's runtime stage)
#
# As root it installs with apt-get; otherwise it prints the exact command to
# run and fails. On a system without dpkg it lists what is needed and carries
# on (the build may still work).
#
# Each line: a Debian package, the sets it belongs to (b: build, t: test, r:
# run), and a command or file whose presence means it is there already (so
# tools installed another way, e.g. pyenv's python3, are not installed twice).
set -u

case "${1:-}" in
'') want=bt ;;
--build) want=b ;;
--run) want=r ;;
*) echo "usage: deploy/deps.sh [--build | --run]" >&2; exit 2 ;;
esac

need='
build-essential    bt  cmd:gcc
make               bt  cmd:make
pkg-config         bt  cmd:pkg-config
clang              t   cmd:clang
libclang-rt-14-dev t   file:/usr/lib/llvm-14/lib/clang/14.0.6/lib/linux/libclang_rt.fuzzer-x86_64.a
python3            bt  cmd:python3
libpcre2-dev       bt  file:/usr/include/pcre2.h
libzmq3-dev        bt  file:/usr/include/zmq.h
libczmq-dev        bt  file:/usr/include/czmq.h
libmsgpack-dev     bt  file:/usr/include/msgpack.h
python3-zmq        t   file:/usr/lib/python3/dist-packages/zmq/__init__.py
python3-msgpack    t   file:/usr/lib/python3/dist-packages/msgpack/__init__.py
libuv1-dev         bt  file:/usr/include/uv.h
libhttp-parser-dev bt  file:/usr/include/http_parser.h
libwslay-dev       bt  file:/usr/include/wslay/wslay.h
libjansson-dev     bt  file:/usr/include/jansson.h
python3-websockets t   file:/usr/lib/python3/dist-packages/websockets/__init__.py
python3-yaml       t   file:/usr/lib/python3/dist-packages/yaml/__init__.py
curl               tr  cmd:curl
chromium           t   cmd:chromium
nodejs             bt  cmd:node
npm                bt  cmd:npm
ca-certificates    br  file:/etc/ssl/certs/ca-certificates.crt
libpcre2-8-0       r   lib:libpcre2-8.so.0
libzmq5            r   lib:libzmq.so.5
libczmq4           r   lib:libczmq.so.4
libmsgpackc2       r   lib:libmsgpackc.so.2
libuv1             r   lib:libuv.so.1
libhttp-parser2.9  r   lib:libhttp_parser.so.2.9
libwslay1          r   lib:libwslay.so.1
libjansson4        r   lib:libjansson.so.4
'

missing=""
have() {
    case "$1" in
    cmd:*) command -v "${1#cmd:}" >/dev/null 2>&1 ;;
    file:*) [ -e "${1#file:}" ] ;;
    lib:*) for f in /usr/lib/*-linux-gnu/"${1#lib:}" /usr/lib/"${1#lib:}"; do [ -e "$f" ] && return 0; done; return 1 ;;
    esac
}
echo "$need" | while read -r pkg sets probe; do
    [ -n "$pkg" ] || continue
    case "$sets" in *["$want"]*) ;; *) continue ;; esac
    have "$probe" || echo "$pkg"
done > /tmp/smolmq-deps.$$
missing=$(tr '\n' ' ' < /tmp/smolmq-deps.$$)
rm -f /tmp/smolmq-deps.$$
missing=$(echo $missing)

# The fuzzer runtime's path carries clang's exact version; accept any.
case " $missing " in *" libclang-rt-14-dev "*)
    if ls /usr/lib/llvm-*/lib/clang/*/lib/linux/libclang_rt.fuzzer-x86_64.a >/dev/null 2>&1; then
        missing=$(echo " $missing " | sed 's/ libclang-rt-14-dev / /'); missing=$(echo $missing)
    fi ;;
esac

[ -z "$missing" ] && exit 0

if ! command -v apt-get >/dev/null 2>&1; then
    echo "deps: not a Debian system; make sure these (Debian names) are installed: $missing" >&2
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "deps: missing packages: $missing" >&2
    echo "deps: run:  sudo apt-get update && sudo apt-get install -y --no-install-recommends $missing" >&2
    exit 1
fi
echo "deps: installing $missing"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq && apt-get install -y -qq --no-install-recommends $missing
