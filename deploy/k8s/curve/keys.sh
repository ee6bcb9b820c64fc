#!/bin/sh
# keys.sh - CURVE keys for smolmq on Kubernetes: prints the Secret
# smolmq-curve (YAML) that the curve component mounts.
#
#   sh deploy/k8s/curve/keys.sh | kubectl apply -f -
#
# It holds the broker's certificate (secret and public key), one certificate
# for the workers and one for the gateways, the allow-lists of their public
# keys (the broker admits only those), and the broker's public key in Z85
# for the others' --broker-key. SMQ_BROKER_BIN names the smolmq-broker that
# makes them (default: the one on PATH, else build/bin's). Keep the output
# secret: it holds secret keys.
set -eu
broker=${SMQ_BROKER_BIN:-$(command -v smolmq-broker || echo build/bin/smolmq-broker)}
[ -x "$broker" ] || { echo "keys.sh: no smolmq-broker at $broker (make, or set SMQ_BROKER_BIN)" >&2; exit 1; }
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
public() { sed -n 's/^ *public-key = "\(.*\)"$/\1/p' "$1"; }
for c in broker worker gateway; do
    "$broker" --keygen "$dir/$c.cert" >/dev/null
done
# broker-key goes into an environment variable: no newline.
public "$dir/broker.cert.pub" | tr -d '\n' >"$dir/broker-key"
public "$dir/worker.cert.pub" >"$dir/worker-keys"
public "$dir/gateway.cert.pub" >"$dir/client-keys"
for f in broker-key worker-keys client-keys; do
    [ "$(tr -d '\n' <"$dir/$f" | wc -c)" -eq 40 ] || { echo "keys.sh: no public key read for $f" >&2; exit 1; }
done
printf 'apiVersion: v1\nkind: Secret\nmetadata:\n  name: smolmq-curve\ntype: Opaque\ndata:\n'
for f in broker.cert worker.cert gateway.cert broker-key worker-keys client-keys; do
    printf '  %s: %s\n' "$f" "$(base64 -w0 <"$dir/$f")"
done
