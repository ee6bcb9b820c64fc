#!/usr/bin/env python3
"""cluster_test.py - broker, workers and clients together on loopback.

Starts smolmq-broker and smolmq-worker processes on random free ports with
the tiny test model, and talks to them with the Python client library
(proto/clients/python), raw ZeroMQ sockets, the Node client and `smolmq ask`.
Needs Debian's python3-zmq and python3-msgpack (run it with the python3 that
has them: tests/run.sh uses $SMQ_PYTHON). Every process it starts is killed
when its test ends, pass or fail. Prints one PASS/FAIL/SKIP line per test.
"""
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "proto", "clients", "python"))
import msgpack  # noqa: E402
import zmq  # noqa: E402
from smolmq_client import Client  # noqa: E402
from nettest import check, free_port, npm_ci, run_tests  # noqa: E402

BUILD = os.environ.get("SMQ_BUILD", "build")
BIN = os.path.join(BUILD, "bin")
TOOL = os.environ.get("SMQ_BIN", os.path.join(BIN, "smolmq"))
MODEL = os.path.join(os.environ.get("SMQ_TEST_DATA", "tests/data"), "models/smollm3-tiny-q4_k_m.gguf")
MODEL_NAME = "smollm3-tiny-q4_k_m"
HB_MS = 250  # heartbeats in the tests: a lost peer is noticed within 3 x 250 ms
TMP = tempfile.mkdtemp(prefix="smolmq-cluster-")





class Cluster:
    """A broker and workers; `with Cluster(...) as c:` kills them all at the end."""

    def __init__(self, workers=2, capacity=4, broker_args=(), worker_args=(), client_kw=None):
        self.client_kw = client_kw or {}
        self.cport, self.wport = free_port(), free_port()
        self.client_ep = f"tcp://127.0.0.1:{self.cport}"
        self.worker_ep = f"tcp://127.0.0.1:{self.wport}"
        self.broker_args = list(broker_args)
        self.worker_args = ["--capacity", str(capacity), "--threads", "1", *worker_args]
        self.n_workers = workers
        self.broker = None
        self.workers = []
        self.logs = []

    def log(self, name):
        f = open(os.path.join(TMP, f"{name}-{len(self.logs)}.log"), "w+")
        self.logs.append((name, f))
        return f

    def start_broker(self):
        self.broker = subprocess.Popen(
            [os.path.join(BIN, "smolmq-broker"), "--clients", f"tcp://127.0.0.1:{self.cport}",
             "--workers", f"tcp://127.0.0.1:{self.wport}", "--heartbeat-ms", str(HB_MS), "--verbose",
             *self.broker_args], stdout=subprocess.DEVNULL, stderr=self.log("broker"))
        return self.broker

    def start_worker(self, *extra):
        w = subprocess.Popen(
            [os.path.join(BIN, "smolmq-worker"), "--model", MODEL, "--broker", self.worker_ep,
             "--heartbeat-ms", str(HB_MS), *self.worker_args, *extra],
            stdout=subprocess.DEVNULL, stderr=self.log("worker"))
        self.workers.append(w)
        return w

    def __enter__(self):
        self.start_broker()
        for _ in range(self.n_workers):
            self.start_worker()
        self.wait_workers(self.n_workers)
        return self

    def client(self, **kw):
        return Client(self.client_ep, heartbeat_ms=HB_MS, **{**self.client_kw, **kw})

    def stats(self, timeout=2.0):
        c = self.client()
        try:
            return c.stats(timeout=timeout)
        finally:
            c.close()

    def wait_workers(self, n, timeout=20.0):
        end = time.time() + timeout
        while time.time() < end:
            try:
                s = self.stats(timeout=1.0)
                if len(s["workers"]) == n:
                    return s
            except Exception:
                pass
            time.sleep(0.1)
        raise AssertionError(f"{n} workers did not register within {timeout} s\n{self.tail()}")

    def tail(self, n=40):
        """The last n lines of each process's log (the broker's is --verbose:
        every dispatch and drop, which a failure under load needs)."""
        out = []
        for name, f in self.logs:
            f.flush()
            f.seek(0)
            lines = f.read().splitlines()[-n:]
            out.append(f"--- {name}:\n" + "\n".join(lines))
        return "\n".join(out)

    def __exit__(self, *exc):
        for p in [self.broker, *self.workers]:
            if p and p.poll() is None:
                p.kill()
            if p:
                p.wait()
        # Sanitizer reports (SMQ_BUILD=build/san) fail the test that met them.
        reports = []
        for name, f in self.logs:
            f.flush()
            f.seek(0)
            text = f.read()
            for marker in ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:"):
                if marker in text:
                    at = text.index(marker)
                    reports.append(f"{name}: {text[max(0, at - 200):at + 1500]}")
            f.close()
        if reports and not exc[0]:
            raise AssertionError("sanitizer report:\n" + "\n".join(reports))
        return False


def user(text):
    return [{"role": "user", "content": text}]


def drain(client, ids, timeout=60.0):
    """Events of requests `ids` until each has its terminal event: {id: [events]}."""
    events = {i: [] for i in ids}
    open_ = set(ids)
    end = time.time() + timeout
    while open_:
        left = end - time.time()
        check(left > 0, f"{len(open_)} requests did not end within {timeout} s")
        ev = client.next_event(timeout=left)
        if ev is None:
            continue
        check(ev.id in events, f"an event for a request never sent: {ev.id}")
        check(ev.id in open_, f"an event for {ev.id} after its terminal event")
        events[ev.id].append(ev)
        if ev.kind in ("done", "error"):
            open_.discard(ev.id)
    return events


def check_stream(evs, rid):
    seqs = [e.seq for e in evs]
    check(seqs == list(range(len(evs))), f"{rid}: seq not gapless: {seqs[:20]}")
    check(evs[-1].kind in ("done", "error"), f"{rid}: no terminal event")
    check(all(e.kind == "token" for e in evs[:-1]), f"{rid}: a terminal event before the last")


def text_of(evs):
    return ("".join(e.reasoning or "" for e in evs if e.kind == "token"),
            "".join(e.content or "" for e in evs if e.kind == "token"),
            [t for e in evs if e.kind == "token" for t in (e.tokens or [])])


def ask(cl, messages, timeout=20, **params):
    """One request to its end: finish, code, message, content."""
    rid = cl.submit(messages, **params)
    evs = drain(cl, [rid], timeout)[rid]
    check_stream(evs, rid)
    last = evs[-1]
    return {"finish": last.finish, "code": last.code, "message": last.message or "", "content": text_of(evs)[1]}


def generate(prompt, seed, max_tokens):
    p = subprocess.run([TOOL, "generate", "--model", MODEL, "--prompt", prompt, "--seed", str(seed),
                        "--max-tokens", str(max_tokens), "--threads", "1", "--json"],
                       capture_output=True, text=True)
    check(p.returncode == 0, f"smolmq generate failed: {p.stderr.strip()}")
    return json.loads(p.stdout)


# ---- tests ----

def test_fifty_concurrent_chats_match_generate():
    prompts = [f"Question number {i}: what is {i} plus {i}?" for i in range(10)]
    want = {}
    for i, p in enumerate(prompts):
        want[i] = generate(p, 100 + i, 12)
    with Cluster(workers=2, capacity=8) as c:
        cl = c.client()
        ids = {}
        for k in range(50):
            i = k % 10
            rid = cl.submit(user(prompts[i]), seed=100 + i, max_tokens=12)
            ids[rid] = i
        events = drain(cl, list(ids), timeout=120)
        for rid, i in ids.items():
            evs = events[rid]
            check_stream(evs, rid)
            check(evs[-1].kind == "done", f"{rid}: ended with {evs[-1].kind} {evs[-1].code}: {evs[-1].message}")
            reasoning, content, tokens = text_of(evs)
            check(tokens == want[i]["ids"], f"{rid}: tokens {tokens} != generate's {want[i]['ids']}")
            check(content == want[i]["content"] and reasoning == want[i]["reasoning"],
                  f"{rid}: text differs from generate: {content!r} vs {want[i]['content']!r}")
            check(evs[-1].finish == "length", f"{rid}: finish {evs[-1].finish}")
            check(evs[-1].usage["completion_tokens"] == 12, f"{rid}: usage {evs[-1].usage}")
        s = c.stats()
        check(s["totals"]["completed"] == 50, f"stats totals {s['totals']}")
        served = sorted(w["in_flight"] for w in s["workers"])
        check(served == [0, 0], f"in_flight after all done: {served}")
        cl.close()


def test_cancel_mid_stream():
    with Cluster(workers=1) as c:
        cl = c.client()
        rid = cl.submit(user("Tell me a long story."), max_tokens=100000, seed=1)
        evs = []
        while True:
            ev = cl.next_event(timeout=20)
            check(ev is not None, "no token within 20 s")
            evs.append(ev)
            if len(evs) == 3:
                cl.cancel(rid)
            if ev.kind in ("done", "error"):
                break
        check_stream(evs, rid)
        check(evs[-1].kind == "done" and evs[-1].finish == "cancelled", f"ended with {evs[-1].kind} {evs[-1].finish}")
        time.sleep(0.3)
        s = c.stats()
        check(s["workers"][0]["in_flight"] == 0, f"the worker still holds it: {s['workers']}")
        cl.close()


def test_worker_killed_mid_stream():
    with Cluster(workers=2, capacity=2) as c:
        cl = c.client()
        ids = [cl.submit(user(f"Story {i}, please."), max_tokens=400, seed=i) for i in range(4)]
        started = set()
        events = {i: [] for i in ids}
        end = time.time() + 30
        while len(started) < 4 and time.time() < end:
            ev = cl.next_event(timeout=1)
            if ev:
                events[ev.id].append(ev)
                started.add(ev.id)
        check(len(started) == 4, f"only {len(started)} of 4 requests started")
        victim = c.workers[0]
        victim.send_signal(signal.SIGKILL)
        t_kill = time.time()
        lost, done = {}, set()
        end = time.time() + 60
        while len(lost) + len(done) < 4 and time.time() < end:
            ev = cl.next_event(timeout=1)
            if not ev:
                continue
            events[ev.id].append(ev)
            if ev.kind == "error":
                check(ev.code == "worker_lost", f"{ev.id}: {ev.code}: {ev.message}")
                lost[ev.id] = time.time() - t_kill
            elif ev.kind == "done":
                done.add(ev.id)
        check(len(lost) == 2 and len(done) == 2, f"lost {sorted(lost)}, done {sorted(done)}\n{c.tail()}")
        worst = max(lost.values())
        check(worst < 3.0, f"worker_lost came {worst:.2f} s after the kill")
        for rid in ids:
            check_stream(events[rid], rid)
        for rid in done:
            check(events[rid][-1].finish == "length", f"{rid}: finish {events[rid][-1].finish}")
        # New requests go to the survivor.
        r = ask(cl, user("Still there?"), max_tokens=4, seed=1, timeout=20)
        check(r["finish"] == "length", f"after the kill: {r}")
        s = c.stats()
        check(len(s["workers"]) == 1, f"workers after the kill: {s['workers']}")
        print(f"    worker_lost {min(lost.values()):.2f}-{worst:.2f} s after kill -9", flush=True)
        cl.close()


def test_stalled_worker_requests_are_redispatched():
    """A worker that stops answering (SIGSTOP) holds requests that never
    started: after its liveness they go to the other worker and finish."""
    with Cluster(workers=2, capacity=4) as c:
        stalled = c.workers[0]
        stalled.send_signal(signal.SIGSTOP)
        try:
            cl = c.client()
            ids = [cl.submit(user(f"Hello {i}"), max_tokens=4, seed=i) for i in range(6)]
            t0 = time.time()
            events = drain(cl, ids, timeout=30)
            took = time.time() - t0
            for rid in ids:
                check_stream(events[rid], rid)
                check(events[rid][-1].kind == "done", f"{rid}: {events[rid][-1]}")
            s = c.stats()
            check(s["totals"]["redispatched"] >= 1 and len(s["workers"]) == 1, f"{s}")
            print(f"    {s['totals']['redispatched']} requests re-dispatched; all 6 done in {took:.2f} s", flush=True)
            cl.close()
        finally:
            stalled.send_signal(signal.SIGCONT)


def test_unknown_worker_told_once():
    """A worker the broker dropped as silent, whose frames sent before it
    heard arrive together, is told DISCONNECT once, not once a frame: a
    second DISCONNECT made it register twice, and the second READY took
    back the requests dispatched to it after the first (a CI run hung on
    that). Told again after a liveness of silence; served after its READY."""
    with Cluster(workers=0) as c:
        w = raw_dealer(c.worker_ep)
        ready = [b"SMQ/1", b"READY", msgpack.packb({"model": "told-once", "capacity": 2, "name": "raw",
                                                   "heartbeat_ms": HB_MS})]
        hb = [b"SMQ/1", b"HEARTBEAT", msgpack.packb({"capacity": 2, "running": 0})]
        w.send_multipart(ready)
        c.wait_workers(1)
        time.sleep(4 * HB_MS / 1000)  # silent past liveness: dropped
        check(not c.stats()["workers"], "the silent worker is still registered")
        for _ in range(3):
            w.send_multipart(hb)

        def disconnects(within):
            n, end = 0, time.time() + within
            while time.time() < end:
                if w.poll(50):
                    frames = w.recv_multipart()
                    n += frames[1] == b"DISCONNECT"
            return n
        check(disconnects(0.5) == 1, "not one DISCONNECT for three frames of an unknown worker")
        time.sleep(4 * HB_MS / 1000)
        w.send_multipart(hb)
        check(disconnects(0.5) == 1, "no DISCONNECT again after a liveness of silence")
        w.send_multipart(ready)
        c.wait_workers(1)
        cl = c.client()
        rid = cl.submit(user("hi"), model="told-once", max_tokens=1)
        end = time.time() + 5
        while time.time() < end:
            if w.poll(100):
                frames = w.recv_multipart()
                if frames[1] != b"HEARTBEAT":
                    break
        check(frames[1] == b"CHAT", f"the registered worker got {frames[1]!r}, not the CHAT")
        check(msgpack.unpackb(frames[-1])["id"] == rid, f"CHAT for {frames[-1]!r}")
        cl.close()
        w.close()


def test_affinity_reuses_the_workers_kv():
    """The second turn of a conversation goes to the worker that served the
    first (the affinity key), which prefills only the new text."""
    with Cluster(workers=2, capacity=4) as c:
        cl = c.client()
        convs = [f"conv-{i}" for i in range(4)]
        # Long, distinct first turns, sent together so that they spread over
        # both workers; then each second turn must find its own first turn's
        # KV (not just the system prompt every worker has cached).
        msgs = {conv: user(f"Tell me about {conv}: " + " ".join(f"{conv} fact {k}." for k in range(60)))
                for conv in convs}
        ids = {cl.submit(msgs[conv], affinity=conv, max_tokens=6, seed=1): conv for conv in convs}
        events = drain(cl, list(ids), timeout=30)
        s = c.stats()
        check(sorted(w["in_flight"] for w in s["workers"]) == [0, 0], f"{s}")
        first = {}
        for rid, conv in ids.items():
            done = events[rid][-1]
            check(done.kind == "done", f"{conv}: {done}")
            first[conv] = (text_of(events[rid])[1], done.usage["prompt_tokens"])
        for conv in convs:
            content, p1 = first[conv]
            turn2 = msgs[conv] + [{"role": "assistant", "content": content}, {"role": "user", "content": "And then?"}]
            rid = cl.submit(turn2, affinity=conv, max_tokens=4, seed=2)
            done = drain(cl, [rid], timeout=20)[rid][-1]
            check(done.kind == "done", f"{conv}: {done}")
            cached, prompt = done.usage["cached_tokens"], done.usage["prompt_tokens"]
            check(cached >= p1 - 32, f"{conv}: turn 2 reused {cached} of {prompt} prompt tokens (turn 1 had {p1})")
        print(f"    turn 2 reused {cached} of {prompt} prompt tokens (last conversation)", flush=True)
        cl.close()


def test_broker_restart():
    with Cluster(workers=2) as c:
        cl = c.client()
        r = ask(cl, user("Hello"), max_tokens=4, seed=1, timeout=20)
        check(r["finish"] == "length", f"before the restart: {r}")
        for sig in (signal.SIGKILL, signal.SIGTERM):
            c.broker.send_signal(sig)
            c.broker.wait(timeout=15)
            t0 = time.time()
            c.start_broker()
            c.wait_workers(2, timeout=5)
            cl2 = c.client()
            r = ask(cl2, user("Hello again"), max_tokens=4, seed=1, timeout=10)
            took = time.time() - t0
            check(r["finish"] == "length", f"after the restart: {r}")
            check(took < 5.0, f"service resumed {took:.2f} s after the restart ({sig.name})")
            print(f"    {sig.name}: service resumed {took:.2f} s after the restart", flush=True)
            cl2.close()
        cl.close()


def raw_dealer(ep):
    ctx = zmq.Context.instance()
    s = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.setsockopt(zmq.RCVTIMEO, 3000)
    s.connect(ep)
    return s


def recv_body(s):
    """The next message other than a HEARTBEAT: (command, body)."""
    while True:
        frames = s.recv_multipart()
        check(frames[0] == b"SMQ/1", f"header {frames[0]!r}")
        if frames[1] != b"HEARTBEAT":
            return frames[1].decode(), msgpack.unpackb(frames[-1], raw=False)


def test_malformed_frames_get_errors():
    with Cluster(workers=1) as c:
        s = raw_dealer(c.client_ep)
        bad = [
            ([b"HELLO"], "bad_frame"),
            ([b"SMQ/1", b"CHAT"], "bad_frame"),
            ([b"SMQ/1", b"FOO", b"\x80"], "bad_frame"),
            ([b"SMQ/2", b"CHAT", b"\x80"], "unsupported_version"),
            ([b"SMQ/1", b"CHAT", b"\x93\x01\x02\x03"], "bad_frame"),
            ([b"SMQ/1", b"CHAT", msgpack.packb({"id": "x", "messages": "nope"})], "bad_request"),
            ([b"SMQ/1", b"CHAT", msgpack.packb({"id": "y", "messages": [{"role": "user", "content": "hi"}],
                                                "temperature": 9})], "bad_request"),
            ([b"SMQ/1", b"TOKEN", msgpack.packb({"id": "z", "seq": 0})], "bad_frame"),
            ([b"SMQ/1", b"CHAT", b"\xdd\xff\xff\xff\xff"], "bad_frame"),
            ([b""], "bad_frame"),
            # more frames than the broker keeps (8 after the routing id)
            ([b"SMQ/1", b"CHAT"] + [b"\x80"] * 10, "bad_frame"),
        ]
        for frames, code in bad:
            s.send_multipart(frames)
            cmd, body = recv_body(s)
            check(cmd == "ERROR" and body["code"] == code, f"{frames!r}: got {cmd} {body}")
            check(body.get("message"), f"{frames!r}: no message")
        # A bad request with a readable id is terminal for that id.
        s.send_multipart([b"SMQ/1", b"CHAT", msgpack.packb({"id": "y2", "messages": [], "max_tokens": 1})])
        cmd, body = recv_body(s)
        check(body.get("id") == "y2" and body.get("seq") == 0 and body["code"] == "bad_request", f"{body}")
        check("messages" in body["message"], f"the message does not name the field: {body['message']}")
        # The broker still serves.
        cl = c.client()
        r = ask(cl, user("Hello"), max_tokens=3, seed=1, timeout=20)
        check(r["finish"] == "length", f"after malformed frames: {r}")
        cl.close()
        s.close()


def test_full_queue_overloaded_and_timeout():
    with Cluster(workers=1, capacity=1, broker_args=["--queue-max", "2"]) as c:
        cl = c.client()
        first = cl.submit(user("Long one"), max_tokens=100000, seed=1)
        ev = cl.next_event(timeout=20)
        check(ev and ev.id == first and ev.kind == "token", f"first request did not start: {ev}")
        q1 = cl.submit(user("Queued 1"), max_tokens=2)
        q2 = cl.submit(user("Queued 2"), max_tokens=2, queue_timeout_ms=400)
        over = cl.submit(user("One too many"), max_tokens=2)
        t0 = time.time()
        got = {}
        while len(got) < 2:
            ev = cl.next_event(timeout=5)
            check(ev is not None, f"no answer for the queued requests: {got}")
            if ev.kind == "error":
                got[ev.id] = (ev.code, time.time() - t0)
        check(got.get(over, ("",))[0] == "overloaded", f"the full queue answered {got}")
        check(got.get(q2, ("",))[0] == "timeout" and 0.3 < got[q2][1] < 1.5, f"queue timeout: {got}")
        cl.cancel(first)
        events = drain(cl, [first, q1], timeout=30)
        check(events[first][-1].finish == "cancelled", f"{events[first][-1]}")
        check(events[q1][-1].kind == "done", f"the queued request: {events[q1][-1]}")
        s = c.stats()
        check(s["totals"]["rejected"] >= 1 and s["totals"]["failed"] >= 1, f"{s['totals']}")
        cl.close()


def test_unknown_model_and_duplicate_id():
    with Cluster(workers=1) as c:
        cl = c.client()
        r = ask(cl, user("hi"), model="no-such-model", max_tokens=2, timeout=5)
        check(r.get("code") == "unknown_model" and MODEL_NAME in r.get("message", ""), f"{r}")
        s = raw_dealer(c.client_ep)
        chat = {"id": "dup", "messages": user("Long"), "max_tokens": 100000}
        s.send_multipart([b"SMQ/1", b"CHAT", msgpack.packb(chat)])
        s.send_multipart([b"SMQ/1", b"CHAT", msgpack.packb(chat)])
        seen_dup = False
        for _ in range(50):
            cmd, body = recv_body(s)
            if cmd == "ERROR" and body["code"] == "duplicate_id":
                check("id" not in body, f"duplicate_id must not end the open request: {body}")
                seen_dup = True
                break
        check(seen_dup, "no duplicate_id error")
        s.send_multipart([b"SMQ/1", b"CANCEL", msgpack.packb({"id": "dup"})])
        while True:
            cmd, body = recv_body(s)
            if cmd in ("DONE", "ERROR"):
                break
        check(cmd == "DONE" and body["finish"] == "cancelled", f"{cmd} {body}")
        s.close()
        cl.close()


def test_vanished_client_is_cancelled_at_the_worker():
    with Cluster(workers=1) as c:
        s = raw_dealer(c.client_ep)
        s.send_multipart([b"SMQ/1", b"CHAT", msgpack.packb({"id": "gone", "messages": user("Long"),
                                                            "max_tokens": 100000})])
        cmd, body = recv_body(s)
        check(cmd == "TOKEN", f"{cmd} {body}")
        s.close()  # linger 0: the connection closes, no CANCEL is sent
        t0 = time.time()
        while time.time() - t0 < 5:
            st = c.stats()
            if st["workers"][0]["in_flight"] == 0:
                break
            time.sleep(0.1)
        took = time.time() - t0
        check(st["workers"][0]["in_flight"] == 0 and st["totals"]["cancelled"] == 1,
              f"after {took:.1f} s: {st}")
        print(f"    the worker freed the vanished client's sequence within {took:.2f} s", flush=True)


def test_sigterm_drains():
    with Cluster(workers=1) as c:
        cl = c.client()
        rid = cl.submit(user("Finish me"), max_tokens=150, seed=2)
        ev = cl.next_event(timeout=20)
        check(ev and ev.kind == "token", f"{ev}")
        c.broker.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        late = raw_dealer(c.client_ep)
        late.send_multipart([b"SMQ/1", b"CHAT", msgpack.packb({"id": "late", "messages": user("x")})])
        cmd, body = recv_body(late)
        check(cmd == "ERROR" and body["code"] == "shutting_down" and body["id"] == "late", f"{cmd} {body}")
        evs = [ev] + drain(cl, [rid], timeout=30)[rid]
        check_stream(evs, rid)
        check(evs[-1].kind == "done" and evs[-1].finish == "length", f"{evs[-1]}")
        check(c.broker.wait(timeout=10) == 0, "the broker did not exit 0")
        late.close()
        cl.close()


def keygen(name):
    path = os.path.join(TMP, name)
    p = subprocess.run([os.path.join(BIN, "smolmq-broker"), "--keygen", path], capture_output=True, text=True)
    check(p.returncode == 0, f"--keygen: {p.stderr}")
    public = p.stdout.split()[2]
    check(len(public) == 40, f"--keygen printed {p.stdout!r}")
    return path, public


def test_curve_allow_lists():
    broker_cert, broker_pub = keygen("broker")
    worker_cert, worker_pub = keygen("worker")
    client_pub, client_sec = (k.decode() for k in zmq.curve_keypair())
    other_pub, other_sec = (k.decode() for k in zmq.curve_keypair())
    asker_cert, asker_pub = keygen("asker")
    clients, workers = os.path.join(TMP, "clients.keys"), os.path.join(TMP, "workers.keys")
    with open(clients, "w") as f:
        f.write(f"# the test client\n{client_pub}\n{asker_pub}\n")
    with open(workers, "w") as f:
        f.write(f"{worker_pub}  # the test worker\n")
    curve = {"server_key": broker_pub, "public_key": client_pub, "secret_key": client_sec}
    with Cluster(workers=1, broker_args=["--curve-secret", broker_cert, "--client-keys", clients,
                                         "--worker-keys", workers],
                 worker_args=["--broker-key", broker_pub, "--key-file", worker_cert],
                 client_kw={"curve": curve}) as c:
        good = c.client()
        r = ask(good, user("Secret hello"), max_tokens=3, seed=1, timeout=20)
        check(r["finish"] == "length", f"an allowed client: {r}")
        good.close()
        # The C client (smolmq ask) with its certificate; without one (a
        # fresh pair, not on the list) it gets no answer; a certificate
        # without the broker's key is a usage error.
        def ask_c(*flags):
            return subprocess.run([TOOL, "ask", "--broker", c.client_ep, "--max-tokens", "3", "--json", *flags,
                                   "Secret hello"], capture_output=True, text=True, timeout=30)
        p = ask_c("--broker-key", broker_pub, "--key-file", asker_cert)
        check(p.returncode == 0 and json.loads(p.stdout)["finish"] == "length",
              f"smolmq ask with an allowed certificate: {p.returncode} {p.stdout} {p.stderr}")
        p = ask_c("--broker-key", broker_pub)
        check(p.returncode == 1, f"smolmq ask with a key off the list: {p.returncode} {p.stdout} {p.stderr}")
        p = ask_c("--key-file", asker_cert)
        check(p.returncode == 2 and "--broker-key" in p.stderr, f"--key-file alone: {p.returncode} {p.stderr}")
        # A key not on the clients' list gets no connection (and so no answer).
        bad = Client(c.client_ep, heartbeat_ms=HB_MS,
                     curve={"server_key": broker_pub, "public_key": other_pub, "secret_key": other_sec})
        try:
            bad.stats(timeout=1.5)
            raise AssertionError("a client key not on the list was answered")
        except TimeoutError:
            pass
        bad.close()
        # Nor may a client's (allowed) key register as a worker.
        w = subprocess.Popen([os.path.join(BIN, "smolmq-worker"), "--model", MODEL, "--broker", c.worker_ep,
                              "--threads", "1", "--heartbeat-ms", str(HB_MS), "--broker-key", broker_pub],
                             stdout=subprocess.DEVNULL, stderr=c.log("worker"))
        c.workers.append(w)  # a fresh key pair: not on the list
        time.sleep(1.5)
        check(len(c.stats()["workers"]) == 1, "a worker with a key not on the workers' list registered")
        check(w.poll() is None, "the refused worker exited")
        log = c.tail()
        check("refused clients" in log and "refused workers" in log, f"the broker does not log refusals:\n{log}")


def test_stats():
    with Cluster(workers=2, capacity=3) as c:
        s = c.stats()
        check(len(s["workers"]) == 2, f"{s}")
        for w in s["workers"]:
            check(w["model"] == MODEL_NAME and w["capacity"] == 3 and w["backend"] == "cpu", f"{w}")
            check(0 <= w["heartbeat_age_ms"] < 3 * HB_MS, f"{w}")
        check(s["uptime_ms"] > 0 and s["totals"]["accepted"] == 0, f"{s}")


def test_ask_verb():
    with Cluster(workers=1) as c:
        p = subprocess.run([TOOL, "ask", "--broker", c.client_ep, "--max-tokens", "8", "--seed", "5",
                            "Say something"], capture_output=True, text=True, timeout=60)
        check(p.returncode == 0, f"smolmq ask: exit {p.returncode}: {p.stderr.strip()}")
        want = generate("Say something", 5, 8)
        check(p.stdout.rstrip("\n") == want["content"].rstrip("\n"), f"{p.stdout!r} vs {want['content']!r}")


def test_node_client():
    node_dir = os.path.join("proto", "clients", "node")
    npm_ci(node_dir)
    with Cluster(workers=1) as c:
        p = subprocess.run(["node", os.path.join(node_dir, "chat.js"), "--broker", c.client_ep, "--max-tokens", "8",
                            "--seed", "5", "Say something"], capture_output=True, text=True, timeout=60)
        check(p.returncode == 0, f"node chat.js: exit {p.returncode}: {p.stderr.strip()}")
        want = generate("Say something", 5, 8)
        check(p.stdout.rstrip("\n") == want["content"].rstrip("\n"), f"{p.stdout!r} vs {want['content']!r}")


def test_node_client_unit_tests():
    node_dir = os.path.join("proto", "clients", "node")
    npm_ci(node_dir)
    p = subprocess.run(["node", "--test", os.path.join(node_dir, "test")], capture_output=True, text=True, timeout=120)
    summary = [ln for ln in p.stdout.splitlines() if ln.startswith(("# pass", "# fail"))]
    check(p.returncode == 0, f"node --test: exit {p.returncode}: {summary} {p.stdout[-1500:]}")
    print(f"    node --test: {' '.join(summary)}", flush=True)


if __name__ == "__main__":
    sys.exit(run_tests("cluster", globals()))
