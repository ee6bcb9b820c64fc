#!/bin/sh
# cuda_device_check.sh - the GPU tests and the CUDA backend's end-to-end
# figures in one pass, for a GPU host where the binaries built elsewhere were
# carried: never `make` there. From the repository (build/bin, build/tests)
# or from inside `make gpu-bundle`'s folder (as gpu-check.sh: bin, tests).
#
#   sh bench/cuda_device_check.sh [LOG]     (LOG: default /tmp/cuda_check.log)
#
# Test data: tests/data, or $SMQ_TEST_DATA (a bundle made with
# GPU_BUNDLE_DATA=0 carries none: point it at the repository's).
#
# The pass keeps to SMQ_CHECK_BUDGET_S seconds (default 570, for a device
# call limited to 600 s): each step's timeout is cut to what is left, and
# once it is spent the remaining steps are skipped, each said so in the log.
# Most needed first: the GPU tests, the issue's figures, then the runs with
# one mechanism off, the backend test with them off, and the checkers.
set -u
LOG=${1:-/tmp/cuda_check.log}
if [ -x bin/smolmq ] && [ ! -d build ]; then BIN=bin TESTS=tests; else BIN=build/bin TESTS=build/tests; fi
START=$(date +%s)
BUDGET=${SMQ_CHECK_BUDGET_S:-570}
case "$BUDGET" in '' | *[!0-9]*)
    echo "cuda_device_check: SMQ_CHECK_BUDGET_S wants whole seconds, not \"$BUDGET\"" >&2
    exit 2
    ;;
esac
: >"$LOG"
exec 3>&1 # the pass's own output, whatever a step's is redirected to
say() { echo "$*" | tee -a "$LOG"; }
# within SECONDS CMD...: CMD under a timeout of SECONDS, or of what is left
# of the budget if that is less; 124 when it timed out, 125 when skipped.
# (Its variables and bench's have names of their own: sh has no locals.)
within() {
    w_t=$1
    shift
    w_left=$((BUDGET - ($(date +%s) - START)))
    [ "$w_left" -lt "$w_t" ] && w_t=$w_left
    if [ "$w_t" -lt 5 ]; then
        echo "skipped, the check's $BUDGET s are spent: $*" | tee -a "$LOG" >&3
        return 125
    fi
    timeout "$w_t" "$@"
}
# bench SECONDS env [VAR=value...] CMD...: a benchmark run into the log;
# its status as within's.
bench() {
    within "$@" >"$LOG.run" 2>&1
    b_rc=$?
    tee -a "$LOG" <"$LOG.run"
    [ $b_rc -eq 124 ] && say "timed out after $w_t s"
    return $b_rc
}

nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv,noheader | tee -a "$LOG"
for t in quant_gpu_test matvec_gpu_test attention_gpu_test sample_gpu_test cuda_backend_gpu_test; do
    [ -x $TESTS/$t ] || { say "$t: not carried"; continue; }
    within 100 $TESTS/$t >"$LOG.$t" 2>&1
    say "$t rc=$?"
    grep -E "^(PASS|FAIL)|rel L2|agree|^ +[^ ]" "$LOG.$t" | tee -a "$LOG"
done
$BIN/smolmq synth --preset smollm3-3b --seed 1 --out /tmp/3b.gguf \
    --vocab "${SMQ_TEST_DATA:-tests/data}/models/smollm3-tiny-q4_k_m.gguf" >/dev/null || exit 1
B="$BIN/smolmq bench --model /tmp/3b.gguf --backend cuda"
# The issue's figures: batch-1 decode at contexts 128, 4K and 32K, prefill
# of 512 and 4096 tokens, aggregate decode of 8, 32 and 64 sequences. A run
# that times out ends the list (the default path hangs; the runs with one
# mechanism off, next, tell which one).
for args in "--prompt-len 128 --gen 64" "--prompt-len 512 --gen 16" "--prompt-len 4096 --gen 32" \
    "--prompt-len 32768 --gen 16" "--prompt-len 128 --gen 32 --batch 8" "--prompt-len 128 --gen 32 --batch 32" \
    "--prompt-len 128 --gen 32 --batch 64"; do
    say "== bench $args"
    bench 60 env $B $args
    [ $? -eq 124 ] && { say "the default path timed out: its other figures are left out"; break; }
done
# The alternatives kept to compare, beside the defaults above: the two-pass
# WMMA prompt attention (before the one-pass kernel), and the head on the
# q16 kernels for decode batches (no fp16 copy of it).
for args in "--prompt-len 4096 --gen 8" "--prompt-len 32768 --gen 4"; do
    say "== bench $args, SMQ_CUDA_PA_WMMA=1"
    bench 60 env SMQ_CUDA_PA_WMMA=1 $B $args
done
say "== bench --prompt-len 128 --gen 32 --batch 64, SMQ_CUDA_F16_HEAD=0"
bench 60 env SMQ_CUDA_F16_HEAD=0 $B --prompt-len 128 --gen 32 --batch 64
# The prompt attention under the memory checker (out-of-bounds shared or
# global accesses), early: its kernel is the newest.
if command -v compute-sanitizer >/dev/null 2>&1; then
    say "attention_gpu_test under compute-sanitizer:"
    within 120 compute-sanitizer --tool memcheck $TESTS/attention_gpu_test 2>&1 |
        grep -E "^(PASS|FAIL)|ERROR SUMMARY|Invalid" | head -20 | tee -a "$LOG"
fi
# Batch-1 decode with one of the step's mechanisms switched, beside the
# default above: ordinary launches (no PDL), no weight prefetch, neither, no
# graph, the norms fused into the residual products, separate merge
# launches too, a warp per q16 product row pair (before the k-split).
for env in SMQ_CUDA_PDL=0 SMQ_CUDA_PREFETCH=0 "SMQ_CUDA_PDL=0 SMQ_CUDA_PREFETCH=0" SMQ_CUDA_GRAPHS=0 \
    SMQ_CUDA_FUSE_NORM=1 SMQ_CUDA_FUSE=0 SMQ_CUDA_KSPLIT=0; do
    say "== bench --prompt-len 128 --gen 64, $env"
    bench 45 env $env $B --prompt-len 128 --gen 64
done
# Decode with the sampling chain (temperature 0.6, top-p 0.95) on the device,
# and on the host (SMQ_CUDA_SAMPLE=0), beside greedy above.
for env in "" "SMQ_CUDA_SAMPLE=0"; do
    say "== bench --prompt-len 128 --gen 64 --sample ${env:-(device sampling)}"
    bench 45 env $env $B --prompt-len 128 --gen 64 --sample
done
# The prompts' integer route (no cuBLAS), beside the cuBLAS route above.
for args in "--prompt-len 512 --gen 16" "--prompt-len 4096 --gen 8"; do
    say "== bench $args, SMQ_CUDA_GEMM=0"
    bench 60 env SMQ_CUDA_GEMM=0 $B $args
done
# cuBLAS products with the split-K attention instead of the tensor-core one.
say "== bench --prompt-len 4096 --gen 8, SMQ_CUDA_FLASH=0"
bench 60 env SMQ_CUDA_FLASH=0 $B --prompt-len 4096 --gen 8
# The backend test with one round of changes off: a failure of the default
# run above that passes here belongs to that round. Every row on the q16
# route (before the cuBLAS and tensor-core routes); separate norm and merge
# launches, a warp per product row pair, sampling on the host; ordinary
# launches and no weight prefetch (launch.cuh).
for env in SMQ_CUDA_GEMM=0 "SMQ_CUDA_FUSE=0 SMQ_CUDA_KSPLIT=0 SMQ_CUDA_SAMPLE=0" "SMQ_CUDA_PDL=0 SMQ_CUDA_PREFETCH=0"; do
    say "cuda_backend_gpu_test with $env:"
    within 100 env $env $TESTS/cuda_backend_gpu_test 2>&1 | grep -E "^(PASS|FAIL)" | tee -a "$LOG"
done
# Last, as it is slow: the device sampler's shared counters and chain
# state under the race checker.
if command -v compute-sanitizer >/dev/null 2>&1; then
    say "sample_gpu_test under compute-sanitizer racecheck:"
    within 200 env SMQ_SAMPLE_TEST_PICKS=4 compute-sanitizer --tool racecheck $TESTS/sample_gpu_test 2>&1 |
        grep -E "^(PASS|FAIL)|ERROR SUMMARY|RACECHECK SUMMARY|hazard" | head -20 | tee -a "$LOG"
fi
# One decode step's kernels (185 launches at batch 1: embed, norm, 5 a layer,
# head norm, head, sampler), timed one by one by Nsight Compute (no graph,
# caches left warm), summed by kernel: where a step's time goes.
if command -v ncu >/dev/null 2>&1 && [ "${SMQ_CHECK_NCU:-1}" = 1 ] &&
    within 120 env SMQ_CUDA_GRAPHS=0 ncu --clock-control none --cache-control none --metrics gpu__time_duration.sum \
        --csv --launch-skip 1500 --launch-count 185 $B --prompt-len 128 --gen 8 >"$LOG.ncu.csv" 2>/dev/null; then
    python3 - "$LOG.ncu.csv" <<'PY' | tee -a "$LOG"
import csv, sys, collections
rows = [r for r in csv.reader(open(sys.argv[1])) if len(r) > 14]
hdr, rows = rows[0], rows[1:]
ki, vi, ui = hdr.index("Kernel Name"), hdr.index("Metric Value"), hdr.index("Metric Unit")
tot, cnt = collections.Counter(), collections.Counter()
for r in rows:
    v = float(r[vi].replace(",", "")) * {"nsecond": 1e-3, "usecond": 1, "msecond": 1e3}.get(r[ui], 1)
    k = r[ki]
    name = (k.split(">(")[0] + ">") if ">(" in k else k.split("(")[0]
    tot[name] += v
    cnt[name] += 1
print("ncu: %d kernels, %.1f us in all" % (sum(cnt.values()), sum(tot.values())))
for n, v in tot.most_common():
    print("  %-28s %4d launches %9.1f us  %7.2f us each" % (n, cnt[n], v, v / cnt[n]))
PY
fi
