#!/usr/bin/python3
"""Tests of smolmq_client (run with /usr/bin/python3: Debian's zmq and msgpack).

    /usr/bin/python3 proto/clients/python/test_client.py [-v] [name-substring ...]

Prints PASS name / FAIL name: why per test and exits 1 when any failed.
1. every vector of proto/vectors/vectors.json ($SMQ_VECTORS overrides the
   path): valid ones decode to the same command, job and body; invalid ones
   are rejected with the same error code (and key, for bad_request). Vectors
   of both hops are checked: the decoder takes the hop as a parameter.
2. the encoders (CHAT, CANCEL, HEARTBEAT, STATS) give bodies that decode to
   the vectors' bodies.
3. against a fake broker (a ROUTER in a thread on a random free port): a
   streamed chat, concurrent requests, cancel, seq gaps, heartbeats,
   broker_lost, and more.
"""

import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import msgpack  # noqa: E402
import zmq  # noqa: E402

import smolmq_client as smq  # noqa: E402
from smolmq_client import BrokerError, Client, ProtocolError, RequestError  # noqa: E402

VECTORS = os.environ.get("SMQ_VECTORS") or os.path.join(HERE, "..", "..", "vectors", "vectors.json")
VERBOSE = "-v" in sys.argv

results = []


def report(name, ok, why=""):
    results.append((name, ok))
    if ok:
        print("PASS %s" % name)
    else:
        print("FAIL %s: %s" % (name, why))
    sys.stdout.flush()


class Fail(Exception):
    pass


def check(cond, why):
    if not cond:
        raise Fail(why)


# --------------------------------------------------------------------------
# 1, 2: vectors


def same(a, b, path="body"):
    """Deep equality of a decoded body and the vector's JSON body; numbers
    compare with a float32 tolerance when either is a float."""
    if isinstance(a, bool) or isinstance(b, bool):
        if a is not b:
            raise Fail("%s: %r != %r" % (path, a, b))
        return
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        if isinstance(a, float) or isinstance(b, float):
            if not (a == b or math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9)):
                raise Fail("%s: %r != %r" % (path, a, b))
        elif a != b:
            raise Fail("%s: %r != %r" % (path, a, b))
        return
    if isinstance(a, dict) and isinstance(b, dict):
        if set(a) != set(b):
            raise Fail("%s: keys %s != %s" % (path, sorted(map(str, a)), sorted(map(str, b))))
        for k in a:
            same(a[k], b[k], "%s.%s" % (path, k))
        return
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            raise Fail("%s: %d entries != %d" % (path, len(a), len(b)))
        for i, (x, y) in enumerate(zip(a, b)):
            same(x, y, "%s[%d]" % (path, i))
        return
    if a != b or type(a) is not type(b):
        raise Fail("%s: %r != %r" % (path, a, b))


def load_vectors():
    with open(VECTORS, encoding="utf-8") as f:
        doc = json.load(f)
    check(doc.get("protocol") == "SMQ/1", "protocol is %r, not SMQ/1" % doc.get("protocol"))
    vs = doc.get("vectors")
    check(isinstance(vs, list) and vs, "no vectors")
    return vs


def frames_of(v):
    return [bytes.fromhex(h) for h in v["frames"]]


def test_vector(v):
    frames = frames_of(v)
    hop = v.get("hop", "client")
    sender = v.get("from")
    if v["valid"]:
        try:
            fr = smq.decode_frames(frames, hop, sender=sender)
        except ProtocolError as e:
            raise Fail("rejected (%s, key %s): %s" % (e.code, e.key, e.message))
        check(fr.command == v["command"], "command %s, vector says %s" % (fr.command, v["command"]))
        if "job" in v:
            check(fr.job == v["job"], "job %r, vector says %r" % (fr.job, v["job"]))
        else:
            check(fr.job is None, "job %r, vector has none" % fr.job)
        same(fr.body, v["body"])
    else:
        try:
            fr = smq.decode_frames(frames, hop, sender=sender)
        except ProtocolError as e:
            check(e.code == v["error_code"], "rejected with %s (%s), vector says %s" % (e.code, e.message, v["error_code"]))
            if v.get("error_key") is not None:
                check(e.key == v["error_key"], "rejected at key %r (%s), vector says %r" % (e.key, e.message, v["error_key"]))
            return
        raise Fail("accepted (%s %s), vector says %s%s" % (
            fr.command, json.dumps(fr.body, default=repr)[:200], v["error_code"],
            " at " + v["error_key"] if v.get("error_key") else ""))


def without_nil_and_unknown(body, known):
    return {k: v for k, v in body.items() if k in known and v is not None}


CHAT_KEYS = ("id", "messages") + smq.CHAT_PARAMS


def test_encode(v):
    """Encodes the vector's body with the library's encoder; the result must
    decode (strictly) to the same body, less unknown keys and nils."""
    cmd, body = v["command"], v["body"]
    if cmd == "CHAT":
        want = without_nil_and_unknown(body, CHAT_KEYS)
        want["messages"] = [{"role": m["role"], "content": m["content"]} for m in body["messages"]]
        params = {k: x for k, x in want.items() if k not in ("id", "messages")}
        packed = smq.encode_chat(body["id"], body["messages"], **params)
    elif cmd == "CANCEL":
        want = {"id": body["id"]}
        packed = smq.encode_cancel(body["id"])
    elif cmd == "HEARTBEAT":
        want = {}
        packed = smq.encode_heartbeat()
    elif cmd == "STATS":
        want = {}
        packed = smq.encode_stats()
    else:
        raise AssertionError(cmd)
    fr = smq.decode_frames(smq.encode_frames(cmd, packed), "client", sender="client")
    check(fr.command == cmd, "command %s" % fr.command)
    same(fr.body, want)


def run_vector_tests(only):
    try:
        vectors = load_vectors()
    except (OSError, ValueError, Fail) as e:
        report("vectors load", False, "%s: %s" % (VECTORS, e))
        return
    report("vectors load", True)
    names = set()
    counts = {"valid": 0, "invalid": 0, "encode": 0}
    for v in vectors:
        name = v.get("name", "?")
        if name in names:
            report("vector %s" % name, False, "vector name given twice")
        names.add(name)
        tname = "vector %s" % name
        if only and not any(o in tname for o in only):
            continue
        run(tname, test_vector, v)
        counts["valid" if v["valid"] else "invalid"] += 1
        if (v["valid"] and v.get("hop", "client") == "client" and v.get("from") == "client"
                and v["command"] in ("CHAT", "CANCEL", "HEARTBEAT", "STATS")):
            run("encode %s" % name, test_encode, v)
            counts["encode"] += 1
    if VERBOSE:
        print("# vectors: %(valid)d valid, %(invalid)d invalid, %(encode)d encoder checks" % counts)
    if not only:
        for cmd in ("CHAT", "CANCEL", "HEARTBEAT", "STATS"):
            ok = any(v["valid"] and v.get("hop", "client") == "client" and v.get("from") == "client"
                     and v["command"] == cmd for v in vectors)
            report("encode coverage %s" % cmd, ok, "no valid client-hop %s vector from a client" % cmd)


# --------------------------------------------------------------------------
# 3: the fake broker


def pack(body):
    return msgpack.packb(body, use_bin_type=True)


class FakeBroker(threading.Thread):
    """A ROUTER on a random free port, run in a thread.

    on_message(broker, ident, command, body) is called (in the broker's
    thread) for every well-formed message; every message is logged in
    received as (time, command, body) ((time, None, frames) when not
    decodable). With heartbeat_s set it sends HEARTBEAT to every client it
    has heard from, at that interval.
    """

    def __init__(self, on_message=None, heartbeat_s=0.05, curve_secret=None):
        super().__init__(daemon=True)
        self.on_message = on_message or (lambda *a: None)
        self.heartbeat_s = heartbeat_s
        self.curve_secret = curve_secret
        self.received = []
        self.peers = []
        self.timers = []
        self.lock = threading.Lock()
        self.ready = threading.Event()
        self.stopping = False
        self.error = None

    def __enter__(self):
        self.start()
        check(self.ready.wait(5), "fake broker did not start")
        return self

    def __exit__(self, *exc):
        self.stopping = True
        self.join(5)

    def run(self):
        sock = zmq.Context.instance().socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        if self.curve_secret:
            sock.curve_server = True
            sock.curve_secretkey = self.curve_secret
        port = sock.bind_to_random_port("tcp://127.0.0.1")
        self.endpoint = "tcp://127.0.0.1:%d" % port
        self.sock = sock
        self.ready.set()
        last_hb = time.monotonic()
        try:
            while not self.stopping:
                if sock.poll(5, zmq.POLLIN):
                    while True:
                        try:
                            msg = sock.recv_multipart(zmq.NOBLOCK)
                        except zmq.Again:
                            break
                        ident, frames = msg[0], msg[1:]
                        if ident not in self.peers:
                            self.peers.append(ident)
                        try:
                            fr = smq.decode_frames(frames, "client", sender="client")
                        except ProtocolError:
                            with self.lock:
                                self.received.append((time.monotonic(), None, frames))
                            continue
                        with self.lock:
                            self.received.append((time.monotonic(), fr.command, fr.body))
                        self.on_message(self, ident, fr.command, fr.body)
                now = time.monotonic()
                for t in [t for t in self.timers if t[0] <= now]:
                    self.timers.remove(t)
                    t[1]()
                if self.heartbeat_s and now - last_hb >= self.heartbeat_s:
                    last_hb = now
                    for p in self.peers:
                        self.send(p, "HEARTBEAT", {})
        except Exception as e:  # surfaces in the test that used this broker
            self.error = "".join(traceback.format_exception(type(e), e, e.__traceback__))
        finally:
            sock.close(0)

    def send(self, ident, command, body):
        self.sock.send_multipart([ident, smq.HEADER, command.encode(), pack(body)])

    def send_raw(self, ident, frames):
        self.sock.send_multipart([ident] + list(frames))

    def after(self, delay, fn):
        """Runs fn in the broker's thread after delay seconds (only call from
        the broker's thread, e.g. in on_message)."""
        self.timers.append((time.monotonic() + delay, fn))

    def got(self, command=None):
        with self.lock:
            return [(t, c, b) for t, c, b in self.received if command is None or c == command]

    def wait_for(self, command, n=1, timeout=3.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.got(command)) >= n:
                return self.got(command)
            time.sleep(0.005)
        raise Fail("the broker got %d %s, wanted %d: %s" % (
            len(self.got(command)), command, n, [c for _, c, _ in self.got()]))


def usage(p=5, c=3):
    return {"prompt_tokens": p, "completion_tokens": c, "cached_tokens": 0}


def timings():
    return {"queue_ms": 1.5, "ttft_ms": 20.0, "total_ms": 80.0, "decode_tps": 50.0}


def streamer(frames_for):
    """on_message that answers each CHAT with the bodies frames_for(body)
    gives ((command, body-without-id-and-seq) pairs), numbered from seq 0."""
    def on_message(b, ident, cmd, body):
        if cmd == "CHAT":
            for seq, (c, rest) in enumerate(frames_for(body)):
                b.send(ident, c, dict(rest, id=body["id"], seq=seq))
    return on_message


def story(body):
    return [
        ("TOKEN", {"tokens": [10, 11], "reasoning": "Let me think. "}),
        ("TOKEN", {"tokens": [12], "reasoning": "Easy."}),
        ("TOKEN", {"tokens": [13, 14], "content": "Hello, "}),
        ("TOKEN", {"tokens": [15], "content": "wörld ✓", "reasoning": ""}),
        ("DONE", {"finish": "eog", "usage": usage(7, 6), "timings": timings()}),
    ]


def test_streamed_chat():
    with FakeBroker(streamer(story)) as b, Client(b.endpoint, heartbeat_ms=100) as c:
        msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
        stream = c.chat(msgs, max_tokens=64, temperature=0.5, thinking=True, stop=["\n\n"], seed=2 ** 63)
        evs = list(stream)
        check([e.kind for e in evs] == ["token"] * 4 + ["done"], "kinds %s" % [e.kind for e in evs])
        check([e.seq for e in evs] == [0, 1, 2, 3, 4], "seqs %s" % [e.seq for e in evs])
        check(all(e.id == stream.id for e in evs), "ids")
        check("".join(e.reasoning for e in evs) == "Let me think. Easy.", "reasoning")
        check("".join(e.content for e in evs) == "Hello, wörld ✓", "content")
        check(evs[0].tokens == [10, 11], "tokens %r" % evs[0].tokens)
        d = evs[-1]
        check(d.terminal and d.finish == "eog" and d.usage["completion_tokens"] == 6
              and d.timings["decode_tps"] == 50.0, "done %r" % d)
        _, _, chat = b.wait_for("CHAT")[0]
        want = {"id": stream.id, "messages": msgs, "max_tokens": 64, "temperature": 0.5,
                "thinking": True, "stop": ["\n\n"], "seed": 2 ** 63}
        check(chat == want, "the broker got %r" % chat)
        check(c.open_requests == [], "still open: %s" % c.open_requests)
        r = c.complete("2+2?", thinking=False)
        check(r.content == "Hello, wörld ✓" and r.reasoning == "Let me think. Easy." and r.finish == "eog"
              and r.usage["prompt_tokens"] == 7, "complete %r" % (r,))
        chat2 = b.wait_for("CHAT", 2)[1][2]
        check(chat2["messages"] == [{"role": "user", "content": "2+2?"}] and chat2["thinking"] is False,
              "complete sent %r" % chat2)
        check(chat2["id"] != stream.id, "generated ids repeat")


def test_concurrent():
    """Two requests on one client, answered interleaved: next_event() gives
    each its own events in order; two Streams read out of order too."""
    pending = {}

    def on_message(b, ident, cmd, body):
        if cmd != "CHAT":
            return
        pending[body["id"]] = ident
        if len(pending) < 2:
            return
        (a, ia), (z, iz) = sorted(pending.items())
        pending.clear()
        b.send(ia, "TOKEN", {"id": a, "seq": 0, "tokens": [1], "content": "A0"})
        b.send(iz, "TOKEN", {"id": z, "seq": 0, "tokens": [2], "content": "B0"})
        b.send(iz, "TOKEN", {"id": z, "seq": 1, "tokens": [3], "content": "B1"})
        b.send(ia, "TOKEN", {"id": a, "seq": 1, "tokens": [4], "content": "A1"})
        b.send(iz, "DONE", {"id": z, "seq": 2, "finish": "length", "usage": usage(1, 2), "timings": timings()})
        b.send(ia, "ERROR", {"id": a, "seq": 2, "code": "worker_lost", "message": "worker w1 went silent"})

    with FakeBroker(on_message) as b, Client(b.endpoint, heartbeat_ms=100) as c:
        a = c.submit("first", id="a")
        z = c.submit("second", id="b")
        check(sorted(c.open_requests) == ["a", "b"], "open %s" % c.open_requests)
        evs = []
        while True:
            ev = c.next_event(timeout=3)
            check(ev is not None, "timed out after %r" % evs)
            evs.append(ev)
            if sum(e.terminal for e in evs) == 2:
                break
        got_a = [(e.kind, e.seq, e.content or e.code) for e in evs if e.id == a]
        got_b = [(e.kind, e.seq, e.content or e.finish) for e in evs if e.id == z]
        check(got_a == [("token", 0, "A0"), ("token", 1, "A1"), ("error", 2, "worker_lost")], "a: %r" % got_a)
        check(got_b == [("token", 0, "B0"), ("token", 1, "B1"), ("done", 2, "length")], "b: %r" % got_b)
        check(c.next_event(timeout=0.2) is None, "an event after both ended")

        s1 = c.chat("first")
        s2 = c.chat("second")
        out2 = [e.content or e.finish or e.code for e in s2]   # s2 first: s1's events wait
        out1 = [e.content or e.finish or e.code for e in s1]
        a_, b_ = sorted([s1.id, s2.id])
        want = {a_: ["A0", "A1", "worker_lost"], b_: ["B0", "B1", "length"]}
        check(out1 == want[s1.id] and out2 == want[s2.id], "streams %r %r" % (out1, out2))


def test_cancel():
    def on_message(b, ident, cmd, body):
        if cmd == "CHAT":
            b.send(ident, "TOKEN", {"id": body["id"], "seq": 0, "tokens": [1], "content": "Once"})
        elif cmd == "CANCEL":
            b.send(ident, "TOKEN", {"id": body["id"], "seq": 1, "tokens": [2], "content": " upon"})
            b.send(ident, "DONE", {"id": body["id"], "seq": 2, "finish": "cancelled",
                                   "usage": usage(3, 2), "timings": timings()})

    with FakeBroker(on_message) as b, Client(b.endpoint, heartbeat_ms=100) as c:
        s = c.chat("tell me a story", id="story-1")
        e0 = next(s)
        check(e0.kind == "token" and e0.content == "Once", "first %r" % e0)
        s.cancel()
        rest = list(s)
        check([e.kind for e in rest] == ["token", "done"] and rest[-1].finish == "cancelled", "rest %r" % rest)
        cancels = b.wait_for("CANCEL")
        check(len(cancels) == 1 and cancels[0][2] == {"id": "story-1"}, "cancels %r" % cancels)
        c.cancel("story-1")  # not open any more: nothing sent
        c.cancel("never-was")
        time.sleep(0.1)
        check(len(b.got("CANCEL")) == 1, "CANCEL sent for an id not open")

        # Leaving a Stream early cancels its request and drops its events.
        s = c.chat("again", id="story-2")
        next(s)
        s.close()
        check(b.wait_for("CANCEL", 2)[1][2] == {"id": "story-2"}, "no CANCEL on close")
        check(c.next_event(timeout=2) is None, "an event of a closed stream leaked")
        check(c.open_requests == [], "still open %s" % c.open_requests)


def test_seq_gap():
    def on_message(b, ident, cmd, body):
        if cmd == "CHAT" and body["id"] == "gap":
            b.send(ident, "TOKEN", {"id": "gap", "seq": 0, "tokens": [1], "content": "a"})
            b.send(ident, "TOKEN", {"id": "gap", "seq": 2, "tokens": [3], "content": "c"})
        elif cmd == "CHAT" and body["id"] == "dup":
            b.send(ident, "TOKEN", {"id": "dup", "seq": 0, "tokens": [1], "content": "a"})
            b.send(ident, "TOKEN", {"id": "dup", "seq": 0, "tokens": [1], "content": "a"})
        elif cmd == "CANCEL" and body["id"] == "gap":
            b.after(0.2, lambda: b.send(ident, "DONE", {"id": "gap", "seq": 3, "finish": "cancelled",
                                                        "usage": usage(), "timings": timings()}))

    with FakeBroker(on_message) as b, Client(b.endpoint, heartbeat_ms=100) as c:
        evs = list(c.chat("x", id="gap"))
        check([e.kind for e in evs] == ["token", "error"], "kinds %r" % evs)
        e = evs[-1]
        check(e.code == "internal" and e.local and e.id == "gap" and "gap" in e.message, "error %r" % e)
        check(b.wait_for("CANCEL")[0][2] == {"id": "gap"}, "no CANCEL after the gap")
        # The broker may still hold "gap" until its terminal frame comes.
        try:
            c.submit("y", id="gap")
            raise Fail("reused an id the broker may still hold")
        except ValueError:
            pass
        evs = list(c.chat("x", id="dup"))
        check([e.kind for e in evs] == ["token", "error"] and evs[-1].code == "internal", "dup: %r" % evs)
        time.sleep(0.3)
        c.next_event(timeout=0.1)  # takes in the late DONE for "gap"
        c.cancel("gap")
        check(c.next_event(timeout=0.1) is None, "the late DONE leaked as an event")
        c.submit("y", id="gap")  # allowed again now


def test_heartbeats():
    def on_message(b, ident, cmd, body):
        if cmd == "CHAT":
            b.after(0.55, lambda: b.send(ident, "DONE", {"id": body["id"], "seq": 0, "finish": "eog",
                                                         "usage": usage(), "timings": timings()}))

    with FakeBroker(on_message, heartbeat_s=0.1) as b, Client(b.endpoint, heartbeat_ms=100, liveness=3) as c:
        time.sleep(0.25)
        c.next_event(timeout=0.05)
        check(b.got("HEARTBEAT") == [], "HEARTBEAT with no request open")
        t0 = time.monotonic()
        evs = list(c.chat("slow"))
        dt = time.monotonic() - t0
        check([e.kind for e in evs] == ["done"], "events %r" % evs)
        hbs = b.got("HEARTBEAT")
        check(len(hbs) >= 4, "%d HEARTBEATs in %.2f s at 100 ms" % (len(hbs), dt))
        check(all(body == {} for _, _, body in hbs), "HEARTBEAT bodies %r" % hbs)
        t_chat = b.got("CHAT")[0][0]
        gaps = [t2 - t1 for (t1, _, _), (t2, _, _) in zip([(t_chat, 0, 0)] + hbs, hbs)]
        check(max(gaps) < 0.25, "HEARTBEAT gaps %s" % ["%.3f" % g for g in gaps])
        n = len(hbs)
        c.next_event(timeout=0.3)
        time.sleep(0.2)
        check(len(b.got("HEARTBEAT")) <= n + 1, "HEARTBEATs after the request ended")


def test_heartbeat_answers():
    """A broker with a shorter heartbeat interval than the client's: the
    client answers each broker HEARTBEAT, so the broker hears it at its own
    cadence (the interval is not negotiated)."""
    def on_message(b, ident, cmd, body):
        if cmd == "CHAT":
            b.after(0.65, lambda: b.send(ident, "DONE", {"id": body["id"], "seq": 0, "finish": "eog",
                                                         "usage": usage(), "timings": timings()}))

    with FakeBroker(on_message, heartbeat_s=0.1) as b, Client(b.endpoint, heartbeat_ms=2000) as c:
        evs = list(c.chat("slow"))
        check([e.kind for e in evs] == ["done"], "events %r" % evs)
        t_chat = b.got("CHAT")[0][0]
        times = [t_chat] + [t for t, _, _ in b.got("HEARTBEAT")]
        gaps = [t2 - t1 for t1, t2 in zip(times, times[1:])]
        check(len(gaps) >= 4 and max(gaps) < 0.25, "client HEARTBEAT gaps %s" % ["%.3f" % g for g in gaps])


def test_broker_interval():
    """A broker HEARTBEAT announcing a longer interval than the client's
    stretches the silence the client allows: liveness x max(own, broker's).
    A shorter one changes nothing."""
    def on_message(b, ident, cmd, body):
        if cmd == "CHAT":
            b.send(ident, "HEARTBEAT", {"heartbeat_ms": int(body["messages"][0]["content"])})

    with FakeBroker(on_message, heartbeat_s=0) as b, Client(b.endpoint, heartbeat_ms=100, liveness=3) as c:
        check(abs(c.silence_s - 0.3) < 1e-9, "silence_s %r before the broker said its interval" % c.silence_s)
        t0 = time.monotonic()
        evs = list(c.chat("300"))
        dt = time.monotonic() - t0
        check([(e.kind, e.code) for e in evs] == [("error", "broker_lost")], "events %r" % evs)
        check(c.broker_heartbeat_s == 0.3 and abs(c.silence_s - 0.9) < 1e-9, "silence_s %r" % c.silence_s)
        check(0.85 <= dt < 1.5, "broker_lost after %.2f s; liveness 3 x max(100, 300) ms is 0.9 s" % dt)
        # Still heartbeating at our own interval meanwhile.
        hbs = [t for t, _, _ in b.got("HEARTBEAT")]
        check(len(hbs) >= 6, "%d HEARTBEATs in %.2f s at 100 ms" % (len(hbs), dt))
        t0 = time.monotonic()
        evs = list(c.chat("10"))
        dt = time.monotonic() - t0
        check(evs[-1].code == "broker_lost" and 0.29 <= dt < 0.8,
              "a shorter broker interval: broker_lost after %.2f s, not about 0.3 s" % dt)


def test_codec_details():
    """Body checks of PROTOCOL.md §2 that the vectors do not cover."""
    def fails(cmd, body, key, hop="client", sender="broker"):
        frames = smq.encode_frames(cmd, body, job=7 if hop == "worker" and cmd in smq.JOB_COMMANDS else None)
        try:
            smq.decode_frames(frames, hop, sender=sender)
        except ProtocolError as e:
            check(e.code == "bad_request" and e.key == key, "%s %r: %s at %r, wanted %r" % (cmd, body, e.code, e.key, key))
            return
        raise Fail("%s %r accepted" % (cmd, body))

    def ok(cmd, body, hop="client", sender="broker"):
        smq.decode_frames(smq.encode_frames(cmd, body), hop, sender=sender)

    # heartbeat_ms: 10-600000 in the broker's HEARTBEAT (both hops) and in READY
    fails("HEARTBEAT", {"heartbeat_ms": 9}, "heartbeat_ms")
    fails("HEARTBEAT", {"heartbeat_ms": 600001}, "heartbeat_ms", hop="worker")
    fails("HEARTBEAT", {"heartbeat_ms": 1.5}, "heartbeat_ms")
    ok("HEARTBEAT", {"heartbeat_ms": 10})
    ok("HEARTBEAT", {"heartbeat_ms": 600000, "later": [1]}, hop="worker")
    ok("HEARTBEAT", {"heartbeat_ms": 5}, sender="client")  # a client's HEARTBEAT is not read
    fails("READY", {"model": "m", "capacity": 1, "heartbeat_ms": 0}, "heartbeat_ms", hop="worker", sender="worker")
    ok("READY", {"model": "m", "capacity": 1, "heartbeat_ms": 600000}, hop="worker", sender="worker")
    # Of several keys given twice, the one that sorts first (shorter, then by bytes) is named.
    body = (b"\x86\xa2id\xa1r\xa8messages\x91\x82\xa4role\xa4user\xa7content\xa0"
            b"\xa2zz\x01\xa1b\x01\xa2zz\x02\xa1b\x02")
    try:
        smq.decode_frames([smq.HEADER, b"CHAT", body], "client", sender="client")
        raise Fail("duplicate keys accepted")
    except ProtocolError as e:
        check(e.key == "b", "duplicates: named %r, wanted 'b'" % e.key)
    # A float32 field is range-checked after rounding to 32 bits.
    ok("CHAT", {"id": "r", "messages": [{"role": "user", "content": ""}], "temperature": 2.0000001}, sender="client")
    fails("CHAT", {"id": "r", "messages": [{"role": "user", "content": ""}], "top_p": 1e-50}, "top_p", sender="client")
    # queued_ms is checked on the client hop too.
    fails("CHAT", {"id": "r", "messages": [{"role": "user", "content": ""}], "queued_ms": -1}, "queued_ms",
          sender="client")
    # U+0000: refused in names and words, allowed in text.
    fails("DISCONNECT", {"reason": "a\0"}, "reason", hop="worker")
    fails("ERROR", {"code": "a\0", "message": "m"}, "code")
    ok("ERROR", {"code": "a", "message": "\0"})


def test_no_busy_wait():
    """Waiting on one Stream while another request's events are queued, or
    on stats(), sleeps in poll instead of spinning."""
    def on_message(b, ident, cmd, body):
        if cmd == "CHAT" and body["id"] == "quick":
            b.send(ident, "TOKEN", {"id": "quick", "seq": 0, "tokens": [1], "content": "q"})
        elif cmd == "CHAT":
            b.after(0.5, lambda: b.send(ident, "DONE", {"id": body["id"], "seq": 0, "finish": "eog",
                                                        "usage": usage(), "timings": timings()}))

    with FakeBroker(on_message, heartbeat_s=0.1) as b, Client(b.endpoint, heartbeat_ms=100) as c:
        quick = c.chat("q", id="quick")
        slow = c.chat("s", id="slow")
        time.sleep(0.1)
        cpu, t0 = time.process_time(), time.monotonic()
        evs = list(slow)
        used, dt = time.process_time() - cpu, time.monotonic() - t0
        check([e.kind for e in evs] == ["done"], "slow %r" % evs)
        check(dt > 0.3 and used < 0.25 * dt, "%.2f s CPU in %.2f s of waiting" % (used, dt))
        check(next(quick).content == "q", "quick's queued event")
        quick.close()


def test_broker_lost():
    with FakeBroker(heartbeat_s=0) as b, Client(b.endpoint, heartbeat_ms=100, liveness=3) as c:
        t0 = time.monotonic()
        a = c.submit("anyone?")
        s = c.chat("anyone there?")
        ev = c.next_event(timeout=3)
        dt = time.monotonic() - t0
        check(ev is not None and ev.kind == "error" and ev.code == "broker_lost" and ev.local and ev.id == a,
              "event %r" % ev)
        check(0.29 <= dt < 1.0, "broker_lost after %.2f s, liveness 3 x 100 ms" % dt)
        evs = list(s)
        check([(e.kind, e.code) for e in evs] == [("error", "broker_lost")], "stream %r" % evs)
        check(len(b.got("HEARTBEAT")) >= 2, "%d HEARTBEATs while waiting" % len(b.got("HEARTBEAT")))
        check(c.open_requests == [], "open %s" % c.open_requests)
        # A later request measures silence from its own start.
        time.sleep(0.4)
        t0 = time.monotonic()
        c.submit("again?")
        ev = c.next_event(timeout=3)
        dt = time.monotonic() - t0
        check(ev.code == "broker_lost" and 0.29 <= dt < 1.0, "second: %r after %.2f s" % (ev, dt))


def test_broker_errors():
    def on_message(b, ident, cmd, body):
        if cmd == "CHAT" and body["id"] == "bad":
            b.send(ident, "ERROR", {"id": "bad", "seq": 0, "code": "unknown_model",
                                    "message": "no worker serves model 'nope'"})
        elif cmd == "CHAT":
            b.send(ident, "ERROR", {"code": "duplicate_id", "message": "id in use"})
            b.send(ident, "DONE", {"id": body["id"], "seq": 0, "finish": "eog", "usage": usage(),
                                   "timings": timings()})

    with FakeBroker(on_message) as b, Client(b.endpoint, heartbeat_ms=100) as c:
        try:
            c.complete("hi", id="bad", model="nope")
            raise Fail("complete() did not raise")
        except BrokerError as e:
            check(e.code == "unknown_model" and e.id == "bad" and "nope" in e.message, "raised %r" % e)
        rid = c.submit("hi")
        e1 = c.next_event(timeout=2)
        e2 = c.next_event(timeout=2)
        check(e1.kind == "error" and e1.id is None and not e1.terminal and e1.code == "duplicate_id", "e1 %r" % e1)
        check(e2.kind == "done" and e2.id == rid, "e2 %r" % e2)


def test_bad_frames_from_broker():
    """A frame the client cannot read is answered with ERROR (never an ERROR
    with an ERROR); a bad frame naming an open request ends it locally."""
    def on_message(b, ident, cmd, body):
        if cmd != "CHAT":
            return
        b.send_raw(ident, [b"SMQ/1", b"TOKEN", b"\x91\x01"])          # body not a map
        b.send_raw(ident, [b"SMQ/2", b"TOKEN", b"\x80"])             # another version
        b.send_raw(ident, [b"SMQ/1", b"ERROR", b"\x00"])             # bad ERROR: not answered
        b.send(ident, "READY", {"model": "m", "capacity": 1})        # not a command for clients
        b.send(ident, "HEARTBEAT", {"heartbeat_ms": 5})              # a bad field: dropped, not answered
        b.send(ident, "TOKEN", {"id": body["id"], "seq": 0, "tokens": ["x"]})  # bad body

    with FakeBroker(on_message) as b, Client(b.endpoint, heartbeat_ms=100) as c:
        evs = list(c.chat("hi", id="r"))
        check([(e.kind, e.code, e.local) for e in evs] == [("error", "internal", True)], "events %r" % evs)
        check("tokens[0]" in evs[0].message, "message %r" % evs[0].message)
        errs = b.wait_for("ERROR", 3)
        time.sleep(0.1)
        errs = b.got("ERROR")
        codes = [body["code"] for _, _, body in errs]
        check(codes == ["bad_frame", "unsupported_version", "bad_frame"], "client answered %r" % errs)
        check("SMQ/1" in errs[1][2]["message"], "version message %r" % errs[1][2]["message"])
        check("READY" in errs[2][2]["message"], "READY message %r" % errs[2][2]["message"])
        check(c.broker_heartbeat_s is None, "took heartbeat_ms from a bad HEARTBEAT")
        check(b.got("CANCEL")[0][2] == {"id": "r"}, "no CANCEL for the bad request")


def test_local_validation():
    with FakeBroker() as b, Client(b.endpoint) as c:
        cases = [
            (dict(messages=[{"role": "robot", "content": "x"}]), "messages[0].role"),
            (dict(messages=[{"role": "user"}]), "messages[0].content"),
            (dict(messages=[]), "messages"),
            (dict(messages="x", temperature=2.5), "temperature"),
            (dict(messages="x", temperature=float("nan")), "temperature"),
            (dict(messages="x", top_p=0), "top_p"),
            (dict(messages="x", max_tokens=0), "max_tokens"),
            (dict(messages="x", max_tokens=1.5), "max_tokens"),
            (dict(messages="x", top_k=-1), "top_k"),
            (dict(messages="x", seed=2 ** 64), "seed"),
            (dict(messages="x", thinking=1), "thinking"),
            (dict(messages="x", stop=["a"] * 9), "stop"),
            (dict(messages="x", stop=[""]), "stop[0]"),
            (dict(messages="x", repeat_penalty=0), "repeat_penalty"),
            (dict(messages="x", presence_penalty=-2.1), "presence_penalty"),
            (dict(messages="x", model=""), "model"),
            (dict(messages="x", affinity="a" * 129), "affinity"),
            (dict(messages="x", id="x" * 65), "id"),
            (dict(messages="x", id=""), "id"),
        ]
        for kw, key in cases:
            try:
                c.submit(**kw)
                raise Fail("accepted %r" % kw)
            except RequestError as e:
                check(e.key == key and e.code == "bad_request", "%r: key %r (%s)" % (kw, e.key, e))
        for kw in (dict(messages="x", temprature=1), dict(messages="x", queued_ms=3)):
            try:
                c.submit(**kw)
                raise Fail("accepted %r" % kw)
            except TypeError:
                pass
        # Edge values that are valid.
        c.submit("x", temperature=0, top_p=1, top_k=0, min_p=1, seed=2 ** 64 - 1, stop=[], max_tokens=1,
                 presence_penalty=-2, frequency_penalty=2, repeat_penalty=1.1, queue_timeout_ms=0,
                 affinity="conv-1", model="m", id="y" * 64, thinking=False)
        c.submit([{"role": "tool", "content": ""}], stop="END")
        chats = b.wait_for("CHAT", 2)
        check(chats[1][2]["stop"] == ["END"], "stop str -> %r" % chats[1][2].get("stop"))
        check("x" * 0 == "" and len(b.got()) == 2, "something else was sent: %r" % b.got())
        try:
            c.submit("x", id="y" * 64)
            raise Fail("accepted an id that is open")
        except ValueError:
            pass


def test_stats():
    reply = {"workers": [{"name": "gpu0", "model": "smollm3", "backend": "cuda", "capacity": 8,
                          "in_flight": 1, "heartbeat_age_ms": 12.5}],
             "queues": [{"model": "smollm3", "depth": 0}],
             "totals": {"accepted": 3, "completed": 2, "failed": 0, "cancelled": 0, "rejected": 0,
                        "redispatched": 0, "tokens_out": 99},
             "clients": 1, "uptime_ms": 1234.5}

    def on_message(b, ident, cmd, body):
        if cmd == "STATS":
            b.send(ident, "STATS", reply)

    with FakeBroker(on_message) as b, Client(b.endpoint) as c:
        check(c.stats(timeout=2) == reply, "stats")
        check(b.got("STATS")[0][2] == {}, "request body")
    with FakeBroker(heartbeat_s=0) as b, Client(b.endpoint) as c:
        t0 = time.monotonic()
        try:
            c.stats(timeout=0.2)
            raise Fail("no TimeoutError")
        except TimeoutError:
            check(time.monotonic() - t0 < 1, "slow timeout")


def test_curve():
    server_pub, server_sec = zmq.curve_keypair()
    pub, sec = zmq.curve_keypair()
    with FakeBroker(streamer(story), curve_secret=server_sec) as b:
        with Client(b.endpoint, curve=dict(server_key=server_pub.decode(), public_key=pub.decode(),
                                           secret_key=sec.decode())) as c:
            check(c.complete("hi").content == "Hello, wörld ✓", "content over CURVE")
        with Client(b.endpoint, curve=dict(server_key=server_pub.decode())) as c:  # a fresh key pair
            check(c.complete("hi").finish == "eog", "fresh pair")
        wrong_pub, _ = zmq.curve_keypair()
        with Client(b.endpoint, heartbeat_ms=50, curve=dict(server_key=wrong_pub.decode())) as c:
            try:
                c.complete("hi")
                raise Fail("talked to a broker with the wrong key")
            except BrokerError as e:
                check(e.code == "broker_lost", "wrong key: %r" % e)
    try:
        Client("tcp://127.0.0.1:1", curve=dict(server_key="short"))
        raise Fail("accepted a short key")
    except ValueError:
        pass


def test_cli():
    """smolmq_chat.py: streams the answer to stdout and the reasoning to
    stderr; an error exits 1; Ctrl-C cancels and waits for the terminal frame."""
    seen = []

    def on_message(b, ident, cmd, body):
        seen.append((cmd, body))
        if cmd == "CHAT" and body["messages"][-1]["content"] == "fail":
            b.send(ident, "ERROR", {"id": body["id"], "seq": 0, "code": "overloaded", "message": "queue full"})
        elif cmd == "CHAT" and body["messages"][-1]["content"] == "slow":
            b.send(ident, "TOKEN", {"id": body["id"], "seq": 0, "tokens": [1], "content": "tick"})
        elif cmd == "CANCEL":
            b.send(ident, "DONE", {"id": body["id"], "seq": 1, "finish": "cancelled", "usage": usage(1, 1),
                                   "timings": timings()})
        elif cmd == "CHAT":
            for seq, (c, rest) in enumerate(story(body)):
                b.send(ident, c, dict(rest, id=body["id"], seq=seq))

    cli = [sys.executable, os.path.join(HERE, "smolmq_chat.py")]
    env = dict(os.environ, NO_COLOR="1")
    with FakeBroker(on_message) as b:
        p = subprocess.run(cli + ["--broker", b.endpoint, "--system", "Be brief.", "--no-think", "--max-tokens", "9",
                                  "--temperature", "0.2", "--seed", "5", "--model", "m", "hello"],
                           capture_output=True, text=True, timeout=20, env=env)
        check(p.returncode == 0, "exit %d: %s" % (p.returncode, p.stderr))
        check(p.stdout == "Hello, wörld ✓\n", "stdout %r" % p.stdout)
        check("Let me think. Easy." in p.stderr and "eog" in p.stderr and "6 tokens" in p.stderr
              and "50.0 tokens/s" in p.stderr, "stderr %r" % p.stderr)
        body = seen[0][1]
        check(body["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello"}]
              and body["thinking"] is False and body["max_tokens"] == 9 and body["temperature"] == 0.2
              and body["seed"] == 5 and body["model"] == "m", "CHAT %r" % body)

        p = subprocess.run(cli + ["--broker", b.endpoint, "fail"], capture_output=True, text=True, timeout=20, env=env)
        check(p.returncode == 1 and "overloaded" in p.stderr and "queue full" in p.stderr,
              "error: exit %d, %r" % (p.returncode, p.stderr))

        p = subprocess.run(cli + ["--broker", b.endpoint, "--temperature", "7", "x"], capture_output=True,
                           text=True, timeout=20, env=env)
        check(p.returncode == 2 and "temperature" in p.stderr, "bad arg: exit %d, %r" % (p.returncode, p.stderr))

        p = subprocess.Popen(cli + ["--broker", b.endpoint, "slow"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, env=env)
        try:
            first = p.stdout.read(4)
            check(first == "tick", "first output %r" % first)
            p.send_signal(signal.SIGINT)
            out, err = p.communicate(timeout=10)
        finally:
            if p.poll() is None:
                p.kill()
        check(p.returncode == 130 and "cancelled" in err, "Ctrl-C: exit %d, %r" % (p.returncode, err))
        check(any(cmd == "CANCEL" for cmd, _ in seen), "no CANCEL sent on Ctrl-C")


TESTS = [test_streamed_chat, test_concurrent, test_cancel, test_seq_gap, test_heartbeats, test_heartbeat_answers,
         test_broker_interval, test_codec_details, test_no_busy_wait,
         test_broker_lost,
         test_broker_errors, test_bad_frames_from_broker, test_local_validation, test_stats, test_curve, test_cli]


def run(name, fn, *args):
    try:
        fn(*args)
        report(name, True)
    except Fail as e:
        report(name, False, e)
    except Exception as e:
        report(name, False, "%s: %s" % (type(e).__name__, e) + ("\n" + traceback.format_exc() if VERBOSE else ""))


def main():
    only = [a for a in sys.argv[1:] if not a.startswith("-")]
    run_vector_tests(only)
    for t in TESTS:
        name = t.__name__[5:]
        if only and not any(o in name for o in only):
            continue
        run(name, t)
    failed = [n for n, ok in results if not ok]
    print("test_client.py: %d passed, %d failed" % (len(results) - len(failed), len(failed)))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
