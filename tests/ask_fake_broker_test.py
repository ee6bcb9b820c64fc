#!/usr/bin/env python3
"""ask_fake_broker_test.py - `smolmq ask` (and so the C client library, proto/client.c) against a fake
broker: a ZeroMQ ROUTER in this script that plays the broker's side of SMQ/1 frame by frame.

Each test starts `smolmq ask` ($SMQ_BIN, default build/bin/smolmq) against its own ROUTER on a free
loopback port, checks the CHAT it sends, answers with TOKEN/DONE/ERROR frames (or with silence, gaps,
garbage) and checks what the tool prints and how it exits. Needs Debian's python3-zmq and
python3-msgpack: when the python3 running it lacks them, it runs itself again with /usr/bin/python3.
Prints one PASS/FAIL line per test, as tests/run.sh counts them.
"""
import os
import signal
import subprocess
import sys
import time
import traceback

try:
    import msgpack
    import zmq
except ImportError:
    if sys.executable != "/usr/bin/python3" and os.path.exists("/usr/bin/python3"):
        os.execv("/usr/bin/python3", ["/usr/bin/python3"] + sys.argv)
    raise

BIN = os.environ.get("SMQ_BIN", "build/bin/smolmq")
HEADER = b"SMQ/1"
failed = 0


def check(cond, msg):
    if not cond:
        raise AssertionError(msg)


class FakeBroker:
    """A ROUTER on a free port and the one `smolmq ask` talking to it."""

    def __init__(self, *args, env=None):
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        port = self.sock.bind_to_random_port("tcp://127.0.0.1")
        self.ep = f"tcp://127.0.0.1:{port}"
        self.peer = None
        self.received = []  # (command, body) of everything the client sent, in order
        e = dict(os.environ)
        e.pop("SMQ_BROKER", None)
        e.update(env or {})
        argv = [BIN, "ask", "--broker", self.ep] + list(args)
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=e)

    def recv(self, timeout=5.0):
        """The next message from the client: (command, decoded body)."""
        if not self.sock.poll(int(timeout * 1000)):
            raise AssertionError(f"nothing from the client in {timeout} s")
        frames = self.sock.recv_multipart()
        self.peer = frames[0]
        check(len(frames) == 4, f"{len(frames) - 1} frames, expected 3: {frames[1:]}")
        check(frames[1] == HEADER, f"header {frames[1]!r}")
        body = msgpack.unpackb(frames[3], raw=False)
        check(isinstance(body, dict), f"body {body!r} is not a map")
        self.received.append((frames[2].decode(), body))
        return frames[2].decode(), body

    def recv_cmd(self, want, timeout=5.0):
        """The next message other than HEARTBEAT, which must be `want`."""
        deadline = time.time() + timeout
        while True:
            cmd, body = self.recv(max(0.01, deadline - time.time()))
            if cmd != "HEARTBEAT":
                check(cmd == want, f"got {cmd} {body}, expected {want}")
                return body

    def send(self, cmd, body, raw_frames=None):
        frames = raw_frames or [HEADER, cmd.encode(), msgpack.packb(body, use_bin_type=True)]
        self.sock.send_multipart([self.peer] + frames)

    def finish(self, timeout=10.0):
        """Waits for the tool: (exit status, stdout, stderr)."""
        try:
            out, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate()
            raise AssertionError(f"smolmq ask still running after {timeout} s; stderr: {err.decode()!r}")
        return self.proc.returncode, out.decode(), err.decode()

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.sock.close()
        self.ctx.term()


def done(id_, seq, finish="eog", completion=3):
    return {"id": id_, "seq": seq, "finish": finish,
            "usage": {"prompt_tokens": 11, "completion_tokens": completion, "cached_tokens": 0},
            "timings": {"queue_ms": 0.5, "ttft_ms": 12.0, "total_ms": 80.0, "decode_tps": 37.5}}


def run(test):
    global failed
    name = test.__name__
    try:
        test()
        print(f"PASS ask_fake_broker/{name}")
    except Exception as e:  # noqa: BLE001 - any failure is the test's
        failed += 1
        print(f"FAIL ask_fake_broker/{name}: {str(e).splitlines()[0] if str(e) else type(e).__name__}")
        traceback.print_exc(file=sys.stderr)
    sys.stdout.flush()


# ---- tests ----

def test_stream():
    b = FakeBroker("--model", "SmolLM3-3B", "--max-tokens", "8", "--seed", "18446744073709551615",
                   "--temperature", "0.25", "--system", "Be brief.", "What is 2+2?")
    try:
        req = b.recv_cmd("CHAT")
        check(set(req) == {"id", "model", "messages", "max_tokens", "seed", "temperature"}, f"keys {sorted(req)}")
        check(1 <= len(req["id"]) <= 64, f"id {req['id']!r}")
        check(req["model"] == "SmolLM3-3B" and req["max_tokens"] == 8, f"{req}")
        check(req["seed"] == 2 ** 64 - 1, f"seed {req['seed']}")
        check(abs(req["temperature"] - 0.25) < 1e-7, f"temperature {req['temperature']}")
        check(req["messages"] == [{"role": "system", "content": "Be brief."},
                                  {"role": "user", "content": "What is 2+2?"}], f"{req['messages']}")
        rid = req["id"]
        b.send("TOKEN", {"id": rid, "seq": 0, "tokens": [1, 2], "reasoning": "Two and two"})
        b.send("TOKEN", {"id": rid, "seq": 1, "tokens": [3], "reasoning": " make four."})
        b.send("TOKEN", {"id": rid, "seq": 2, "tokens": [4], "content": "4"})
        b.send("TOKEN", {"id": rid, "seq": 3, "tokens": [5], "content": " — é🙂", "reasoning": ""})
        b.send("DONE", done(rid, 4, completion=5))
        rc, out, err = b.finish()
        check(rc == 0, f"exit {rc}: {err!r}")
        check(out == "4 — é🙂\n", f"stdout {out!r}")
        check("Two and two make four." in err, f"reasoning not on stderr: {err!r}")
        check("\033[" not in err, "escape codes on stderr that is no terminal")
        check("[eog: 5 tokens, 37.5 tok/s" in err, f"final line: {err!r}")
    finally:
        b.close()


def test_defaults_and_no_think():
    b = FakeBroker("--no-think", "--hide-reasoning", "hi")
    try:
        req = b.recv_cmd("CHAT")
        check(set(req) == {"id", "messages", "thinking"} and req["thinking"] is False, f"{req}")
        check(req["messages"] == [{"role": "user", "content": "hi"}], f"{req['messages']}")
        b.send("TOKEN", {"id": req["id"], "seq": 0, "tokens": [9], "reasoning": "secret", "content": "ok"})
        b.send("DONE", done(req["id"], 1, "length", 1))
        rc, out, err = b.finish()
        check(rc == 0 and out == "ok\n", f"exit {rc}, stdout {out!r}")
        check("secret" not in err and "[length: 1 tokens" in err, f"stderr {err!r}")
    finally:
        b.close()


def test_broker_from_environment():
    """SMQ_BROKER names the broker when --broker is not given."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.ROUTER)
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    env = dict(os.environ, SMQ_BROKER=f"tcp://127.0.0.1:{port}")
    p = subprocess.Popen([BIN, "ask", "hello"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        check(sock.poll(5000), "nothing arrived at $SMQ_BROKER")
        frames = sock.recv_multipart()
        check(frames[2] == b"CHAT", f"{frames[2]!r}")
        rid = msgpack.unpackb(frames[3])["id"]
        sock.send_multipart([frames[0], HEADER, b"DONE", msgpack.packb(done(rid, 0, completion=0))])
        out, err = p.communicate(timeout=10)
        check(p.returncode == 0, f"exit {p.returncode}: {err!r}")
    finally:
        if p.poll() is None:
            p.kill()
        sock.close(0)
        ctx.term()


def test_json():
    b = FakeBroker("--json", "q")
    try:
        import json
        req = b.recv_cmd("CHAT")
        b.send("TOKEN", {"id": req["id"], "seq": 0, "tokens": [1], "reasoning": "hm"})
        b.send("TOKEN", {"id": req["id"], "seq": 1, "tokens": [2, 3], "content": "Yes."})
        b.send("DONE", done(req["id"], 2, "stop_string"))
        rc, out, err = b.finish()
        check(rc == 0, f"exit {rc}: {err!r}")
        j = json.loads(out)
        check(j["id"] == req["id"] and j["reasoning"] == "hm" and j["content"] == "Yes.", f"{j}")
        check(j["finish"] == "stop_string" and j["usage"]["completion_tokens"] == 3, f"{j}")
        check(j["timings"]["decode_tps"] == 37.5, f"{j}")
    finally:
        b.close()


def test_error():
    b = FakeBroker("q")
    try:
        req = b.recv_cmd("CHAT")
        b.send("TOKEN", {"id": req["id"], "seq": 0, "tokens": [1], "content": "par"})
        b.send("ERROR", {"id": req["id"], "seq": 1, "code": "worker_lost", "message": "worker w1 went silent"})
        rc, out, err = b.finish()
        check(rc == 1, f"exit {rc}")
        check("worker_lost: worker w1 went silent" in err, f"stderr {err!r}")
    finally:
        b.close()


def test_error_without_id():
    """The broker could not read the CHAT: its ERROR names no request, and ends the tool's only one."""
    b = FakeBroker("q")
    try:
        b.recv_cmd("CHAT")
        b.send("ERROR", {"code": "bad_frame", "message": "frame 2: body: truncated"})
        rc, out, err = b.finish()
        check(rc == 1 and "bad_frame: frame 2: body: truncated" in err, f"exit {rc}, stderr {err!r}")
    finally:
        b.close()


def test_seq_gap():
    b = FakeBroker("q")
    try:
        req = b.recv_cmd("CHAT")
        b.send("TOKEN", {"id": req["id"], "seq": 0, "tokens": [1], "content": "a"})
        b.send("TOKEN", {"id": req["id"], "seq": 2, "tokens": [2], "content": "c"})
        cancel = b.recv_cmd("CANCEL")
        check(cancel == {"id": req["id"]}, f"CANCEL {cancel}")
        b.send("DONE", done(req["id"], 3))  # after the local end: dropped
        rc, out, err = b.finish()
        check(rc == 1, f"exit {rc}")
        check(out == "a", f"stdout {out!r}")
        check("internal:" in err and "expected seq 1, received seq 2" in err, f"stderr {err!r}")
    finally:
        b.close()


def test_frames_for_other_ids_dropped():
    b = FakeBroker("q")
    try:
        req = b.recv_cmd("CHAT")
        b.send("TOKEN", {"id": "not-mine", "seq": 0, "tokens": [1], "content": "X"})
        b.send("TOKEN", {"id": req["id"], "seq": 0, "tokens": [1], "content": "ok"})
        b.send("DONE", done(req["id"], 1))
        rc, out, err = b.finish()
        check(rc == 0 and out == "ok\n", f"exit {rc}, stdout {out!r}, stderr {err!r}")
    finally:
        b.close()


def test_broker_lost():
    """A broker that takes the CHAT and says nothing: heartbeats go out every second, and after 3 s of
    silence the request ends with broker_lost."""
    b = FakeBroker("q")
    try:
        t0 = time.time()
        b.recv_cmd("CHAT")
        rc, out, err = b.finish(timeout=10)
        elapsed = time.time() - t0
        check(rc == 1 and "broker_lost" in err, f"exit {rc}, stderr {err!r}")
        check(2.5 < elapsed < 6, f"ended after {elapsed:.2f} s, expected about 3")
        while b.sock.poll(100):
            b.recv()
        beats = sum(1 for cmd, body in b.received if cmd == "HEARTBEAT")
        check(beats >= 2 and all(body == {} for cmd, body in b.received if cmd == "HEARTBEAT"),
              f"{beats} heartbeats: {b.received}")
        print(f"  broker_lost after {elapsed:.2f} s, {beats} heartbeats sent")
    finally:
        b.close()


def test_heartbeats_keep_it_alive():
    """A broker that only heartbeats for 4.5 s (longer than 3 s liveness) and then answers."""
    b = FakeBroker("q")
    try:
        req = b.recv_cmd("CHAT")
        end = time.time() + 4.5
        while time.time() < end:
            b.send("HEARTBEAT", {})
            time.sleep(0.5)
            while b.sock.poll(0):
                b.recv()
        b.send("DONE", done(req["id"], 0, completion=0))
        rc, out, err = b.finish()
        check(rc == 0, f"exit {rc}: {err!r}")
        beats = sum(1 for cmd, _ in b.received if cmd == "HEARTBEAT")
        check(beats >= 3, f"{beats} heartbeats from the client in 4.5 s")
    finally:
        b.close()


def test_answers_broker_heartbeats():
    """A broker whose interval (100 ms) is shorter than the client's (1000 ms): the client answers each
    of its HEARTBEATs, so the broker, which judges clients by its own interval, hears it often enough."""
    b = FakeBroker("q")
    try:
        req = b.recv_cmd("CHAT")
        t_chat = time.time()
        answers = []
        end = t_chat + 1.0
        while time.time() < end:
            b.send("HEARTBEAT", {"heartbeat_ms": 100})
            t_sent = time.time()
            while time.time() < t_sent + 0.1:
                if b.sock.poll(10):
                    cmd, _ = b.recv()
                    if cmd == "HEARTBEAT":
                        answers.append(time.time())
        b.send("DONE", done(req["id"], 0, completion=0))
        rc, out, err = b.finish()
        check(rc == 0, f"exit {rc}: {err!r}")
        gaps = [t2 - t1 for t1, t2 in zip([t_chat] + answers, answers)]
        check(len(answers) >= 8 and max(gaps) < 0.25,
              f"{len(answers)} HEARTBEATs from the client in 1 s of broker HEARTBEATs every 100 ms; gaps "
              f"{['%.3f' % g for g in gaps]}")
    finally:
        b.close()


def test_broker_interval():
    """A broker that announces an interval of 1500 ms and then says nothing: the client allows it
    3 x max(1000, 1500) ms = 4.5 s of silence, not 3 s, and heartbeats at its own 1 s meanwhile."""
    b = FakeBroker("q")
    try:
        b.recv_cmd("CHAT")
        t0 = time.time()
        b.send("HEARTBEAT", {"heartbeat_ms": 1500})
        rc, out, err = b.finish(timeout=10)
        elapsed = time.time() - t0
        check(rc == 1 and "broker_lost" in err and "4500 ms" in err, f"exit {rc}, stderr {err!r}")
        check(4.2 < elapsed < 6, f"ended after {elapsed:.2f} s, expected about 4.5")
        while b.sock.poll(100):
            b.recv()
        beats = sum(1 for cmd, body in b.received if cmd == "HEARTBEAT")
        check(beats >= 4, f"{beats} heartbeats in {elapsed:.1f} s")
    finally:
        b.close()


def test_bad_body_ends_request():
    """A TOKEN for the open request with a bad field: the request ends here with internal, and is
    cancelled at the broker."""
    b = FakeBroker("q")
    try:
        req = b.recv_cmd("CHAT")
        b.send("TOKEN", {"id": req["id"], "seq": 0, "tokens": [1], "content": "a"})
        b.send("TOKEN", {"id": req["id"], "seq": 1, "tokens": ["x"], "content": "b"})
        cancel = b.recv_cmd("CANCEL")
        check(cancel == {"id": req["id"]}, f"CANCEL {cancel}")
        b.send("DONE", done(req["id"], 2))  # after the local end: dropped
        rc, out, err = b.finish()
        check(rc == 1 and out == "a", f"exit {rc}, stdout {out!r}")
        check("internal:" in err and "tokens[0]" in err, f"stderr {err!r}")
        check(not any(cmd == "ERROR" for cmd, _ in b.received), f"a bad field was answered: {b.received}")
    finally:
        b.close()


def test_ctrl_c_cancels():
    b = FakeBroker("q")
    try:
        req = b.recv_cmd("CHAT")
        b.send("TOKEN", {"id": req["id"], "seq": 0, "tokens": [1], "content": "Once upon"})
        time.sleep(0.3)
        b.proc.send_signal(signal.SIGINT)
        cancel = b.recv_cmd("CANCEL")
        check(cancel == {"id": req["id"]}, f"CANCEL {cancel}")
        b.send("TOKEN", {"id": req["id"], "seq": 1, "tokens": [2], "content": " a time"})
        b.send("DONE", done(req["id"], 2, "cancelled", 2))
        rc, out, err = b.finish()
        check(rc == 130, f"exit {rc}: {err!r}")
        check(out == "Once upon a time\n", f"stdout {out!r}")
        check("[cancelled: 2 tokens" in err, f"stderr {err!r}")
    finally:
        b.close()


def test_ctrl_c_bounded():
    """Ctrl-C and a broker that never answers the CANCEL: the wait for the terminal frame is bounded."""
    b = FakeBroker("q")
    try:
        b.recv_cmd("CHAT")
        t0 = time.time()
        b.proc.send_signal(signal.SIGINT)
        b.recv_cmd("CANCEL")
        end = time.time() + 8
        while b.proc.poll() is None and time.time() < end:
            b.send("HEARTBEAT", {})  # alive, but silent about the request
            time.sleep(0.3)
        rc, out, err = b.finish()
        check(rc == 130 and "no answer to CANCEL" in err, f"exit {rc}, stderr {err!r}")
        check(time.time() - t0 < 7, f"took {time.time() - t0:.1f} s")
    finally:
        b.close()


def test_answers_bad_frames():
    """Frames the client cannot read are answered with ERROR (bad_frame / unsupported_version), and the
    request carries on."""
    b = FakeBroker("q")
    try:
        req = b.recv_cmd("CHAT")
        b.send(None, None, raw_frames=[b"SMQ/2", b"TOKEN", b"\x80"])
        e = b.recv_cmd("ERROR")
        check(e["code"] == "unsupported_version" and "SMQ/2" in e["message"] and "id" not in e, f"{e}")
        b.send(None, None, raw_frames=[HEADER, b"TOKEN", b"\x92\x01\x02"])
        e = b.recv_cmd("ERROR")
        check(e["code"] == "bad_frame" and "not a msgpack map" in e["message"], f"{e}")
        b.send(None, None, raw_frames=[HEADER, b"ERROR", b"\xc1"])  # a broken ERROR is not answered
        b.send("READY", {"model": "m", "capacity": 1})  # not a command a broker sends to clients
        e = b.recv_cmd("ERROR")
        check(e["code"] == "bad_frame" and "READY" in e["message"], f"{e}")
        b.send("HEARTBEAT", {"heartbeat_ms": 5})  # a bad field: not answered with an ERROR
        b.send("TOKEN", {"id": "not-open", "seq": 0, "tokens": ["x"]})  # a bad field, no open request: dropped
        b.send("TOKEN", {"id": req["id"], "seq": 0, "tokens": [1], "content": "fine"})
        b.send("DONE", done(req["id"], 1))
        rc, out, err = b.finish()
        check(rc == 0 and out == "fine\n", f"exit {rc}, stdout {out!r}, stderr {err!r}")
        errors = [body for cmd, body in b.received if cmd == "ERROR"]
        check(len(errors) == 3, f"{len(errors)} ERRORs sent: {errors}")
    finally:
        b.close()


def test_usage_errors():
    for args, want in ((["--temperature", "3", "q"], "--temperature"), (["--max-tokens", "0", "q"], "--max-tokens"),
                       (["--seed", "-1", "q"], "--seed"), ([], "no question"), (["a", "b"], "one question"),
                       (["--bogus", "x", "q"], "unknown argument")):
        p = subprocess.run([BIN, "ask", "--broker", "tcp://127.0.0.1:1"] + args, capture_output=True, text=True,
                           timeout=10)
        check(p.returncode == 2 and want in p.stderr, f"{args}: exit {p.returncode}, stderr {p.stderr!r}")


def main():
    if not os.path.exists(BIN):
        print(f"FAIL ask_fake_broker: {BIN} not built")
        return 1
    tests = [v for k, v in globals().items() if k.startswith("test_") and callable(v)]
    only = sys.argv[1:]
    for t in tests:
        if not only or any(o in t.__name__ for o in only):
            run(t)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
