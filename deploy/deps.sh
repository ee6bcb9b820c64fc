#!/bin/sh
# deps.sh - installs the Debian packages that building and testing smolmq
# need, only those missing. Run by `make deps` (and so by `make`, `make run`
# and `make test`). As root it installs with apt-get; otherwise it prints the
# exact command to run and fails. On a system without dpkg it lists what is
# needed and carries on (the build may still work).
#
# Each line: a Debian package, and a command or header whose presence means
# it is there already (so tools installed another way, e.g. pyenv's python3,
# are not installed twice).
set -u

need='
build-essential cmd:gcc
make            cmd:make
pkg-config      cmd:pkg-config
clang           cmd:clang
libclang-rt-14-dev file:/usr/lib/llvm-14/lib/clang/14.0.6/lib/linux/libclang_rt.fuzzer-x86_64.a
python3         cmd:python3
libpcre2-dev    file:/usr/include/pcre2.h
libzmq3-dev     file:/usr/include/zmq.h
libczmq-dev     file:/usr/include/czmq.h
libmsgpack-dev  file:/usr/include/msgpack.h
python3-zmq     file:/usr/lib/python3/dist-packages/zmq/__init__.py
python3-msgpack file:/usr/lib/python3/dist-packages/msgpack/__init__.py
libuv1-dev      file:/usr/include/uv.h
libhttp-parser-dev file:/usr/include/http_parser.h
libwslay-dev    file:/usr/include/wslay/wslay.h
libjansson-dev  file:/usr/include/jansson.h
python3-websockets file:/usr/lib/python3/dist-packages/websockets/__init__.py
curl            cmd:curl
chromium        cmd:chromium
nodejs          cmd:node
npm             cmd:npm
'

missing=""
have() {
    case "$1" in
    cmd:*) command -v "${1#cmd:}" >/dev/null 2>&1 ;;
    file:*) [ -e "${1#file:}" ] ;;
    esac
}
echo "$need" | while read -r pkg probe; do
    [ -n "$pkg" ] || continue
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
