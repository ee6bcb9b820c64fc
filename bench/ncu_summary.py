#!/usr/bin/env python3
"""ncu_summary.py - a CSV of Nsight Compute (bench/cuda_profile.sh: every
kernel's gpu__time_duration and DRAM bytes, gzipped or not) cut into the
forward steps (each begins with embed_kernel), then the steps asked for
summed by kernel: launches, time, share, DRAM read bandwidth.

    python3 bench/ncu_summary.py FILE.csv.gz            the steps, one line each
    python3 bench/ncu_summary.py FILE.csv.gz 8 -1       and steps 8 and the last by kernel

Kernels after the last step (the benchmark's bandwidth probe) are left out.
Times are ncu's: each kernel alone, so launch overlap is not in them."""
import collections
import csv
import gzip
import sys

UNIT = {"ns": 1e-3, "nsecond": 1e-3, "us": 1, "usecond": 1, "ms": 1e3, "msecond": 1e3, "s": 1e6, "second": 1e6,
        "byte": 1, "Kbyte": 1e3, "Mbyte": 1e6, "Gbyte": 1e9}
TIME = "gpu__time_duration.sum"


def load(path):
    opener = gzip.open if path.endswith(".gz") else open
    kernels = collections.OrderedDict()
    with opener(path, "rt") as f:
        for r in csv.reader(line for line in f if line.startswith('"')):
            if r[0] == "ID" or len(r) < 15:
                continue
            name = r[4]
            short = (name.split(">(")[0] + ">") if ">(" in name else name.split("(")[0]
            k = kernels.setdefault(int(r[0]), {"name": short.replace("void ", ""), "grid": r[8]})
            k[r[12]] = float(r[14].replace(",", "")) * UNIT.get(r[13], 1)
    return list(kernels.values())


def steps(ks):
    starts = [i for i, k in enumerate(ks) if k["name"].startswith("embed_kernel")]
    return [ks[a:b] for a, b in zip(starts, starts[1:])] + ([ks[starts[-1]:]] if starts else [])


def by_kernel(ks, title):
    tot, cnt, rd = collections.Counter(), collections.Counter(), collections.Counter()
    for k in ks:
        tot[k["name"]] += k.get(TIME, 0)
        cnt[k["name"]] += 1
        rd[k["name"]] += k.get("dram__bytes_read.sum", 0)
    total = sum(tot.values())
    print("%s: %d kernels, %.1f us" % (title, len(ks), total))
    for n, v in tot.most_common():
        print("  %-56s %5d x %9.2f us = %10.1f us (%4.1f%%) %8.1f GB/s read" %
              (n[:56], cnt[n], v / cnt[n], v, 100 * v / total if total else 0, rd[n] / v / 1e3 if v else 0))


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    st = steps(load(sys.argv[1]))
    if st and st[-1][-1]["name"].startswith("read_kernel"):  # the bandwidth probe after the last step
        st[-1] = [k for k in st[-1] if not k["name"].startswith("read_kernel")]
    for i, s in enumerate(st):
        print("step %d: %d kernels, %.1f us" % (i, len(s), sum(k.get(TIME, 0) for k in s)))
    for a in sys.argv[2:]:
        i = int(a)
        by_kernel(st[i], "step %d" % (i % len(st)))


if __name__ == "__main__":
    main()
