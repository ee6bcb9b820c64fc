#!/usr/bin/env python3
"""smolmq_test.py - the `smolmq` tool from the outside: inspect, dequant, synth.

Runs the built binary ($SMQ_BIN, default build/bin/smolmq) as a user would and
checks its output against the test data. Prints one PASS/FAIL/SKIP line per
test, as tests/run.sh counts them. SMQ_TEST_QUICK=1 skips the 2 GB synth.
"""
import hashlib
import json
import math
import os
import struct
import subprocess
import sys
import tempfile
import time
import traceback

BIN = os.environ.get("SMQ_BIN", "build/bin/smolmq")
DATA = os.environ.get("SMQ_TEST_DATA", "tests/data")
TINY = os.path.join(DATA, "models/smollm3-tiny-q4_k_m.gguf")
TMP = tempfile.mkdtemp(prefix="smolmq-test-")
failed = 0


class Skip(Exception):
    pass


def run(*args, expect=0):
    p = subprocess.run([BIN, *args], capture_output=True, text=True)
    if expect is not None and p.returncode != expect:
        raise AssertionError(f"smolmq {' '.join(args)}: exit {p.returncode}, expected {expect}\n"
                             f"stderr: {p.stderr.strip()}")
    return p


def inspect_json(path):
    return json.loads(run("inspect", path, "--json").stdout)


def f32(x):
    return struct.unpack("<f", struct.pack("<f", x))[0]


def check(cond, msg):
    if not cond:
        raise AssertionError(msg)


def test_inspect_matches_info_json():
    info = json.load(open(os.path.join(DATA, "models/smollm3-tiny-q4_k_m.info.json")))
    got = inspect_json(TINY)
    md = got["metadata"]
    check(set(md) == set(info["metadata"]), f"keys differ: {set(md) ^ set(info['metadata'])}")
    template = open(os.path.join(DATA, "chat/smollm3.jinja"), encoding="utf-8").read()
    for k, v in info["metadata"].items():
        g = md[k]
        if isinstance(v, str) and v.startswith("<array of "):
            n = int(v[len("<array of "):-1])
            check(g["count"] == n, f"{k}: {g['count']} elements, expected {n}")
        elif k == "tokenizer.chat_template":
            check(g == template, f"{k}: differs from chat/smollm3.jinja")
        elif isinstance(v, float):
            check(f32(g) == f32(v), f"{k}: {g} != {v}")
        else:
            check(g == v, f"{k}: {g!r} != {v!r}")
    counts = {t.upper(): c["tensors"] for t, c in got["types"].items()}
    check(counts == info["tensor_type_counts"], f"type counts {counts} != {info['tensor_type_counts']}")
    check(len(got["tensors"]) == len(info["tensors"]), "tensor count")
    for g, e in zip(got["tensors"], info["tensors"]):
        for field in ("name", "ne", "n_bytes", "data_offset"):
            check(g[field] == e[field], f"tensor {e['name']}: {field} {g[field]} != {e[field]}")
        check(g["type"].upper() == e["type"], f"tensor {e['name']}: type {g['type']} != {e['type']}")


def test_inspect_text():
    out = run("inspect", TINY).stdout
    for want in ("architecture:  smollm3", "embedding_length                         256",
                 "pre-tokenizer smaug-bpe", "tokens 128256", "merges 280147",
                 "eos_token_id 128012 <|im_end|>", "chat template: present (5598 bytes)",
                 "token_embd.weight                q6_K   256 x 128256",
                 "q6_K      5 tensors", "all      38 tensors"):
        check(want in out, f"inspect output lacks {want!r}")


def test_dequant_goldens_bit_exact():
    for t in ("q4_K", "q5_K", "q6_K", "q8_0"):
        out = os.path.join(TMP, t + ".f32")
        run("dequant", os.path.join(DATA, "quant", t + ".gguf"), "q", "--out", out)
        want = open(os.path.join(DATA, "quant", t + ".dequant.f32.bin"), "rb").read()
        got = open(out, "rb").read()
        check(got == want, f"{t}: {len(got)} bytes, differs from the golden dequantization")


def test_dequant_f32_tensor():
    out = os.path.join(TMP, "norm.f32")
    run("dequant", TINY, "output_norm.weight", "--out", out)
    data = open(out, "rb").read()
    raw = open(TINY, "rb").read()
    check(data == raw[7825952:7825952 + 1024], "f32 tensor not copied verbatim")


def test_errors_are_clear():
    bad = os.path.join(TMP, "bad.gguf")
    with open(bad, "wb") as f:
        f.write(open(TINY, "rb").read(4096))  # truncated inside the vocabulary
    p = run("inspect", bad, expect=1)
    check(bad + ": at byte 709 (0x2c5): key tokenizer.ggml.tokens: array of 128256 strings cannot fit" in p.stderr,
          p.stderr)
    with open(bad, "wb") as f:
        f.write(open(TINY, "rb").read(30000000))  # truncated inside token_embd's data
    p = run("inspect", bad, expect=1)
    check("tensor token_embd.weight: data (26933760 bytes at data offset 1024) lies past the end" in p.stderr,
          p.stderr)
    with open(bad, "wb") as f:
        f.write(b"GGML" + bytes(60))
    p = run("inspect", bad, expect=1)
    check("bad magic" in p.stderr, p.stderr)
    p = run("dequant", TINY, "no.such.tensor", "--out", os.path.join(TMP, "x"), expect=1)
    check("no tensor named no.such.tensor" in p.stderr, p.stderr)
    check(not os.path.exists(os.path.join(TMP, "x")), "output left behind after a failure")
    p = run("inspect", expect=2)
    check("usage: smolmq inspect" in p.stderr, p.stderr)
    p = run("synth", "--preset", "huge", "--out", os.path.join(TMP, "y"), expect=2)
    check('unknown preset "huge"' in p.stderr, p.stderr)
    p = run("synth", "--preset", "tiny", "--seed", "-3", "--out", os.path.join(TMP, "y"), expect=2)
    check("--seed wants a non-negative integer" in p.stderr, p.stderr)
    p = run("synth", "--preset", "tiny", "--out", os.path.join(TMP, "y"), "--vocab", bad, expect=1)
    check("vocabulary source" in p.stderr, p.stderr)
    p = run("frobnicate", expect=2)
    check('unknown verb "frobnicate"' in p.stderr, p.stderr)
    p = run("inspect", "/nonexistent.gguf", expect=1)
    check("/nonexistent.gguf: cannot open" in p.stderr, p.stderr)


def sha(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def read_f32(path):
    data = open(path, "rb").read()
    return struct.unpack(f"<{len(data) // 4}f", data)


def test_synth_tiny_round_trip():
    out = os.path.join(TMP, "tiny.gguf")
    run("synth", "--preset", "tiny", "--seed", "7", "--out", out)
    got, ref = inspect_json(out), inspect_json(TINY)
    # Same tensors, types and shapes as the peer's test model (same preset).
    for g, e in zip(got["tensors"], ref["tensors"]):
        check((g["name"], g["type"], g["ne"], g["n_bytes"]) == (e["name"], e["type"], e["ne"], e["n_bytes"]),
              f"tensor {g['name']} {g['type']} {g['ne']} != {e['name']} {e['type']} {e['ne']}")
    check(len(got["tensors"]) == 38, "tensor count")
    # Same hyper-parameters, tokenizer and template; our own name and seed.
    for k, v in ref["metadata"].items():
        if k != "general.name":
            check(got["metadata"].get(k) == v, f"metadata {k}: {got['metadata'].get(k)!r} != {v!r}")
    check(got["metadata"]["general.name"] == "smolmq synthetic tiny (seed 7)", got["metadata"]["general.name"])
    # Deterministic in the seed, different across seeds.
    again, other = os.path.join(TMP, "tiny2.gguf"), os.path.join(TMP, "tiny3.gguf")
    run("synth", "--preset", "tiny", "--seed", "7", "--out", again)
    run("synth", "--preset", "tiny", "--seed", "8", "--out", other)
    check(sha(out) == sha(again), "same seed gave different files")
    check(sha(out) != sha(other), "different seeds gave the same file")
    # Weights have the intended spread and are finite.
    for name, std in (("token_embd.weight", 0.2), ("blk.0.attn_q.weight", 1 / 16),
                      ("blk.3.ffn_down.weight", 3 / math.sqrt(768))):
        path = os.path.join(TMP, "w.f32")
        run("dequant", out, name, "--out", path)
        x = read_f32(path)
        x = x[:200000]
        check(all(math.isfinite(v) for v in x), f"{name}: non-finite values")
        mean = sum(x) / len(x)
        sd = math.sqrt(sum((v - mean) ** 2 for v in x) / len(x))
        check(abs(sd / std - 1) < 0.1 and abs(mean) < 0.1 * std, f"{name}: mean {mean:.4g} std {sd:.4g}, want std {std:.4g}")
    run("dequant", out, "blk.0.attn_norm.weight", "--out", os.path.join(TMP, "n.f32"))
    norms = read_f32(os.path.join(TMP, "n.f32"))
    check(0.9 < sum(norms) / len(norms) < 1.1, "norm weights should be near 1")
    for f in (out, again, other):
        os.remove(f)


def test_synth_smollm3_3b():
    if os.environ.get("SMQ_TEST_QUICK"):
        raise Skip("SMQ_TEST_QUICK set (writes 1.9 GB)")
    out = os.path.join(TMP, "3b.gguf")
    t0 = time.monotonic()
    run("synth", "--preset", "smollm3-3b", "--seed", "1", "--out", out)
    secs = time.monotonic() - t0
    try:
        got = inspect_json(out)
    finally:
        os.remove(out)
    counts = {t: c["tensors"] for t, c in got["types"].items()}
    check(counts == {"f32": 73, "q4_K": 216, "q6_K": 37}, f"type counts {counts}")
    check(got["totals"]["tensors"] == 326, "326 tensors")
    check(got["totals"]["bytes"] == 1907462144, f"tensor bytes {got['totals']['bytes']}")
    check(got["totals"]["elements"] == 3075098624, f"parameters {got['totals']['elements']}")
    t = {x["name"]: x for x in got["tensors"]}
    check(t["token_embd.weight"]["ne"] == [2048, 128256] and t["token_embd.weight"]["type"] == "q6_K", "token_embd")
    check(t["blk.0.attn_k.weight"]["ne"] == [2048, 512], "attn_k shape")
    check(t["blk.35.ffn_down.weight"]["ne"] == [11008, 2048], "ffn_down shape")
    q6 = sorted(int(n.split(".")[1]) for n, x in t.items() if n.endswith("attn_v.weight") and x["type"] == "q6_K")
    check(q6 == [0, 1, 2, 3, 6, 9, 12, 15, 18, 21, 24, 27, 30, 31, 32, 33, 34, 35], f"Q6_K attn_v layers {q6}")
    check("output.weight" not in t, "tied embedding: no output.weight")
    md = got["metadata"]
    check((md["smollm3.embedding_length"], md["smollm3.block_count"], md["smollm3.feed_forward_length"],
           md["smollm3.attention.head_count"], md["smollm3.attention.head_count_kv"],
           md["smollm3.rope.dimension_count"]) == (2048, 36, 11008, 16, 4, 128), "hyper-parameters")
    check(secs < 60, f"synth took {secs:.1f} s (must be well under a minute)")
    print(f"  synth smollm3-3b: {secs:.1f} s")


def goldens(name):
    return [json.loads(line) for line in open(os.path.join(DATA, name), encoding="utf-8")]


def test_tokenize_cli():
    g = goldens("tokenizer/tokenizer_goldens.jsonl")
    for case in (g[0], g[7], g[40], g[59]):
        ids = json.loads(run("tokenize", "--model", TINY, "--text", case["text"]).stdout)
        check(ids == case["ids"], f"{case['text'][:30]!r}: {ids[:10]} != {case['ids'][:10]}")
        ids = json.loads(run("tokenize", "--model", TINY, "--special", "--text", case["text"]).stdout)
        check(ids == case["ids_special"], f"{case['text'][:30]!r} (special)")
        text = run("detokenize", "--model", TINY, *map(str, case["ids"])).stdout
        check(text == case["detok"], f"detokenize {text[:30]!r} != {case['detok'][:30]!r}")
    # --jsonl: every golden in one run, one {"ids"} line per input line.
    p = subprocess.run([BIN, "tokenize", "--model", TINY, "--jsonl", os.path.join(DATA, "tokenizer/tokenizer_goldens.jsonl")],
                       capture_output=True, text=True)
    check(p.returncode == 0, p.stderr)
    lines = p.stdout.splitlines()
    check(len(lines) == len(g), f"{len(lines)} lines for {len(g)} inputs")
    for got, case in zip(lines, g):
        check(json.loads(got) == {"ids": case["ids"]}, f"jsonl {case['text'][:30]!r}")
    bad = os.path.join(TMP, "bad.jsonl")
    with open(bad, "w") as f:
        f.write('{"text": "ok"}\n{"text": 5}\n')
    p = run("tokenize", "--model", TINY, "--jsonl", bad, expect=1)
    check('line 2: no string field "text"' in p.stderr, p.stderr)
    p = run("detokenize", "--model", TINY, "1", "999999", expect=1)
    check("token id 999999 (at 1) is outside the vocabulary" in p.stderr, p.stderr)
    p = run("tokenize", "--model", TINY, expect=2)
    check("give exactly one of --text and --jsonl" in p.stderr, p.stderr)


def test_template_cli():
    for case in goldens("chat/chat_goldens.jsonl"):
        conv = os.path.join(TMP, "conv.json")
        with open(conv, "w", encoding="utf-8") as f:
            json.dump({"messages": case["messages"], "kwargs": case["kwargs"]}, f)
        out = subprocess.run([BIN, "template", "--model", TINY, "--input", conv, "--date", "2025-07-15"],
                             capture_output=True)
        check(out.returncode == 0, out.stderr.decode())
        check(out.stdout.decode("utf-8") == case["rendered"], f"{case['id']}: rendering differs")
        ids = json.loads(run("template", "--model", TINY, "--input", conv, "--date", "2025-07-15", "--ids").stdout)
        check(ids == case["ids"], f"{case['id']}: ids differ")
    # The date comes from the clock by default.
    out = run("template", "--model", TINY, "--input", conv).stdout
    check("Today Date: " + time.strftime("%d %B %Y") in out, "default date is not today")
    p = run("template", "--model", TINY, "--input", conv, "--date", "2025-02-30", expect=2)
    check("--date wants a date YYYY-MM-DD" in p.stderr, p.stderr)
    with open(conv, "w") as f:
        json.dump({"messages": [{"role": "user", "content": "hi"}], "kwargs": {"enable_thinkin": False}}, f)
    p = run("template", "--model", TINY, "--input", conv, expect=1)
    check("kwargs.enable_thinkin is not a variable of the chat template" in p.stderr, p.stderr)
    with open(conv, "w") as f:
        f.write('{"messages": [}')
    p = run("template", "--model", TINY, "--input", conv, expect=1)
    check(conv + ": at byte 14" in p.stderr, p.stderr)


def test_logits_and_generate_cli():
    prompts = json.load(open(os.path.join(DATA, "model_goldens/tiny/prompts.json")))
    exact = json.load(open(os.path.join(DATA, "model_goldens/tiny/exact.results.json")))
    p7 = prompts[1]
    out = os.path.join(TMP, "l.f32")
    run("logits", "--model", TINY, "--ids", ",".join(map(str, p7["ids"])), "--out", out)
    got = read_f32(out)
    want = read_f32(os.path.join(DATA, "model_goldens/tiny/exact.p7.logits.f32.bin"))
    rel = math.sqrt(sum((a - b) ** 2 for a, b in zip(got, want)) / sum(b * b for b in want))
    check(len(got) == 128256 and rel < 1e-4, f"logits rel L2 {rel:.3g}")
    run("logits", "--model", TINY, "--ids", "9906,1917", "--all", "--out", out)
    check(len(read_f32(out)) == 2 * 128256, "--all: one row per position")
    # generate --exact, greedy: the peer's continuation of p1
    g = json.loads(run("generate", "--model", TINY, "--ids", "9906", "--max-tokens", "8", "--temperature", "0",
                       "--exact", "--json").stdout)
    check(g["ids"] == exact[0]["greedy"][:8], f"greedy {g['ids']} != {exact[0]['greedy'][:8]}")
    check(g["finish_reason"] == "length" and g["usage"] == {"prompt_tokens": 1, "completion_tokens": 8, "reasoning_tokens": 0}, str(g))
    # a text prompt goes through the chat template; the answer streams to stdout
    p = run("generate", "--model", TINY, "--prompt", "Hi", "--max-tokens", "4", "--no-think", "--seed", "3")
    check("[length: 4 tokens" in p.stderr, p.stderr)
    p = run("generate", "--model", TINY, "--ids", "1,x", expect=2)
    check("--ids wants token ids" in p.stderr, p.stderr)
    p = run("generate", "--model", TINY, "--ids", "1", "--top-p", "7", expect=2)
    check("--top-p wants a number from" in p.stderr, p.stderr)
    p = run("logits", "--model", TINY, "--ids", "1", "--out", out, "--threads", "two", expect=2)
    check('--threads wants a number' in p.stderr, p.stderr)
    p = run("chat", "--model", TINY, "--temperature", "hot", expect=2)
    check('--temperature: "hot" is not a number' in p.stderr, p.stderr)
    p = run("bench", "--model", TINY, "--gen", "8x", expect=2)
    check('--gen wants a whole number' in p.stderr, p.stderr)
    p = run("logits", "--model", TINY, "--ids", "1", "--out", out, "--backend", "tpu", expect=1)
    check('backend "tpu" is not available in this build' in p.stderr, p.stderr)
    p = run("generate", "--model", TINY, "--ids", "1", "--max-tokens", "2", "--gpu", "99", "--backend", "cuda",
            expect=1)
    check('backend "cuda"' in p.stderr and ("not available" in p.stderr or "--gpu 99 does not exist" in p.stderr),
          p.stderr)


def test_chat_reuses_the_previous_turn():
    p = subprocess.run([BIN, "chat", "--model", TINY, "--temperature", "0", "--max-tokens", "6"],
                       input="Hello there\nTell me more\n/quit\n", capture_output=True, text=True, timeout=120)
    check(p.returncode == 0, p.stderr)
    check("MB of KV cache and buffers" in p.stdout.splitlines()[0], p.stdout[:300])
    turns = [l for l in p.stdout.splitlines() if "prompt tokens" in l]
    check(len(turns) == 2, p.stdout[-500:])
    import re
    first = int(re.search(r"(\d+) prompt tokens", turns[0]).group(1))
    reused = int(re.search(r"(\d+) reused", turns[1]).group(1))
    check(reused >= first, f"second turn reused {reused} tokens; the first turn's prompt alone has {first}")


def test_bench_cli():
    out = run("bench", "--model", TINY, "--prompt-len", "32", "--gen", "8", "--threads", "1").stdout
    for want in ("read bandwidth", "prefill 32 tokens:", "decode batch 1, 8 tokens each:", "roofline", "ratio"):
        check(want in out, f"bench output lacks {want!r}: {out}")
    out = run("bench", "--model", TINY, "--prompt-len", "16", "--gen", "4", "--threads", "1", "--sample").stdout
    check("4 tokens each (sampled: temperature 0.6, top-p 0.95):" in out, f"bench --sample: {out}")


EMU_BIN = os.environ.get("SMQ_EMU_BIN", os.path.join(os.environ.get("SMQ_BUILD", "build"), "emu/bin/smolmq"))


def test_cuda_backend_through_the_tool():
    """The tool with --backend cuda end to end (engine, CUDA backend, device
    sampler), on the host emulation of the device (tests/emu): the same tool
    a GPU host runs, built against the emulated runtime."""
    if not os.path.exists(EMU_BIN):
        raise Skip(f"no {EMU_BIN} (built where the CUDA headers are: make test builds it)")

    def emu(*args, expect=0):
        p = subprocess.run([EMU_BIN, *args], capture_output=True, text=True, timeout=300)
        check(p.returncode == expect, f"emulated smolmq {' '.join(args)}: exit {p.returncode}\n{p.stderr[-800:]}")
        return p

    prompts = json.load(open(os.path.join(DATA, "model_goldens/tiny/prompts.json")))
    exact = json.load(open(os.path.join(DATA, "model_goldens/tiny/exact.results.json")))
    out = os.path.join(TMP, "cuda.f32")
    emu("logits", "--model", TINY, "--ids", ",".join(map(str, prompts[1]["ids"])), "--out", out, "--backend", "cuda")
    got = read_f32(out)
    want = read_f32(os.path.join(DATA, "model_goldens/tiny/exact.p7.logits.f32.bin"))
    rel = math.sqrt(sum((a - b) ** 2 for a, b in zip(got, want)) / sum(b * b for b in want))
    check(len(got) == 128256 and rel < 3e-3, f"cuda logits rel L2 {rel:.3g} against the goldens")
    # auto takes the (emulated) GPU and says so; greedy equals the peer's
    p = emu("generate", "--model", TINY, "--ids", "9906", "--max-tokens", "8", "--temperature", "0", "--json")
    check("backend auto: cuda on GPU 0 (CUDA host emulation): needs" in p.stderr, p.stderr)
    g = json.loads(p.stdout)
    check(g["ids"] == exact[0]["greedy"][:8], f"cuda greedy {g['ids']} != {exact[0]['greedy'][:8]}")
    # sampled on the device, seeded: the same tokens twice, through the chat template
    args = ("generate", "--model", TINY, "--prompt", "Hi", "--max-tokens", "6", "--temperature", "0.8",
            "--top-p", "0.9", "--seed", "7", "--json", "--backend", "cuda")
    a, b = json.loads(emu(*args).stdout), json.loads(emu(*args).stdout)
    check(a["ids"] == b["ids"] and len(a["ids"]) == 6, f"seeded sampling on the device: {a['ids']} then {b['ids']}")
    cpu = json.loads(run(*args[:-1], "cpu").stdout)
    print(f"  cuda (emulated) logits rel L2 {rel:.2e}; sampled {a['ids']}, the CPU's {cpu['ids']}")
    # a chat's second turn prefills only its new tokens, on the device too
    p = subprocess.run([EMU_BIN, "chat", "--model", TINY, "--temperature", "0", "--max-tokens", "4", "--backend",
                        "cuda"], input="Hello there\nTell me more\n/quit\n", capture_output=True, text=True,
                       timeout=300)
    check(p.returncode == 0, p.stderr[-800:])
    turns = [l for l in p.stdout.splitlines() if "prompt tokens" in l]
    check(len(turns) == 2 and " reused" in turns[1], p.stdout[-500:])
    p = emu("generate", "--model", TINY, "--ids", "1", "--max-tokens", "2", "--backend", "cuda", "--gpu", "3",
            expect=1)
    check("--gpu 3 does not exist (this machine has 1 CUDA device)" in p.stderr, p.stderr)


def main():
    global failed
    tests = [v for k, v in globals().items() if k.startswith("test_") and callable(v)]
    for t in tests:
        name = t.__name__
        try:
            t()
            print(f"PASS smolmq/{name}")
        except Skip as e:
            print(f"SKIP smolmq/{name}: {e}")
        except Exception as e:
            failed += 1
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            print(f"FAIL smolmq/{name}: {first}")
            traceback.print_exc()
        sys.stdout.flush()
    for f in os.listdir(TMP):
        os.remove(os.path.join(TMP, f))
    os.rmdir(TMP)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
