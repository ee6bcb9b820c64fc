#!/bin/bash
# run.sh - a local cluster: one broker, WORKERS workers and a gateway, on
# this machine, until Ctrl-C (what `make run` starts).
#
#   deploy/run.sh [BUILD_DIR]
#
# Environment:
#   MODEL=path.gguf   the model to serve (default: the built-in tiny model,
#                     made once with `smolmq synth --preset tiny`: random
#                     weights, the real SmolLM3 tokenizer and chat template)
#   WORKERS=N         workers to start (default 1); each takes the GPU when
#                     there is one and the model fits (--backend auto)
#   HTTP=HOST:PORT    where the gateway listens (default 127.0.0.1:8080)
#   BROKER_CLIENTS, BROKER_WORKERS   the broker's endpoints
#                     (default tcp://127.0.0.1:5555 and :5556)
#   LOGS=DIR          where the processes' logs go (default BUILD_DIR/logs)
#
# Ctrl-C (or SIGTERM) stops the gateway, then the workers, then the broker,
# each with SIGTERM (they drain), and waits for them. If one of them exits on
# its own, the others are stopped too and its log's tail is printed.
set -u
BUILD=${1:-build}
BIN=$BUILD/bin
WORKERS=${WORKERS:-1}
HTTP=${HTTP:-127.0.0.1:8080}
BROKER_CLIENTS=${BROKER_CLIENTS:-tcp://127.0.0.1:5555}
BROKER_WORKERS=${BROKER_WORKERS:-tcp://127.0.0.1:5556}
LOGS=${LOGS:-$BUILD/logs}

say() { echo "smolmq run: $*" >&2; }
die() { say "$*"; exit 1; }

case "$WORKERS" in '' | *[!0-9]* | 0) die "WORKERS wants a number of workers (1 or more), not \"$WORKERS\"" ;; esac
for b in smolmq smolmq-broker smolmq-worker smolmq-gateway; do
    [ -x "$BIN/$b" ] || die "$BIN/$b is missing: run make first"
done

MODEL=${MODEL:-}
if [ -z "$MODEL" ]; then
    MODEL=$BUILD/models/smolmq-tiny.gguf
    if [ ! -f "$MODEL" ]; then
        mkdir -p "$(dirname "$MODEL")"
        "$BIN/smolmq" synth --preset tiny --seed 1 --out "$MODEL" >/dev/null || die "cannot make the built-in model"
    fi
    say "serving the built-in tiny model: random weights, so its words are random (MODEL=path.gguf for a real one)"
fi
[ -f "$MODEL" ] || die "MODEL=$MODEL: no such file"

mkdir -p "$LOGS"
pids=()
names=()
start() { # NAME LOG COMMAND...
    local name=$1 log=$2
    shift 2
    "$@" >"$log" 2>&1 &
    pids+=($!)
    names+=("$name")
}

stopping=0
stop_all() {
    stopping=1
    # The gateway first (no new requests), then workers (they finish what
    # they run), then the broker.
    for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
        kill -TERM "${pids[$i]}" 2>/dev/null
        for _ in $(seq 100); do kill -0 "${pids[$i]}" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "${pids[$i]}" 2>/dev/null
        wait "${pids[$i]}" 2>/dev/null
    done
}
trap 'say "stopping"; stop_all; say "stopped"; exit 0' INT TERM

start broker "$LOGS/broker.log" "$BIN/smolmq-broker" --clients "$BROKER_CLIENTS" --workers "$BROKER_WORKERS"
threads=$(($(nproc) / WORKERS))
[ "$threads" -ge 1 ] || threads=1
for ((w = 0; w < WORKERS; w++)); do
    gpu=()
    [ "$WORKERS" -gt 1 ] && gpu=(--gpu "$w")
    # --gpu only matters where there are GPUs; on the CPU the cores are shared out.
    start "worker $w" "$LOGS/worker-$w.log" "$BIN/smolmq-worker" --model "$MODEL" --broker "$BROKER_WORKERS" \
        --threads "$threads" --name "worker-$w" "${gpu[@]}"
done
start gateway "$LOGS/gateway.log" "$BIN/smolmq-gateway" --listen "$HTTP" --broker "$BROKER_CLIENTS"

# Ready when the gateway says at least one worker has room.
for _ in $(seq 600); do
    if curl -fsS "http://$HTTP/readyz" >/dev/null 2>&1; then
        say "ready: open http://$HTTP/  (logs in $LOGS; Ctrl-C stops everything)"
        echo "http://$HTTP/"
        break
    fi
    for i in "${!pids[@]}"; do
        if ! kill -0 "${pids[$i]}" 2>/dev/null; then
            say "${names[$i]} exited while starting; its log:"
            tail -n 20 "$LOGS/$(echo "${names[$i]}" | tr ' ' '-').log" >&2
            stop_all
            exit 1
        fi
    done
    sleep 0.2
done

# Until one of them exits on its own (or a signal runs the trap).
while :; do
    wait -n 2>/dev/null
    [ "$stopping" = 1 ] && exit 0
    for i in "${!pids[@]}"; do
        if ! kill -0 "${pids[$i]}" 2>/dev/null; then
            say "${names[$i]} exited; stopping the others. Its log:"
            tail -n 20 "$LOGS/$(echo "${names[$i]}" | tr ' ' '-').log" >&2
            stop_all
            exit 1
        fi
    done
done
