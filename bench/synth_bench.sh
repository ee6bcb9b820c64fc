#!/bin/sh
# synth_bench.sh - how fast `smolmq synth --preset smollm3-3b` writes the
# 1.9 GB benchmark model, beside the floor: writing the same number of bytes
# with dd in the same run (same disk, same page cache).
#   sh bench/synth_bench.sh [OUT_DIR]
set -eu
BIN=${SMQ_BIN:-build/bin/smolmq}
dir=${1:-${TMPDIR:-/tmp}}
out="$dir/smolmq-bench-3b.gguf"
now() { date +%s.%N; }

t0=$(now)
"$BIN" synth --preset smollm3-3b --seed 1 --out "$out" >/dev/null
t1=$(now)
bytes=$(stat -c %s "$out")
rm -f "$out"
t2=$(now)
dd if=/dev/zero of="$out" bs=1M count=$((bytes / 1048576)) status=none
t3=$(now)
rm -f "$out"
awk -v s="$t1" -v e="$t0" -v ds="$t3" -v de="$t2" -v b="$bytes" 'BEGIN {
    synth = s - e; dd = ds - de;
    printf "synth smollm3-3b: %.2f s for %.0f MB (%.0f MB/s); dd of the same size: %.2f s; ratio synth/dd %.2f\n",
        synth, b / 1e6, b / 1e6 / synth, dd, synth / dd }'
