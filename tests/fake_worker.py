#!/usr/bin/env python3
"""fake_worker.py - a scripted worker for tests of what sits above the broker.

    fake_worker.py --broker tcp://127.0.0.1:PORT [--model smolmq-fake] [--capacity 64]
                   [--token-ms 30] [--heartbeat-ms 1000]

Speaks SMQ/1 on the worker hop (proto/PROTOCOL.md) like smolmq-worker, but
its answers are a script, not a model: first reasoning (what a thinking
model writes inside <think>), then a markdown answer that contains an HTML
injection attempt, one token every --token-ms. With `thinking: false` it
skips the reasoning. A last message that says "[long]" gets twenty times
the reasoning (some 4 s at 10 ms a token): a test that watches it stream,
or stops it, has the time to, however busy the machine. max_tokens cuts the script (finish
"length"); CANCEL ends a job with finish "cancelled". The test model's
random weights never think and never write markdown; this lets the
gateway's and the web chat's tests see both. Used only by tests.
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "proto", "clients", "python"))
import zmq  # noqa: E402
from smolmq_client import decode_frames, encode_frames  # noqa: E402

REASONING = ("The user asks a question. Let me think about it step by step: "
             "first what they want, then a short answer with an example.").split(" ")
CONTENT = ("Here is **the answer**.\n\n- one\n- two\n\n"
           "```python\nprint('hello')\n```\n\n"
           "And some markup that must stay text: <img src=x onerror=alert(1)> done.").split(" ")


def script(thinking, long=False):
    """[(kind, text)] tokens of the reply."""
    out = []
    if thinking:
        out += [("reasoning", w + " ") for w in REASONING * (20 if long else 1)]
    out += [("content", w + (" " if i < len(CONTENT) - 1 else "")) for i, w in enumerate(CONTENT)]
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--broker", required=True)
    ap.add_argument("--model", default="smolmq-fake")
    ap.add_argument("--capacity", type=int, default=64)
    ap.add_argument("--token-ms", type=float, default=30)
    ap.add_argument("--heartbeat-ms", type=int, default=1000)
    a = ap.parse_args()
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(a.broker)

    def send(cmd, body, job=None):
        sock.send_multipart(encode_frames(cmd, body, job))

    def ready():
        send("READY", {"model": a.model, "capacity": a.capacity, "name": "fake-worker", "backend": "cpu",
                       "heartbeat_ms": a.heartbeat_ms})

    ready()
    jobs = {}  # job -> dict(id, seq, tokens left, n_prompt, generated, started)
    next_hb = time.time()
    next_token = time.time()
    while True:
        now = time.time()
        timeout = min(next_hb, next_token if jobs else next_hb) - now
        if sock.poll(max(0, int(timeout * 1000)) if timeout > 0 else 0):
            while sock.poll(0):
                f = decode_frames(sock.recv_multipart(), hop="worker", validate=False)
                if f.command == "CHAT":
                    body = f.body
                    n_prompt = sum(len(m.get("content", "")) // 4 + 4 for m in body["messages"])
                    last = body["messages"][-1].get("content", "") if body["messages"] else ""
                    toks = script(body.get("thinking", True), long="[long]" in str(last))
                    max_tokens = body.get("max_tokens") or 0
                    finish = "eog"
                    if max_tokens and max_tokens < len(toks):
                        toks, finish = toks[:max_tokens], "length"
                    jobs[f.job] = {"id": body["id"], "seq": 0, "toks": toks, "finish": finish,
                                   "n_prompt": n_prompt, "n": 0, "t0": time.time(), "t_first": None}
                elif f.command == "CANCEL" and f.job in jobs:
                    j = jobs[f.job]
                    j["toks"], j["finish"] = [], "cancelled"
                elif f.command == "DISCONNECT":
                    jobs.clear()
                    ready()
        now = time.time()
        if now >= next_hb:
            send("HEARTBEAT", {"capacity": a.capacity, "running": len(jobs)})
            next_hb = now + a.heartbeat_ms / 1000
        if jobs and now >= next_token:
            next_token = now + a.token_ms / 1000
            for job, j in list(jobs.items()):
                if j["toks"]:
                    kind, text = j["toks"].pop(0)
                    j["n"] += 1
                    j["t_first"] = j["t_first"] or now
                    send("TOKEN", {"id": j["id"], "seq": j["seq"], "tokens": [1000 + j["n"]], kind: text}, job)
                    j["seq"] += 1
                    continue
                total = (now - j["t0"]) * 1000
                first = ((j["t_first"] or now) - j["t0"]) * 1000
                tps = (j["n"] - 1) / (now - j["t_first"]) if j["t_first"] and j["n"] > 1 and now > j["t_first"] else 0.0
                send("DONE", {"id": j["id"], "seq": j["seq"], "finish": j["finish"],
                              "usage": {"prompt_tokens": j["n_prompt"], "completion_tokens": j["n"], "cached_tokens": 0},
                              "timings": {"queue_ms": 0.0, "ttft_ms": first, "total_ms": total, "decode_tps": tps}},
                     job)
                del jobs[job]


if __name__ == "__main__":
    main()
