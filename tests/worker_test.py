#!/usr/bin/python3
"""worker_test.py - smolmq-worker from the outside: the test plays the broker.

A ROUTER on a free port, driven by a thread, records what the worker sends
(heartbeats apart, with their arrival times), answers with heartbeats every
interval unless told to fall silent, and sends what a test asks. Workers run
on the tiny test model; the text they produce is checked against
`smolmq generate` with the same prompt, seed and sampling.

Runs with /usr/bin/python3 (python3-zmq, python3-msgpack). Binaries from
$SMQ_BUILD/bin (default build/bin). Prints one PASS/FAIL/SKIP line per test.
"""
import json
import os
import queue
import re
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

import msgpack
import zmq

from nettest import Skip, check, run_tests  # noqa: F401

BUILD = os.environ.get("SMQ_BUILD", "build")
WORKER = os.path.join(BUILD, "bin", "smolmq-worker")
SMOLMQ = os.path.join(BUILD, "bin", "smolmq")
DATA = os.environ.get("SMQ_TEST_DATA", "tests/data")
TINY = os.path.join(DATA, "models/smollm3-tiny-q4_k_m.gguf")
LIVENESS = 3
CTX = 2048
# Run against another build's worker (make test-emu: the CUDA backend on the
# host emulation, build/emu): the backend READY names, and how much slower
# than the CPU's its steps are (every wait is that many times longer).
BACKEND = os.environ.get("SMQ_TEST_BACKEND", "cpu")
SLOW = float(os.environ.get("SMQ_TEST_SLOWER", "1"))
# The workers' heartbeat interval here: fast, so that liveness tests are
# quick, and as much slower as the steps. The interval bounds a step's
# prompt tokens (step_budget.h): unscaled, the emulated worker's steps of
# 0.7 s would read a prompt one token a step.
HB_MS = round(200 * SLOW)




class FakeBroker:
    def __init__(self, curve_secret=None, hb_ms=HB_MS):
        self.hb_ms = hb_ms
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.ROUTER)
        self.sock.linger = 0
        if curve_secret:
            self.sock.curve_server = True
            self.sock.curve_secretkey = curve_secret
        self.sock.bind("tcp://127.0.0.1:*")
        self.endpoint = self.sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self.inbox = queue.Queue()  # (time, identity, frames[1:]) of everything but HEARTBEAT
        self.outbox = queue.Queue()
        self.heartbeats = []  # (time, identity, body)
        self.peers = set()  # identities that sent READY: they get heartbeats
        self.silent = False
        self.stopping = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        poller = zmq.Poller()
        poller.register(self.sock, zmq.POLLIN)
        due = time.monotonic()
        while not self.stopping:
            if poller.poll(5):
                while True:
                    try:
                        frames = self.sock.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    now = time.monotonic()
                    ident, rest = frames[0], frames[1:]
                    if len(rest) >= 2 and rest[1] == b"HEARTBEAT":
                        self.heartbeats.append((now, ident, msgpack.unpackb(rest[-1])))
                        continue
                    if len(rest) >= 2 and rest[1] == b"READY":
                        self.peers.add(ident)
                    self.inbox.put((now, ident, rest))
            while not self.outbox.empty():
                self.sock.send_multipart(self.outbox.get())
            if time.monotonic() >= due:
                due += self.hb_ms / 1000
                if not self.silent:
                    for p in list(self.peers):
                        self.sock.send_multipart([p, b"SMQ/1", b"HEARTBEAT", msgpack.packb({})])

    def send(self, ident, cmd, job=None, body=None, raw=None):
        frames = [ident, b"SMQ/1", cmd]
        if job is not None:
            frames.append(struct.pack(">Q", job))
        frames.append(raw if raw is not None else msgpack.packb({} if body is None else body))
        self.outbox.put(frames)

    def recv(self, timeout=10.0):
        """The next message: (time, identity, command, job or None, body dict)."""
        t, ident, rest = self.inbox.get(timeout=timeout * SLOW)
        check(rest[0] == b"SMQ/1", f"header {rest[0]!r}")
        job = struct.unpack(">Q", rest[2])[0] if len(rest) == 4 else None
        return t, ident, rest[1].decode(), job, msgpack.unpackb(rest[-1])

    def expect(self, cmd, timeout=10.0):
        t, ident, c, job, body = self.recv(timeout)
        check(c == cmd, f"expected {cmd}, got {c} {body}")
        return t, ident, job, body

    def drop_pending(self):
        while not self.inbox.empty():
            self.inbox.get()

    def close(self):
        self.stopping = True
        self.thread.join()
        self.sock.close()
        self.ctx.term()


class Worker:
    def __init__(self, broker, *extra, hb_ms=HB_MS, liveness=LIVENESS):
        self.log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen([WORKER, "--model", TINY, "--broker", broker.endpoint, "--heartbeat-ms",
                                      str(hb_ms), "--liveness", str(liveness), *extra],
                                     stdout=subprocess.DEVNULL, stderr=self.log)

    def stderr(self):
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def chat_body(rid, prompt, **kw):
    body = {"id": rid, "messages": [{"role": "user", "content": prompt}], "queued_ms": 2.5}
    body.update(kw)
    return body


def collect(broker, jobs, timeout=30.0):
    """Frames of the given jobs until each has a terminal one: {job: [(cmd, body)]}."""
    got = {j: [] for j in jobs}
    open_jobs = set(jobs)
    end = time.monotonic() + timeout * SLOW
    while open_jobs:
        _, _, cmd, job, body = broker.recv(max(0.1, end - time.monotonic()))
        check(job in got, f"a {cmd} frame for job {job}, expected {jobs}: {body}")
        check(job in open_jobs, f"a {cmd} frame for job {job} after its terminal frame")
        got[job].append((cmd, body))
        if cmd in ("DONE", "ERROR"):
            open_jobs.discard(job)
    return got


def check_stream(frames, rid):
    """Gapless seq from 0, TOKENs then one DONE; returns (ids, reasoning, content, done body)."""
    ids, reasoning, content = [], "", ""
    for i, (cmd, body) in enumerate(frames):
        check(body.get("id") == rid, f"frame {i}: id {body.get('id')!r}, expected {rid!r}")
        check(body.get("seq") == i, f"frame {i}: seq {body.get('seq')} (gap or reorder)")
        if i < len(frames) - 1:
            check(cmd == "TOKEN", f"frame {i}: {cmd} before the end")
            ids += body.get("tokens", [])
            reasoning += body.get("reasoning", "")
            content += body.get("content", "")
    cmd, done = frames[-1]
    check(cmd == "DONE", f"the last frame is {cmd}: {done}")
    return ids, reasoning, content, done


def generate(prompt, seed, max_tokens, *flags):
    p = subprocess.run([SMOLMQ, "generate", "--model", TINY, "--prompt", prompt, "--seed", str(seed),
                        "--max-tokens", str(max_tokens), "--json", *flags], capture_output=True, text=True)
    check(p.returncode == 0, f"smolmq generate failed: {p.stderr}")
    return json.loads(p.stdout)


def check_same_as_generate(frames, rid, ref):
    ids, reasoning, content, done = check_stream(frames, rid)
    check(ids == ref["ids"], f"token ids differ from smolmq generate's:\n  {ids[:12]}...\n  {ref['ids'][:12]}...")
    check(reasoning == ref["reasoning"] and content == ref["content"], "text differs from smolmq generate's")
    check(done["finish"] == ref["finish_reason"], f"finish {done['finish']} != {ref['finish_reason']}")
    u = done["usage"]
    check(u["prompt_tokens"] == ref["usage"]["prompt_tokens"], f"prompt_tokens {u} vs {ref['usage']}")
    check(u["completion_tokens"] == len(ids), f"completion_tokens {u['completion_tokens']} != {len(ids)} ids sent")
    tm = done["timings"]
    check(tm["queue_ms"] >= 2.5 and tm["ttft_ms"] >= tm["queue_ms"] and tm["total_ms"] >= tm["ttft_ms"],
          f"timings out of order: {tm}")
    check(tm["decode_tps"] > 0, f"decode_tps {tm['decode_tps']}")
    return done


# ---- the scenarios: one worker (W) serves them in order; some start their own ----

PROMPTS = [("Tell me about ZeroMQ.", 11, 40, {"temperature": 0}, ["--temperature", "0"]),
           ("Write a haiku about queues.", 12345, 40, {}, []),
           ("Why is the sky blue?", 77, 30, {"thinking": False, "temperature": 0.9, "top_k": 40, "top_p": 0.8},
            ["--no-think", "--temperature", "0.9", "--top-k", "40", "--top-p", "0.8"])]
REFS = []
B = None  # the fake broker
W = None  # the worker
IDENT = None  # its identity at the broker
next_job = [100]


def new_job():
    next_job[0] += 1
    return next_job[0]


def need_worker():
    if W is None or IDENT is None or W.proc.poll() is not None:
        raise Skip("no worker running (an earlier test failed)")


def chat(prompt_i, rid, job=None, **extra):
    prompt, seed, max_tokens, fields, _ = PROMPTS[prompt_i]
    job = job or new_job()
    B.send(IDENT, b"CHAT", job, chat_body(rid, prompt, seed=seed, max_tokens=max_tokens, **fields, **extra))
    return job


def test_ready_fields():
    global B, W, IDENT
    # The references first: the fake broker is not kept waiting while they run.
    for prompt, seed, max_tokens, _, flags in PROMPTS:
        REFS.append(generate(prompt, seed, max_tokens, *flags))
    B = FakeBroker()
    # The default drain bound (10 s), as much longer as the steps are slower.
    W = Worker(B, "--capacity", "2", "--ctx-size", str(CTX), "--drain-ms", str(round(10000 * SLOW)))
    _, ident, job, ready = B.expect("READY", timeout=20)
    IDENT = ident
    check(job is None, "READY has no job id frame")
    want = {"model": "smollm3-tiny-q4_k_m", "capacity": 2, "backend": BACKEND, "n_ctx": CTX, "heartbeat_ms": HB_MS,
            "name": f"{socket.gethostname()}:{W.proc.pid}"}
    check(ready == want, f"READY {ready}, expected {want}")
    line = [l for l in W.stderr().splitlines() if "capacity 2" in l]
    check(len(line) == 1 and "smollm3-tiny-q4_k_m" in line[0] and B.endpoint in line[0] and "GB" in line[0],
          f"no start-up line with model, memory, capacity and endpoint:\n{W.stderr()}")


def test_chat_greedy_matches_generate():
    need_worker()
    job = chat(0, "greedy")
    check_same_as_generate(collect(B, [job])[job], "greedy", REFS[0])


def test_chat_sampled_matches_generate():
    need_worker()
    # No sampling fields but the seed: the worker's defaults are generate's.
    job = chat(1, "sampled")
    check_same_as_generate(collect(B, [job])[job], "sampled", REFS[1])
    job = chat(2, "sampled-no-think")
    check_same_as_generate(collect(B, [job])[job], "sampled-no-think", REFS[2])


def test_two_concurrent_chats():
    need_worker()
    a, b = chat(0, "first"), chat(1, "second")
    order = []
    got = {a: [], b: []}
    while len(order) < 2 or any(not f or f[-1][0] != "DONE" for f in got.values()):
        _, _, cmd, job, body = B.recv(30)
        check(job in got, f"a frame for job {job}")
        got[job].append((cmd, body))
        order.append(job)
    # Both ran at once: frames of the two jobs interleave before the first DONE.
    first_done = min(len(got[a]), len(got[b]))
    check(order[:first_done * 2].count(a) > 1 and order[:first_done * 2].count(b) > 1,
          f"the jobs did not run together: {order[:20]}")
    done_a = check_same_as_generate(got[a], "first", REFS[0])
    check_same_as_generate(got[b], "second", REFS[1])
    check(done_a["usage"]["cached_tokens"] > 0, "the repeated prompt reused no cached prefix")


def test_chats_past_capacity_wait():
    need_worker()
    # Capacity 2: the third request waits in the worker for one of the first
    # two to end, and its queue_ms says so.
    jobs = [chat(0, "c0"), chat(1, "c1"), chat(2, "c2")]
    got = collect(B, jobs)
    done = [check_stream(got[j], f"c{i}")[3] for i, j in enumerate(jobs)]
    first_end = min(d["timings"]["total_ms"] for d in done[:2])
    check(done[2]["timings"]["queue_ms"] >= 0.8 * first_end,
          f"the third request waited {done[2]['timings']['queue_ms']:.1f} ms; the first ended after {first_end:.1f} ms")
    check_same_as_generate(got[jobs[2]], "c2", REFS[2])


def test_cancel_mid_stream():
    need_worker()
    job = new_job()
    B.send(IDENT, b"CHAT", job, chat_body("to-cancel", "Count to a thousand.", max_tokens=1500))
    frames = []
    while len(frames) < 3:
        _, _, cmd, j, body = B.recv()
        check(j == job and cmd == "TOKEN", f"{cmd} {body}")
        frames.append((cmd, body))
    B.send(IDENT, b"CANCEL", job)
    frames += collect(B, [job])[job]
    ids, _, _, done = check_stream(frames, "to-cancel")
    check(done["finish"] == "cancelled", f"finish {done['finish']}")
    check(done["usage"]["completion_tokens"] == len(ids) < 1500, f"usage {done['usage']} after {len(ids)} ids")
    # A CANCEL for a job that is not there is ignored.
    B.send(IDENT, b"CANCEL", 999999)


def test_malformed_chat_gets_error():
    need_worker()
    # A field wrong, the id readable: terminal ERROR with the id and seq 0.
    job = new_job()
    B.send(IDENT, b"CHAT", job, {"id": "bad1", "messages": [{"role": "user", "content": "hi"}], "temperature": 7})
    _, _, j, e = B.expect("ERROR")
    check(j == job and e.get("id") == "bad1" and e.get("seq") == 0 and e.get("code") == "bad_request"
          and "temperature" in e.get("message", ""), f"ERROR {e}")
    # The id itself unreadable: an ERROR without id.
    B.send(IDENT, b"CHAT", new_job(), {"messages": [{"role": "user", "content": "hi"}]})
    _, _, _, e = B.expect("ERROR")
    check("id" not in e and e.get("code") == "bad_request" and "id" in e.get("message", ""), f"ERROR {e}")
    # A body that is not msgpack, a wrong header, an unknown version.
    B.send(IDENT, b"CHAT", new_job(), raw=b"\xc1")
    _, _, _, e = B.expect("ERROR")
    check(e.get("code") == "bad_frame" and "id" not in e, f"ERROR {e}")
    B.outbox.put([IDENT, b"SMQ/2", b"HEARTBEAT", msgpack.packb({})])
    _, _, _, e = B.expect("ERROR")
    check(e.get("code") == "unsupported_version" and "SMQ/1" in e.get("message", ""), f"ERROR {e}")
    # A prompt longer than the context.
    job = new_job()
    B.send(IDENT, b"CHAT", job, chat_body("long", "lorem ipsum " * CTX))
    _, _, j, e = B.expect("ERROR")
    check(j == job and e.get("id") == "long" and e.get("code") == "prompt_too_long", f"ERROR {e}")
    # And the worker still serves.
    job = new_job()
    B.send(IDENT, b"CHAT", job, chat_body("after", "hi", max_tokens=2))
    _, _, _, done = check_stream(collect(B, [job])[job], "after")
    check(done["finish"] == "length", f"finish {done['finish']}")


def test_heartbeats_on_time():
    need_worker()
    if SLOW > 1:
        # between heartbeats the worker runs one step, which it cannot cut short
        raise Skip(f"heartbeat gaps are bounded by a step's time: not checked {SLOW:g} times slower")
    # A second of generating, then a second idle; and everything before.
    job = new_job()
    B.send(IDENT, b"CHAT", job, chat_body("busy", "Count to a thousand.", max_tokens=1500))
    end = time.monotonic() + 1.0
    while time.monotonic() < end:
        B.expect("TOKEN")
    B.send(IDENT, b"CANCEL", job)
    check(collect(B, [job])[job][-1][1]["finish"] == "cancelled", "the busy job was not cancelled")
    time.sleep(1.0)
    beats = [(t, b) for t, ident, b in B.heartbeats if ident == IDENT]
    check(len(beats) >= 2 / (HB_MS / 1000) - 1, f"{len(beats)} heartbeats")
    gaps = [b[0] - a[0] for a, b in zip(beats, beats[1:])]
    late = [g for g in gaps if g > 2 * HB_MS / 1000]
    check(not late, f"heartbeats every {HB_MS} ms, but gaps of {[round(g * 1000) for g in late]} ms")
    mean = sum(gaps) / len(gaps)
    check(abs(mean - HB_MS / 1000) < 0.25 * HB_MS / 1000, f"heartbeats every {mean * 1000:.0f} ms on average")
    check(all(set(b) == {"capacity", "running"} and b["capacity"] == 2 and 0 <= b["running"] <= 3 for _, b in beats),
          f"heartbeat bodies {[b for _, b in beats if b['capacity'] != 2 or not 0 <= b['running'] <= 3][:3]}")
    check(any(b["running"] > 0 for _, b in beats), "no heartbeat while requests ran")


def test_heartbeats_through_long_steps():
    """Steps longer than the broker's liveness (64 sequences decoding on one
    CPU thread, heartbeats every 20 ms): the heartbeats still come on time,
    sent from inside each step (engine_set_progress). They once waited for
    the step to end, and a broker with liveness 3 would have dropped the
    worker at every step."""
    if SLOW > 1 or BACKEND != "cpu":
        raise Skip("only the CPU backend calls the worker inside a step (a GPU's steps take milliseconds)")
    hb = 20
    b2 = FakeBroker(hb_ms=hb)
    # liveness 50: the worker itself must not give up on a broker it reads only between steps
    w2 = Worker(b2, "--threads", "1", "--capacity", "64", "--ctx-size", "1024", "--kv-tokens", "16384", hb_ms=hb,
                liveness=50)
    try:
        _, ident, _, _ = b2.expect("READY", timeout=30)
        jobs = {}
        for i in range(64):
            job = new_job()
            jobs[job] = []
            b2.send(ident, b"CHAT", job, chat_body(f"many{i}", "Hi", seed=i, max_tokens=16, thinking=False))
        open_jobs = set(jobs)
        while open_jobs:
            t, _, cmd, job, body = b2.recv(60)
            check(job in jobs and cmd in ("TOKEN", "DONE"), f"{cmd} for job {job}: {body}")
            jobs[job].append(t)
            if cmd == "DONE":
                open_jobs.discard(job)
        # a step's length: the time between a job's consecutive frames (the median)
        start = min(ts[0] for ts in jobs.values())
        end = max(ts[-1] for ts in jobs.values())
        steps = sorted(b - a for ts in jobs.values() for a, b in zip(ts, ts[1:]))
        step = steps[len(steps) // 2]
        if step < 3 * hb / 1000:
            raise Skip(f"steps of {step * 1000:.0f} ms here: not longer than 3 heartbeats ({3 * hb} ms)")
        beats = [t for t, i, _ in b2.heartbeats if i == ident and start <= t <= end]
        gaps = sorted(b - a for a, b in zip(beats, beats[1:]))
        check(len(beats) >= (end - start) / (2 * hb / 1000),
              f"{len(beats)} heartbeats in {end - start:.2f} s of {step * 1000:.0f} ms steps: not one every {hb} ms")
        median, longest = gaps[len(gaps) // 2], gaps[-1]
        print(f"  steps of {step * 1000:.0f} ms (median); {len(beats)} heartbeats in {end - start:.2f} s, "
              f"{median * 1000:.0f} ms apart (median), {longest * 1000:.0f} at most")
        check(median < 2 * hb / 1000, f"heartbeats {median * 1000:.0f} ms apart (median)")
        check(w2.proc.poll() is None, "the worker exited")
    finally:
        w2.kill()
        b2.close()


def test_silent_broker_gets_ready_again():
    need_worker()
    global IDENT
    job = new_job()
    B.send(IDENT, b"CHAT", job, chat_body("orphan", "Count to a thousand.", max_tokens=1500))
    B.expect("TOKEN")
    B.silent = True
    t0 = time.monotonic()
    try:
        while True:
            t, ident, cmd, j, body = B.recv(5)
            if cmd == "READY":
                break
            check(j == job and cmd == "TOKEN", f"{cmd} {body} while silent")
    finally:
        # whatever happened, the broker speaks again: a failure here must not
        # leave the next tests a silent broker and a worker that keeps leaving
        B.silent = False
    old_ident = IDENT
    IDENT = ident
    waited = t - t0
    # The worker counts from the last heartbeat it heard, sent up to an
    # interval before the silence began: liveness - 1 to liveness intervals.
    lo, hi = (LIVENESS - 1) * HB_MS / 1000, (LIVENESS + 5) * HB_MS / 1000
    check(lo * 0.9 <= waited <= hi, f"READY again after {waited:.2f} s of silence, expected {lo}-{hi} s")
    check(ident != old_ident, "the worker did not reopen its socket")
    time.sleep(3 * HB_MS / 1000)
    while not B.inbox.empty():  # what the old connection had in flight may still come in; nothing else may
        _, i, cmd, j, body = B.recv()
        check(i == old_ident and cmd == "TOKEN", f"{cmd} {body} from {'the old' if i == old_ident else 'the new'} "
              "socket after the new READY")
    job = chat(0, "after-silence")
    check_same_as_generate(collect(B, [job])[job], "after-silence", REFS[0])


def test_disconnect_gets_ready_again():
    need_worker()
    job = new_job()
    B.send(IDENT, b"CHAT", job, chat_body("dropped", "Count to a thousand.", max_tokens=1500))
    B.expect("TOKEN")
    B.send(IDENT, b"DISCONNECT", body={"reason": "unknown worker"})
    while True:
        _, ident, cmd, j, body = B.recv(5)
        if cmd == "READY":
            break
        check(j == job and cmd == "TOKEN", f"{cmd} {body} after DISCONNECT")
    check(ident == IDENT, "READY from another socket")
    time.sleep(3 * HB_MS / 1000)
    check(B.inbox.empty(), "frames for the dropped job after READY")
    beats = [b for t, i, b in B.heartbeats if i == IDENT]
    check(beats[-1]["running"] == 0, f"heartbeat {beats[-1]} after the jobs were dropped")


def test_job_sent_again_after_disconnect():
    """A broker that dropped this worker (silent under load), told it
    DISCONNECT and, once it registered again, sent it the same job again:
    the job runs again from seq 0 to its DONE. It once met the given-up copy
    still in the engine and got 'already running', and the request hung."""
    need_worker()
    job = new_job()
    B.send(IDENT, b"CHAT", job, chat_body("again", "Count to a thousand.", max_tokens=1500))
    B.expect("TOKEN")
    # Both before the worker's next step: the first copy is still there.
    B.send(IDENT, b"DISCONNECT", body={"reason": "unknown worker: send READY"})
    B.send(IDENT, b"CHAT", job, chat_body("again", "Say hi.", max_tokens=3))
    frames = []
    while True:
        _, ident, cmd, j, body = B.recv(10)
        if cmd == "READY" or (j == job and cmd == "TOKEN" and not frames and body.get("seq", 0) > 0):
            continue  # the READY, and the first copy's last TOKENs
        check(j == job, f"{cmd} for job {j}: {body}")
        check(cmd != "ERROR", f"the job sent again was refused: {body}")
        frames.append((cmd, body))
        if cmd == "DONE":
            break
    check_stream(frames, "again")
    check(frames[-1][1]["usage"]["completion_tokens"] == 3, f"{frames[-1][1]}")


def test_running_job_sent_again():
    """A CHAT for a job that runs, with no DISCONNECT before it (a broker
    that re-dispatched the request): the first copy stops without another
    frame and the second runs from seq 0 to its DONE. The worker answered
    an ERROR, which the broker takes as the end of the job."""
    need_worker()
    job = new_job()
    B.send(IDENT, b"CHAT", job, chat_body("first", "Count to a thousand.", max_tokens=1500))
    B.expect("TOKEN")
    B.send(IDENT, b"CHAT", job, chat_body("second", "Say hi.", max_tokens=3))
    frames = []
    while True:
        _, ident, cmd, j, body = B.recv(10)
        check(j == job, f"{cmd} for job {j}: {body}")
        check(cmd != "ERROR", f"the job sent again was refused: {body}")
        if body.get("id") == "first":
            check(not frames, f"{cmd} of the first copy after the second began: {body}")
            continue
        frames.append((cmd, body))
        if cmd == "DONE":
            break
    check_stream(frames, "second")
    check(frames[-1][1]["usage"]["completion_tokens"] == 3, f"{frames[-1][1]}")
    time.sleep(3 * HB_MS / 1000)
    check(B.inbox.empty(), "frames after the second copy's DONE")
    beats = [b for t, i, b in B.heartbeats if i == IDENT]
    check(beats[-1]["running"] == 0, f"heartbeat {beats[-1]}: the first copy still counts")
    check("was sent again: its first copy is dropped" in W.stderr(), "the worker did not say so")


def test_sigterm_finishes_running_jobs():
    need_worker()
    job = chat(1, "draining")
    B.expect("TOKEN")
    t_sig = time.monotonic()
    W.proc.send_signal(signal.SIGTERM)
    time.sleep(0.05)
    late = new_job()
    B.send(IDENT, b"CHAT", late, chat_body("too-late", "hi"))
    frames, late_error, disconnect = [("TOKEN", None)], None, None
    while disconnect is None:
        _, _, cmd, j, body = B.recv(10)
        if cmd == "DISCONNECT":
            disconnect = body
        elif j == late:
            late_error = (cmd, body)
        else:
            check(j == job, f"{cmd} for job {j}")
            frames.append((cmd, body))
    check(late_error and late_error[0] == "ERROR" and late_error[1].get("code") == "shutting_down"
          and late_error[1].get("id") == "too-late" and late_error[1].get("seq") == 0,
          f"a CHAT while draining got {late_error}")
    frames = [(c, b) for c, b in frames[1:]]
    check(frames[-1][0] == "DONE" and frames[-1][1]["finish"] == "length",
          f"the running job ended with {frames[-1]}")
    check(all(b["seq"] == i + 1 for i, (c, b) in enumerate(frames)), "seq gaps while draining")
    check(W.proc.wait(timeout=5 * SLOW) == 0, f"exit status {W.proc.returncode}")
    after = [b for t, i, b in B.heartbeats if i == IDENT and t > t_sig + 0.02]
    check(after and all(b["capacity"] == 0 for b in after), f"heartbeats after SIGTERM: {after}")


def test_second_signal_cancels():
    b2 = FakeBroker()
    w2 = Worker(b2)
    try:
        _, ident, _, _ = b2.expect("READY", timeout=20)
        b2.send(ident, b"CHAT", 1, chat_body("long", "Count to a thousand.", max_tokens=1500))
        b2.expect("TOKEN")
        w2.proc.send_signal(signal.SIGTERM)
        time.sleep(0.1)
        w2.proc.send_signal(signal.SIGINT)
        done = None
        while True:
            _, _, cmd, j, body = b2.recv(10)
            if cmd == "DONE":
                done = body
            if cmd == "DISCONNECT":
                break
        check(done and done["finish"] == "cancelled", f"DONE {done}")
        check(w2.proc.wait(timeout=5 * SLOW) == 0, f"exit status {w2.proc.returncode}")
    finally:
        w2.kill()
        b2.close()


def test_drain_bound():
    # --drain-ms: after the first signal, running requests may finish for that long; then
    # each still running (or waiting) ends with ERROR shutting_down and the worker leaves.
    b2 = FakeBroker()
    w2 = Worker(b2, "--drain-ms", "400", "--capacity", "2")
    try:
        _, ident, _, _ = b2.expect("READY", timeout=20)
        for job in (1, 2):
            b2.send(ident, b"CHAT", job, chat_body(f"long{job}", "Count to a thousand.", max_tokens=1500))
        # Signal only once both jobs stream: a CHAT the worker reads after the
        # signal is refused as new work (test_sigterm_finishes_running_jobs),
        # and on a busy host the second CHAT can arrive after the first token.
        ends, seqs = {}, {1: [], 2: []}
        while not (seqs[1] and seqs[2]):
            _, _, cmd, j, body = b2.recv(10)
            check(cmd == "TOKEN", f"{cmd} {body} before SIGTERM")
            seqs[j].append(body["seq"])
        t_sig = time.monotonic()
        w2.proc.send_signal(signal.SIGTERM)
        while True:
            _, _, cmd, j, body = b2.recv(10 * SLOW)
            if cmd == "DISCONNECT":
                break
            if cmd in ("TOKEN", "DONE", "ERROR"):
                check(j not in ends, f"{cmd} for job {j} after its end")
                seqs[j].append(body["seq"])
                if cmd != "TOKEN":
                    ends[j] = (cmd, body, time.monotonic() - t_sig)
        took = time.monotonic() - t_sig
        for job in (1, 2):
            cmd, body, at = ends.get(job, (None, None, 0))
            check(cmd == "ERROR" and body["code"] == "shutting_down" and body["id"] == f"long{job}" and
                  "400 ms" in body["message"], f"job {job} ended with {cmd} {body}")
            check(0.35 < at < 0.4 + 2 * SLOW, f"job {job} ended {at:.2f} s after SIGTERM (bound 0.4 s)")
            first = seqs[job][0] if seqs[job] else 0
            check(seqs[job] == list(range(first, first + len(seqs[job]))), f"job {job}: seq {seqs[job]}")
        check(w2.proc.wait(timeout=5 * SLOW) == 0, f"exit status {w2.proc.returncode}")
        check("drain bound (--drain-ms 400) passed: ending 2 running requests" in w2.stderr(), w2.stderr())
        check(took < 0.4 + 3 * SLOW, f"left {took:.2f} s after SIGTERM")
    finally:
        w2.kill()
        b2.close()


def test_chunked_prefill_matches_generate():
    # Steps of a millisecond (--step-ms 1, on any backend): the prompt is
    # read in many steps, and the text must not change. (Heartbeats every
    # 10 ms with liveness 2 did this before; a worker then gave up on the
    # fake broker whenever its thread paused 20 ms on a busy host.)
    b2 = FakeBroker()
    w2 = Worker(b2, "--step-ms", "1")
    try:
        _, ident, _, _ = b2.expect("READY", timeout=20)
        m = re.search(r"steps of at most (\d+) tokens", w2.stderr())
        check(m, f"no step bound in the start-up line: {w2.stderr()}")
        step = int(m.group(1))
        check(step < REFS[0]["usage"]["prompt_tokens"] / 2,
              f"steps of {step} tokens do not split a prompt of {REFS[0]['usage']['prompt_tokens']}")
        prompt, seed, max_tokens, fields, _ = PROMPTS[0]
        b2.send(ident, b"CHAT", 1, chat_body("chunked", prompt, seed=seed, max_tokens=max_tokens, **fields))
        check_same_as_generate(collect(b2, [1])[1], "chunked", REFS[0])
    finally:
        w2.kill()
        b2.close()


def test_rope_scaling_yarn():
    # A context twice the trained one with YaRN: announced in READY, and a
    # chat's tokens equal generate's with the same flags (so the worker
    # applies the same RoPE); past the trained context without it, an error.
    flags = ["--ctx-size", "131072", "--rope-scaling", "yarn"]
    prompt, seed, max_tokens, fields, gen_flags = PROMPTS[0]
    ref = generate(prompt, seed, max_tokens, *gen_flags, *flags)
    b2 = FakeBroker()
    w2 = Worker(b2, "--capacity", "1", "--kv-tokens", "131072", *flags)
    try:
        _, ident, _, ready = b2.expect("READY", timeout=30)
        check(ready.get("n_ctx") == 131072, f"READY n_ctx {ready.get('n_ctx')}, expected 131072")
        b2.send(ident, b"CHAT", 1, chat_body("yarn", prompt, seed=seed, max_tokens=max_tokens, **fields))
        check_same_as_generate(collect(b2, [1])[1], "yarn", ref)
    finally:
        w2.kill()
        b2.close()
    p = subprocess.run([WORKER, "--model", TINY, "--ctx-size", "131072", "--broker", "tcp://127.0.0.1:1"],
                       capture_output=True, text=True, timeout=20 * SLOW)
    check(p.returncode == 1 and "--rope-scaling yarn" in p.stderr,
          f"a context past the model's without YaRN: exit {p.returncode}, stderr: {p.stderr.strip()}")


def test_curve():
    public, secret = zmq.curve_keypair()
    b2 = FakeBroker(curve_secret=secret)
    with tempfile.NamedTemporaryFile("w", suffix=".cert") as cert:
        wpub, wsec = zmq.curve_keypair()
        cert.write('#   ZeroMQ CURVE **Secret** Certificate\nmetadata\ncurve\n'
                   f'    public-key = "{wpub.decode()}"\n    secret-key = "{wsec.decode()}"\n')
        cert.flush()
        workers = [Worker(b2, "--broker-key", public.decode()),
                   Worker(b2, "--broker-key", public.decode(), "--key-file", cert.name)]
        try:
            for _ in workers:
                _, ident, _, ready = b2.expect("READY", timeout=20)
                check(ready["model"] == "smollm3-tiny-q4_k_m", f"READY {ready}")
            # A worker without the broker's key never gets through.
            plain = Worker(b2)
            workers.append(plain)
            time.sleep(1.0)
            check(b2.inbox.empty(), "a plain worker got through to a CURVE broker")
        finally:
            for w in workers:
                w.kill()
            b2.close()


def test_usage_and_errors():
    def run(*args):
        return subprocess.run([WORKER, *args], capture_output=True, text=True, timeout=20 * SLOW)
    for args, code, want in [((), 2, "--model is required"),
                             (("--model", TINY, "--capacity", "0"), 2, "--capacity"),
                             (("--model", TINY, "--step-ms", "0"), 2, "--step-ms wants a whole number from 1"),
                             (("--model", TINY, "--bogus", "1"), 2, "unknown argument --bogus"),
                             (("--model", TINY, "--key-file", "x"), 2, "--broker-key"),
                             (("--model", TINY, "--backend", "tpu"), 2, "--backend"),
                             (("--model", TINY, "--rope-scaling", "ntk"), 1, 'rope scaling "ntk" is not supported'),
                             (("--model", TINY, "--broker-key", "short"), 1, "--broker-key"),
                             (("--model", os.path.join(DATA, "models/smollm3-tiny-q4_k_m.info.json")), 1, "info.json"),
                             (("--model", TINY, "--broker", "nonsense://x"), 1, "--broker nonsense://x"),
                             (("--model", TINY, "--alive-file", "/nonexistent/alive"), 1,
                              "--alive-file /nonexistent/alive: cannot make it")]:
        p = run(*args)
        check(p.returncode == code and want in p.stderr,
              f"smolmq-worker {' '.join(args)}: exit {p.returncode} (want {code}), stderr: {p.stderr.strip()}")


def main():
    if not os.access(WORKER, os.X_OK) or not os.access(SMOLMQ, os.X_OK):
        print(f"SKIP worker: {WORKER} or {SMOLMQ} not built")
        return 0

    def on_fail():
        if W is not None:
            sys.stderr.write("worker stderr:\n" + W.stderr()[-3000:] + "\n")
        if B is not None:
            B.drop_pending()

    try:
        return run_tests("worker", globals(), on_fail)
    finally:
        if W is not None:
            W.kill()
        if B is not None:
            B.close()


if __name__ == "__main__":
    sys.exit(main())
