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
set -u
LOG=${1:-/tmp/cuda_check.log}
if [ -x bin/smolmq ] && [ ! -d build ]; then BIN=bin TESTS=tests; else BIN=build/bin TESTS=build/tests; fi
: >"$LOG"
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv,noheader | tee -a "$LOG"
for t in quant_gpu_test matvec_gpu_test attention_gpu_test sample_gpu_test cuda_backend_gpu_test; do
    [ -x $TESTS/$t ] || { echo "$t: not carried" | tee -a "$LOG"; continue; }
    timeout 100 $TESTS/$t >"$LOG.$t" 2>&1
    echo "$t rc=$?" | tee -a "$LOG"
    grep -E "^(PASS|FAIL)|rel L2|agree|^ +[^ ]" "$LOG.$t" | tee -a "$LOG"
done
# The backend with every row on the q16 route (as before the cuBLAS and
# tensor-core routes): tells a fault of the new routes from an old one.
echo "cuda_backend_gpu_test with SMQ_CUDA_GEMM=0:" | tee -a "$LOG"
SMQ_CUDA_GEMM=0 timeout 100 $TESTS/cuda_backend_gpu_test 2>&1 | grep -E "^(PASS|FAIL)" | tee -a "$LOG"
# ... and with this round's decode changes off (separate norm and merge
# launches, a warp per product row pair, sampling on the host): a failure
# above that passes here is theirs.
echo "cuda_backend_gpu_test with SMQ_CUDA_FUSE=0 SMQ_CUDA_KSPLIT=0 SMQ_CUDA_SAMPLE=0:" | tee -a "$LOG"
SMQ_CUDA_FUSE=0 SMQ_CUDA_KSPLIT=0 SMQ_CUDA_SAMPLE=0 timeout 100 $TESTS/cuda_backend_gpu_test 2>&1 |
    grep -E "^(PASS|FAIL)" | tee -a "$LOG"
# ... and with ordinary launches and no weight prefetch (launch.cuh): a
# failure above that passes here comes from the overlapped launches.
echo "cuda_backend_gpu_test with SMQ_CUDA_PDL=0 SMQ_CUDA_PREFETCH=0:" | tee -a "$LOG"
SMQ_CUDA_PDL=0 SMQ_CUDA_PREFETCH=0 timeout 100 $TESTS/cuda_backend_gpu_test 2>&1 | grep -E "^(PASS|FAIL)" |
    tee -a "$LOG"
$BIN/smolmq synth --preset smollm3-3b --seed 1 --out /tmp/3b.gguf \
    --vocab "${SMQ_TEST_DATA:-tests/data}/models/smollm3-tiny-q4_k_m.gguf" >/dev/null || exit 1
B="$BIN/smolmq bench --model /tmp/3b.gguf --backend cuda"
# The issue's figures: batch-1 decode at contexts 128, 4K and 32K, prefill
# of 512 and 4096 tokens, aggregate decode of 8, 32 and 64 sequences.
for args in "--prompt-len 128 --gen 64" "--prompt-len 512 --gen 16" "--prompt-len 4096 --gen 32" \
    "--prompt-len 32768 --gen 16" "--prompt-len 128 --gen 32 --batch 8" "--prompt-len 128 --gen 32 --batch 32" \
    "--prompt-len 128 --gen 32 --batch 64"; do
    echo "== bench $args" | tee -a "$LOG"
    timeout 60 $B $args 2>&1 | tee -a "$LOG"
done
# Batch-1 decode with one of the step's mechanisms off, beside the default
# above: ordinary launches (no PDL), no weight prefetch, neither, no graph,
# separate norm and merge launches (before their fusion), a warp per q16
# product row pair (before the k-split).
for env in SMQ_CUDA_PDL=0 SMQ_CUDA_PREFETCH=0 "SMQ_CUDA_PDL=0 SMQ_CUDA_PREFETCH=0" SMQ_CUDA_GRAPHS=0 \
    SMQ_CUDA_FUSE=0 SMQ_CUDA_KSPLIT=0; do
    echo "== bench --prompt-len 128 --gen 64, $env" | tee -a "$LOG"
    env $env timeout 60 $B --prompt-len 128 --gen 64 2>&1 | tee -a "$LOG"
done
# Decode with the sampling chain (temperature 0.6, top-p 0.95) on the device,
# and on the host (SMQ_CUDA_SAMPLE=0), beside greedy above.
for env in "" "SMQ_CUDA_SAMPLE=0"; do
    echo "== bench --prompt-len 128 --gen 64 --sample ${env:-(device sampling)}" | tee -a "$LOG"
    env $env timeout 60 $B --prompt-len 128 --gen 64 --sample 2>&1 | tee -a "$LOG"
done
# The prompts' integer route (no cuBLAS), beside the cuBLAS route above.
for args in "--prompt-len 512 --gen 16" "--prompt-len 4096 --gen 8"; do
    echo "== bench $args, SMQ_CUDA_GEMM=0" | tee -a "$LOG"
    SMQ_CUDA_GEMM=0 timeout 60 $B $args 2>&1 | tee -a "$LOG"
done
# cuBLAS products with the split-K attention instead of the tensor-core one.
echo "== bench --prompt-len 4096 --gen 8, SMQ_CUDA_FLASH=0" | tee -a "$LOG"
SMQ_CUDA_FLASH=0 timeout 60 $B --prompt-len 4096 --gen 8 2>&1 | tee -a "$LOG"
# Last, as they are slow: the tensor-core attention under the memory checker
# (out-of-bounds shared or global accesses, misaligned fragments).
if command -v compute-sanitizer >/dev/null 2>&1; then
    echo "attention_gpu_test under compute-sanitizer:" | tee -a "$LOG"
    timeout 200 compute-sanitizer --tool memcheck $TESTS/attention_gpu_test 2>&1 | grep -E "^(PASS|FAIL)|ERROR SUMMARY|Invalid" |
        head -20 | tee -a "$LOG"
    # the device sampler's shared counters and chain state: races
    echo "sample_gpu_test under compute-sanitizer racecheck:" | tee -a "$LOG"
    SMQ_SAMPLE_TEST_PICKS=4 timeout 200 compute-sanitizer --tool racecheck $TESTS/sample_gpu_test 2>&1 |
        grep -E "^(PASS|FAIL)|ERROR SUMMARY|RACECHECK SUMMARY|hazard" | head -20 | tee -a "$LOG"
fi
# One decode step's kernels (185 launches at batch 1: embed, norm, 5 a layer,
# head norm, head, sampler), timed one by one by Nsight Compute (no graph,
# caches left warm), summed by kernel: where a step's time goes.
if command -v ncu >/dev/null 2>&1 && [ "${SMQ_CHECK_NCU:-1}" = 1 ]; then
    SMQ_CUDA_GRAPHS=0 timeout 120 ncu --clock-control none --cache-control none --metrics gpu__time_duration.sum \
        --csv --launch-skip 1500 --launch-count 185 $B --prompt-len 128 --gen 8 >"$LOG.ncu.csv" 2>/dev/null
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
