#!/bin/sh
# cuda_profile.sh - where the CUDA backend's time goes: Nsight Compute times
# every kernel of four `smolmq bench` runs (each kernel alone, caches and
# clocks left as they are), written as gzipped CSV into DIR for
# bench/ncu_summary.py. For a GPU host where the binaries were carried (as
# cuda_device_check.sh: from the repository or from a gpu-bundle folder).
#
#   sh bench/cuda_profile.sh DIR [RUN...]
#
# Runs (all, or those named): ncu_b1, batch-1 decode after a 128-token
# prompt (no graph, so each kernel is seen); ncu_b1_fused, the same with
# SMQ_CUDA_FUSE_NORM=1; ncu_b64, 64 sequences decoding; ncu_p4096, a
# 4096-token prompt. Model: the synthetic SmolLM3-3B at /tmp/3b.gguf, made
# if missing. bench/ncu_summary.py reads the files.
set -u
DIR=${1:?usage: cuda_profile.sh DIR [RUN...]}
shift
RUNS=${*:-ncu_b1 ncu_b1_fused ncu_b64 ncu_p4096}
mkdir -p "$DIR"
if [ -x bin/smolmq ] && [ ! -d build ]; then BIN=bin; else BIN=build/bin; fi
[ -f /tmp/3b.gguf ] || $BIN/smolmq synth --preset smollm3-3b --seed 1 --out /tmp/3b.gguf \
    --vocab "${SMQ_TEST_DATA:-tests/data}/models/smollm3-tiny-q4_k_m.gguf" >/dev/null || exit 1
B="$BIN/smolmq bench --model /tmp/3b.gguf --backend cuda"
NCU="ncu --clock-control none --cache-control none --csv --metrics gpu__time_duration.sum,dram__bytes_read.sum,dram__bytes_write.sum"
prof() {
    name=$1
    shift
    case " $RUNS " in *" $name "*) ;; *) return 0 ;; esac
    echo "== ncu $name: $*"
    timeout 120 env SMQ_CUDA_GRAPHS=0 "$@" >"$DIR/$name.csv" 2>"$DIR/$name.err"
    echo "rc $?, $(wc -l <"$DIR/$name.csv") lines"
    tail -3 "$DIR/$name.err"
    gzip -f "$DIR/$name.csv"
    rm -f "$DIR/$name.err"
}
prof ncu_b1 $NCU $B --prompt-len 128 --gen 6
prof ncu_b1_fused env SMQ_CUDA_FUSE_NORM=1 $NCU $B --prompt-len 128 --gen 6
prof ncu_b64 $NCU $B --prompt-len 128 --gen 4 --batch 64
prof ncu_p4096 $NCU $B --prompt-len 4096 --gen 2
