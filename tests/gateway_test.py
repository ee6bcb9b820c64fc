#!/usr/bin/python3
"""gateway_test.py - smolmq-gateway from the outside: HTTP, SSE, WebSocket.

Starts smolmq-broker, smolmq-worker (the tiny test model, one thread) and
smolmq-gateway processes on random free ports, and talks to the gateway as
OpenAI's clients do (http.client, raw sockets for what a library would not
send, python3-websockets). Chat text is checked against `smolmq generate`
with the same prompt and seed. What the tiny model cannot show (thinking
text, the broker's errors, a broken or silent broker) is played by a fake
broker: a ROUTER socket driven by a thread.

Runs with /usr/bin/python3 (python3-zmq, python3-msgpack, python3-websockets).
Binaries from $SMQ_BUILD/bin (default build/bin). Every process it starts is
stopped when its test ends, pass or fail; gateways get SIGTERM first, so
that a sanitized build (SMQ_BUILD=build/san) reports leaks, and any
sanitizer report in a gateway's stderr fails the test. Prints one
PASS/FAIL/SKIP line per test.
"""
import asyncio
import base64
import http.client
import json
import os
import queue
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "proto", "clients", "python"))
import msgpack  # noqa: E402
import websockets  # noqa: E402
import zmq  # noqa: E402
from nettest import check, free_port, run_tests  # noqa: E402
from smolmq_client import Client  # noqa: E402

BUILD = os.environ.get("SMQ_BUILD", "build")
BIN = os.path.join(BUILD, "bin")
TOOL = os.environ.get("SMQ_BIN", os.path.join(BIN, "smolmq"))
MODEL = os.path.join(os.environ.get("SMQ_TEST_DATA", "tests/data"), "models/smollm3-tiny-q4_k_m.gguf")
MODEL_NAME = "smollm3-tiny-q4_k_m"
HB_MS = 250
TMP = tempfile.mkdtemp(prefix="smolmq-gateway-")
SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:")




def wait_for(cond, msg, timeout=2.0):
    end = time.time() + timeout
    while not cond():
        check(time.time() < end, msg)
        time.sleep(0.01)



def user(text):
    return [{"role": "user", "content": text}]


# ---- processes ----

class Stack:
    """A broker, workers and gateways; `with Stack() as s:` stops them all."""

    def __init__(self, workers=1, capacity=4, broker_args=(), worker_args=(), gateway_args=(), broker_ep=None):
        self.cport, self.wport = free_port(), free_port()
        self.client_ep = broker_ep or f"tcp://127.0.0.1:{self.cport}"
        self.fake = broker_ep is not None
        self.broker_args, self.worker_args = list(broker_args), list(worker_args)
        self.capacity, self.n_workers = capacity, workers
        self.gateway_args = list(gateway_args)
        self.procs, self.gateways, self.logs = [], [], []
        self.port = None

    def log(self, name):
        f = open(os.path.join(TMP, f"{name}-{len(self.logs)}.log"), "w+")
        self.logs.append((name, f))
        return f

    def start_broker(self):
        self.procs.append(subprocess.Popen(
            [os.path.join(BIN, "smolmq-broker"), "--clients", self.client_ep,
             "--workers", f"tcp://127.0.0.1:{self.wport}", "--heartbeat-ms", str(HB_MS), *self.broker_args],
            stdout=subprocess.DEVNULL, stderr=self.log("broker")))

    def start_worker(self):
        self.procs.append(subprocess.Popen(
            [os.path.join(BIN, "smolmq-worker"), "--model", MODEL, "--broker", f"tcp://127.0.0.1:{self.wport}",
             "--heartbeat-ms", str(HB_MS), "--threads", "1", "--capacity", str(self.capacity), *self.worker_args],
            stdout=subprocess.DEVNULL, stderr=self.log("worker")))

    def start_gateway(self, *extra, port=None, listen=()):
        port = port or free_port()
        args = [os.path.join(BIN, "smolmq-gateway"), "--listen", f"127.0.0.1:{port}", "--broker", self.client_ep,
                "--heartbeat-ms", str(HB_MS), *self.gateway_args, *extra]
        for extra_port in listen:
            args += ["--listen", f"127.0.0.1:{extra_port}"]
        p = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=self.log("gateway"))
        self.gateways.append(p)
        for each in (port, *listen):  # the shared port may answer already: another gateway holds it too
            wait_port(each, p, self)
        return port

    def __enter__(self):
        if not self.fake:
            self.start_broker()
            for _ in range(self.n_workers):
                self.start_worker()
        self.port = self.start_gateway()
        if self.n_workers and not self.fake:
            self.wait_ready(self.port)
        return self

    def wait_ready(self, port, timeout=20.0):
        end = time.time() + timeout
        while time.time() < end:
            if get(port, "/readyz")[0] == 200:
                return
            time.sleep(0.1)
        raise AssertionError(f"/readyz not 200 within {timeout} s\n{self.tail()}")

    def broker_stats(self):
        c = Client(self.client_ep, heartbeat_ms=HB_MS)
        try:
            return c.stats(timeout=2.0)
        finally:
            c.close()

    def tail(self):
        out = []
        for name, f in self.logs:
            f.flush()
            f.seek(0)
            out.append(f"--- {name}:\n" + "\n".join(f.read().splitlines()[-8:]))
        return "\n".join(out)

    def gateway_log(self):
        text = ""
        for name, f in self.logs:
            if name == "gateway":
                f.flush()
                f.seek(0)
                text += f.read()
        return text

    def __exit__(self, *exc):
        # Gateways drain on SIGTERM and exit: a sanitized build reports leaks then.
        for p in self.gateways:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.gateways:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            p.wait()
        reports = []
        for name, f in self.logs:
            f.flush()
            f.seek(0)
            text = f.read()
            for marker in SANITIZER_MARKERS:
                if marker in text:
                    at = text.index(marker)
                    reports.append(f"{name}: {text[max(0, at - 200):at + 1500]}")
            f.close()
        if reports and not exc[0]:
            raise AssertionError("sanitizer report:\n" + "\n".join(reports))
        bad_exit = [p.returncode for p in self.gateways if p.returncode != 0]
        if bad_exit and not exc[0]:
            raise AssertionError(f"a gateway exited with {bad_exit}")
        return False


def wait_port(port, proc, stack, timeout=10.0):
    end = time.time() + timeout
    while time.time() < end:
        check(proc.poll() is None, f"the gateway exited with {proc.returncode}\n{stack.tail()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"the gateway does not listen on {port}")


# ---- HTTP helpers ----

def request(port, method, path, body=None, headers=None, timeout=30):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        data = json.dumps(body).encode() if isinstance(body, (dict, list)) else body
        h = {"Content-Type": "application/json"} if data is not None else {}
        h.update(headers or {})
        c.request(method, path, body=data, headers=h)
        r = c.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        c.close()


def get(port, path, headers=None):
    try:
        return request(port, "GET", path, headers=headers, timeout=5)
    except OSError as e:
        return 0, {}, str(e).encode()


def chat(port, body, headers=None):
    status, h, data = request(port, "POST", "/v1/chat/completions", body, headers)
    return status, h, json.loads(data) if data else None


def sse_events(data):
    """The JSON of each `data:` event, and whether [DONE] ended the stream."""
    events, done = [], False
    for block in data.decode().split("\n\n"):
        if not block.strip():
            continue
        check(block.startswith("data: "), f"not an SSE data event: {block[:100]!r}")
        payload = block[6:]
        if payload == "[DONE]":
            done = True
        else:
            check(not done, "an event after [DONE]")
            events.append(json.loads(payload))
    return events, done


def stream(port, body, headers=None):
    status, h, data = request(port, "POST", "/v1/chat/completions", {**body, "stream": True}, headers)
    if status != 200:
        return status, h, json.loads(data), False
    events, done = sse_events(data)
    return status, h, events, done


def raw(port, data, timeout=5.0, wait_close=True):
    """Sends bytes on a fresh connection; returns everything read until it closes."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        s.sendall(data)
        out = b""
        while True:
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                break
            if not chunk:
                break
            out += chunk
            if not wait_close and b"\r\n\r\n" in out:
                break
        return out
    finally:
        s.close()


def generate(prompt, seed, max_tokens, *extra):
    p = subprocess.run([TOOL, "generate", "--model", MODEL, "--prompt", prompt, "--seed", str(seed),
                        "--max-tokens", str(max_tokens), "--threads", "1", "--json", *extra],
                       capture_output=True, text=True)
    check(p.returncode == 0, f"smolmq generate failed: {p.stderr.strip()}")
    return json.loads(p.stdout)


def check_error(status, body, want_status, want_code=None, param=None, words=()):
    check(status == want_status, f"status {status}, not {want_status}: {body}")
    check(isinstance(body, dict) and set(body) == {"error"}, f"not OpenAI's error shape: {body}")
    e = body["error"]
    check(set(e) == {"message", "type", "param", "code"}, f"error fields: {e}")
    check(isinstance(e["message"], str) and len(e["message"]) > 10, f"no useful message: {e}")
    if want_code:
        check(e["code"] == want_code, f"code {e['code']}, not {want_code}: {e}")
    if param:
        check(e["param"] == param, f"param {e['param']}, not {param}: {e}")
    for w in words:
        check(w in e["message"], f"the message does not say {w!r}: {e['message']}")


SECURITY_HEADERS = {
    "content-security-policy": "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
                               "connect-src 'self'; frame-ancestors 'none'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
}


def check_security_headers(h, what):
    for k, v in SECURITY_HEADERS.items():
        check(h.get(k) == v, f"{what}: {k} is {h.get(k)!r}")


# ---- the fake broker ----

class FakeBroker:
    """A ROUTER playing the broker. A CHAT whose first message's content is
    a scenario name gets that scenario's frames; STATS get self.stats."""

    def __init__(self):
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.ROUTER)
        self.sock.linger = 0
        port = self.sock.bind_to_random_port("tcp://127.0.0.1")
        self.endpoint = f"tcp://127.0.0.1:{port}"
        self.chats, self.cancels, self.heartbeats = [], [], 0
        self.stats = {"workers": [{"name": "fake", "model": "fake-model", "capacity": 2, "in_flight": 0,
                                   "heartbeat_age_ms": 1.0}],
                      "queues": [{"model": "fake-model", "depth": 0}],
                      "totals": {k: 0 for k in ("accepted", "completed", "failed", "cancelled", "rejected",
                                                "redispatched", "tokens_out")},
                      "clients": 0, "uptime_ms": 1.0}
        self.outbox = queue.Queue()
        self.stop = False
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def send(self, ident, cmd, body):
        self.outbox.put([ident, b"SMQ/1", cmd.encode(), msgpack.packb(body)])

    def run(self):
        while not self.stop:
            while not self.outbox.empty():
                self.sock.send_multipart(self.outbox.get())
            if not self.sock.poll(10):
                continue
            ident, _hdr, cmd, body = self.sock.recv_multipart()
            body = msgpack.unpackb(body)
            if cmd == b"STATS":
                self.send(ident, "STATS", self.stats)
            elif cmd == b"HEARTBEAT":
                self.heartbeats += 1
            elif cmd == b"CANCEL":
                self.cancels.append(body["id"])
            elif cmd == b"CHAT":
                self.chats.append(body)
                threading.Thread(target=self.scenario, args=(ident, body), daemon=True).start()

    def scenario(self, ident, body):
        rid, name = body["id"], body["messages"][0]["content"]
        tok = lambda seq, **kw: self.send(ident, "TOKEN", {"id": rid, "seq": seq, "tokens": [seq + 1], **kw})  # noqa
        done = {"id": rid, "finish": "eog", "usage": {"prompt_tokens": 11, "completion_tokens": 4, "cached_tokens": 3},
                "timings": {"queue_ms": 1.0, "ttft_ms": 2.0, "total_ms": 3.0, "decode_tps": 4.0}}
        if name == "think":
            done["usage"]["reasoning_tokens"] = 2
            tok(0, reasoning="Let me ")
            tok(1, reasoning="think.")
            tok(2, content="Hello")
            tok(3, content=" world")
            self.send(ident, "DONE", {**done, "seq": 4})
        elif name.startswith("code:"):
            self.send(ident, "ERROR", {"id": rid, "seq": 0, "code": name[5:], "message": f"fake {name[5:]}"})
        elif name == "late_error":
            tok(0, content="Hel")
            time.sleep(0.05)
            self.send(ident, "ERROR", {"id": rid, "seq": 1, "code": "worker_lost", "message": "fake worker died"})
        elif name == "gap":
            tok(0, content="a")
            tok(2, content="c")
        elif name == "heartbeats":
            for _ in range(6):
                self.send(ident, "HEARTBEAT", {"heartbeat_ms": 100})
                time.sleep(0.1)
            self.send(ident, "DONE", {**done, "seq": 0})
        elif name == "silent":
            pass  # the broker says nothing more: the gateway must give up on it
        else:
            self.send(ident, "DONE", {**done, "seq": 0})

    def close(self):
        self.stop = True
        self.thread.join()
        self.sock.close()
        self.ctx.term()


# ---- tests: chat through the real broker and worker ----

def test_chat_matches_generate():
    prompt, seed = "What is the capital of France?", 7
    want = generate(prompt, seed, 12)
    with Stack() as s:
        status, h, body = chat(s.port, {"model": MODEL_NAME, "messages": user(prompt), "seed": seed, "max_tokens": 12})
        check(status == 200, f"{status} {body}")
        check_security_headers(h, "a chat completion")
        check(body["object"] == "chat.completion" and body["id"].startswith("chatcmpl-"), f"{body}")
        msg = body["choices"][0]["message"]
        check(msg["role"] == "assistant" and msg["content"] == want["content"],
              f"content {msg['content']!r} != generate's {want['content']!r}")
        check(msg.get("reasoning_content", "") == want["reasoning"], f"reasoning {msg}")
        check(body["choices"][0]["finish_reason"] == "length", f"{body['choices']}")
        u = body["usage"]
        check(u["completion_tokens"] == 12 and u["prompt_tokens"] == want["usage"]["prompt_tokens"] and
              u["total_tokens"] == u["prompt_tokens"] + 12 and "cached_tokens" in u["prompt_tokens_details"] and
              u["completion_tokens_details"]["reasoning_tokens"] == want["usage"]["reasoning_tokens"], f"{u}")

        # Streaming: a role chunk, the same text in deltas, finish, usage, [DONE].
        status, h, events, done = stream(s.port, {"messages": user(prompt), "seed": seed, "max_tokens": 12,
                                                  "stream_options": {"include_usage": True}})
        check(status == 200 and h["content-type"].startswith("text/event-stream") and done, f"{status} {h}")
        check(all(e["object"] == "chat.completion.chunk" and e["id"] == events[0]["id"] for e in events), "ids")
        check(events[0]["choices"][0]["delta"].get("role") == "assistant", f"first chunk {events[0]}")
        check(all(e["model"] == MODEL_NAME for e in events), f"model {events[0]['model']}")
        text = "".join(e["choices"][0]["delta"].get("content") or "" for e in events if e["choices"])
        check(text == want["content"], f"streamed {text!r} != {want['content']!r}")
        finish = [e["choices"][0]["finish_reason"] for e in events if e["choices"] and e["choices"][0]["finish_reason"]]
        check(finish == ["length"], f"finish reasons {finish}")
        check(events[-1]["choices"] == [] and events[-1]["usage"]["completion_tokens"] == 12, f"{events[-1]}")
        check(all(e["usage"] is None for e in events[:-1]), "usage: null on the other chunks")

        # Without include_usage: no usage chunk, no usage keys.
        status, _, events, done = stream(s.port, {"messages": user(prompt), "seed": seed, "max_tokens": 3})
        check(done and all("usage" not in e and e["choices"] for e in events), f"{events[-1]}")

        # A stop string: the text ends before it, finish_reason "stop".
        stop = want["content"][8:12]
        want_stop = generate(prompt, seed, 12, "--stop", stop)
        status, _, body = chat(s.port, {"messages": user(prompt), "seed": seed, "max_tokens": 12, "stop": [stop]})
        check(status == 200, f"{body}")
        c = body["choices"][0]
        check(c["message"]["content"] == want_stop["content"] and c["finish_reason"] == "stop",
              f"stop {stop!r}: {c} vs {want_stop['content']!r}")
        print(f"    {len(want['content'])} chars equal to smolmq generate; stop string {stop!r} honoured", flush=True)


def test_bad_requests():
    with Stack(gateway_args=["--max-body-bytes", "65536", "--max-tokens", "1000"]) as s:
        p = s.port
        ok = {"messages": user("hi"), "max_tokens": 2}
        cases = [
            ({**ok, "n": 2}, 400, "unsupported_value", "n"),
            ({**ok, "tools": [{"type": "function", "function": {"name": "f"}}]}, 400, "unsupported_parameter", "tools"),
            ({**ok, "logprobs": True}, 400, "unsupported_parameter", "logprobs"),
            ({**ok, "response_format": {"type": "json_object"}}, 400, "unsupported_parameter", "response_format"),
            ({**ok, "logit_bias": {"1": 5}}, 400, "unsupported_parameter", "logit_bias"),
            ({"messages": "hi"}, 400, "invalid_type", "messages"),
            ({"messages": []}, 400, "empty_array", "messages"),
            ({"messages": [{"role": "user"}]}, 400, "missing_required_parameter", "messages[0].content"),
            ({"messages": [{"role": "wizard", "content": "x"}]}, 400, "invalid_value", "messages[0].role"),
            ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}, 400,
             "unsupported_content_type", "messages[0].content[0].type"),
            ({**ok, "temperature": "hot"}, 400, "invalid_type", "temperature"),
            ({**ok, "temperature": 3}, 400, "invalid_value", "temperature"),
            ({**ok, "max_tokens": 5000}, 400, "invalid_value", "max_tokens"),
            ({**ok, "stream": "yes"}, 400, "invalid_type", "stream"),
            ({**ok, "reasoning_effort": "extreme"}, 400, "invalid_value", "reasoning_effort"),
            ({**ok, "model": "no-such-model"}, 404, "model_not_found", "model"),
        ]
        for body, st, code, param in cases:
            status, _, got = chat(p, body)
            check_error(status, got, st, code, param)
        # Harmless fields are ignored; text parts are joined.
        status, _, got = chat(p, {**ok, "user": "u", "metadata": {"a": "b"}, "store": False, "service_tier": "auto",
                                  "messages": [{"role": "user", "content": [{"type": "text", "text": "a"},
                                                                            {"type": "text", "text": "b"}]}]})
        check(status == 200, f"harmless fields: {got}")
        status, _, got = chat(p, b'{"messages": [')
        check_error(status, got, 400, "invalid_json", words=["not valid JSON"])
        status, _, got = chat(p, b'{"messages": [{"role": "user", "content": "\xff\xfe"}]}')
        check_error(status, got, 400, "invalid_encoding", words=["UTF-8"])
        status, _, got = chat(p, json.dumps({"messages": user("x" * 70000)}).encode())
        check_error(status, got, 413, "request_too_large", words=["65536"])
        status, _, got = chat(p, b"")
        check_error(status, got, 400, "invalid_json", words=["empty"])
        status, _, got = request(p, "GET", "/v1/chat/completions")
        check_error(status, json.loads(got), 405, "method_not_allowed", words=["POST"])
        out = raw(p, b"BREW /pot HTTP/1.1\r\nHost: x\r\n\r\n")
        check(out.startswith(b"HTTP/1.1 4"), f"a bad method: {out[:60]!r}")
        out = raw(p, b"GET / HTTP/1.1\r\n" + b"X-Big: " + b"a" * 20000 + b"\r\n\r\n")
        check(out.startswith(b"HTTP/1.1 431"), f"huge headers: {out[:60]!r}")
        out = raw(p, b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n")
        check(out.startswith(b"HTTP/1.1 400"), f"smuggling headers: {out[:60]!r}")
        # Still serving after all that.
        status, _, got = chat(p, ok)
        check(status == 200, f"after bad requests: {got}")


def test_api_keys_and_cors():
    keys = os.path.join(TMP, "keys")
    with open(keys, "w") as f:
        f.write("# test keys\nsk-first\n  sk-second   # with a comment\n\n")
    with Stack(gateway_args=["--keys", keys, "--cors-origin", "http://allowed.example"]) as s:
        p = s.port
        status, h, body = chat(p, {"messages": user("hi"), "max_tokens": 2})
        check_error(status, body, 401, "missing_api_key", words=["Authorization: Bearer"])
        check(h.get("www-authenticate") == "Bearer", f"{h}")
        status, _, body = chat(p, {"messages": user("hi"), "max_tokens": 2}, {"Authorization": "Bearer sk-wrong"})
        check_error(status, body, 401, "invalid_api_key")
        status, _, body = chat(p, {"messages": user("hi"), "max_tokens": 2}, {"Authorization": "Bearer sk-second"})
        check(status == 200, f"a good key: {body}")
        status, _, body = get(p, "/v1/models", {"Authorization": "Basic c2stZmlyc3Q="})
        check(status == 401, "Basic auth is not a bearer key")
        check(get(p, "/v1/models", {"Authorization": "Bearer sk-first"})[0] == 200, "models with a key")
        check(get(p, "/healthz")[0] == 200 and get(p, "/")[0] == 200, "health and the web chat need no key")
        check("API keys: 2 from" in s.gateway_log(), "the gateway does not say it has keys")
        # CORS: a preflight from an allowed origin, and one from another.
        status, h, _ = request(p, "OPTIONS", "/v1/chat/completions", headers={
            "Origin": "http://allowed.example", "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type, x-stainless-os"})
        check(status == 204 and h.get("access-control-allow-origin") == "http://allowed.example" and
              "x-stainless-os" in h.get("access-control-allow-headers", ""), f"preflight: {status} {h}")
        status, h, _ = request(p, "OPTIONS", "/v1/chat/completions", headers={
            "Origin": "http://evil.example", "Access-Control-Request-Method": "POST"})
        check(status == 403 and "access-control-allow-origin" not in h, f"a foreign preflight: {status} {h}")
        status, h, _ = get(p, "/v1/models", {"Origin": "http://allowed.example", "Authorization": "Bearer sk-first"})
        check(h.get("access-control-allow-origin") == "http://allowed.example", f"{h}")
        # WebSockets: the key in Authorization, or (what a browser can do) as the subprotocol
        # openai-insecure-api-key.KEY beside smolmq, which the handshake selects.
        async def ws_chat(**kw):
            async with websockets.connect(f"ws://127.0.0.1:{p}/v1/ws", **kw) as ws:
                await ws.send(json.dumps({"type": "chat", "id": "k", "messages": user("hi"), "max_tokens": 2}))
                return ws.subprotocol, (await ws_collect(ws, ["k"]))["k"][-1]["type"]
        got = asyncio.run(ws_chat(subprotocols=["smolmq", "openai-insecure-api-key.sk-second"]))
        check(got == ("smolmq", "done"), f"the key as a subprotocol: {got}")
        got = asyncio.run(ws_chat(extra_headers={"Authorization": "Bearer sk-first"}))
        check(got == (None, "done"), f"the key in Authorization: {got}")

        def handshake(protocols, upgraded=False):
            # "close" beside "Upgrade": a refusal ends the connection, so that its body is read whole.
            out = raw(p, b"GET /v1/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade%s\r\n"
                         b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n" %
                         (b"" if upgraded else b", close") +
                         (b"Sec-WebSocket-Protocol: %s\r\n" % protocols.encode() if protocols else b"") + b"\r\n",
                      wait_close=not upgraded)
            head, _, body = out.partition(b"\r\n\r\n")
            return head.split(b" ")[1].decode(), head, body
        status, _, body = handshake(None)
        check(status == "401" and b"missing_api_key" in body and b"openai-insecure-api-key.KEY" in body, f"{body}")
        status, _, body = handshake("smolmq, openai-insecure-api-key.sk-wrong")
        check(status == "401" and b"invalid_api_key" in body, f"a wrong key as a subprotocol: {status} {body}")
        status, _, body = handshake("openai-insecure-api-key.sk-first")
        check(status == "400" and b"unsupported_subprotocol" in body and b"smolmq" in body,
              f"a key without smolmq: {status} {body}")
        status, head, _ = handshake("chat, openai-insecure-api-key.sk-first,smolmq", upgraded=True)
        check(status == "101" and b"Sec-WebSocket-Protocol: smolmq\r\n" in head + b"\r\n" and b"sk-first" not in head,
              f"smolmq selected, the key not echoed: {head}")
        status, head, _ = handshake("SMOLMQ, openai-insecure-api-key.sk-first")
        check(status == "400", f"subprotocols are case-sensitive: {head}")
    with Stack(workers=0) as s:
        check("the API is open" in s.gateway_log(), "an open gateway must say so")


def keygen(name):
    path = os.path.join(TMP, name)
    p = subprocess.run([os.path.join(BIN, "smolmq-broker"), "--keygen", path], capture_output=True, text=True)
    check(p.returncode == 0, f"--keygen: {p.stderr}")
    return path, p.stdout.split()[2]


def test_curve():
    broker_cert, broker_pub = keygen("broker")
    gw_cert, gw_pub = keygen("gateway")
    allowed = os.path.join(TMP, "clients.keys")
    with open(allowed, "w") as f:
        f.write(f"{gw_pub}\n")
    curve = ["--broker-key", broker_pub]
    with Stack(workers=0, broker_args=["--curve-secret", broker_cert, "--client-keys", allowed,
                                       "--worker-keys", allowed], worker_args=curve,
               gateway_args=[*curve, "--key-file", gw_cert]) as s:
        s.worker_args += ["--key-file", gw_cert]  # the allow-list holds one key: the worker uses it too
        s.start_worker()
        s.wait_ready(s.port)
        status, _, body = chat(s.port, {"messages": user("secret"), "max_tokens": 3})
        check(status == 200 and body["usage"]["completion_tokens"] == 3, f"through CURVE: {body}")
        check("(CURVE)" in s.gateway_log(), "the gateway does not say it uses CURVE")
        # A gateway with a key the broker does not allow gets no answer.
        s.gateway_args = []
        other = s.start_gateway(*curve)  # a fresh key pair of its own
        status, _, body = get(other, "/readyz")
        check(status == 503, f"a key not on the list: {status} {body}")


def test_overloaded_is_429():
    with Stack(capacity=1, broker_args=["--queue-max", "1"]) as s:
        p = s.port
        # One request runs (capacity 1), one waits (queue 1): a third is refused.
        sock = socket.create_connection(("127.0.0.1", p))
        body = json.dumps({"messages": user("Long story"), "max_tokens": 30000, "stream": True}).encode()
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        check(b"200 OK" in sock.recv(4096), "the long request did not start")
        result = {}
        t = threading.Thread(target=lambda: result.update(q=chat(p, {"messages": user("queued"), "max_tokens": 2})))
        t.start()
        for _ in range(50):
            st = s.broker_stats()
            if st["queues"] and st["queues"][0]["depth"] == 1:
                break
            time.sleep(0.05)
        status, h, got = chat(p, {"messages": user("one too many"), "max_tokens": 2})
        check_error(status, got, 429, "rate_limit_exceeded", words=["retry"])
        check(h.get("retry-after") == "1", f"Retry-After: {h}")
        sock.close()  # the long one ends: the queued one runs
        t.join(30)
        check(result.get("q", (0,))[0] == 200, f"the queued request: {result}")


def test_client_disconnect_cancels():
    with Stack() as s:
        sock = socket.create_connection(("127.0.0.1", s.port))
        body = json.dumps({"messages": user("Tell me everything"), "max_tokens": 30000, "stream": True}).encode()
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        got = b""
        while got.count(b"data: ") < 5:
            chunk = sock.recv(65536)
            check(chunk, f"the stream ended early: {got[:300]!r}")
            got += chunk
        check(s.broker_stats()["workers"][0]["in_flight"] == 1, "the stream is not running")
        sock.close()
        t0 = time.time()
        while time.time() - t0 < 5:
            st = s.broker_stats()
            if st["workers"][0]["in_flight"] == 0:
                break
            time.sleep(0.02)
        took = time.time() - t0
        check(st["workers"][0]["in_flight"] == 0 and st["totals"]["cancelled"] == 1, f"after {took:.2f} s: {st}")
        check(took < 1.0, f"the worker freed the sequence {took:.2f} s after the client left")
        print(f"    in_flight 0 at the broker {took * 1000:.0f} ms after the client closed", flush=True)


def test_sigterm_drains():
    with Stack() as s:
        sock = socket.create_connection(("127.0.0.1", s.port), timeout=20)
        body = json.dumps({"messages": user("Drain me"), "max_tokens": 120, "stream": True}).encode()
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        got = sock.recv(65536)
        check(b"200 OK" in got, f"{got[:100]!r}")
        gw = s.gateways[0]
        gw.send_signal(signal.SIGTERM)
        time.sleep(0.2)
        try:
            socket.create_connection(("127.0.0.1", s.port), timeout=1).close()
            raise AssertionError("still accepting connections while draining")
        except ConnectionRefusedError:
            pass
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            got += chunk
        sock.close()
        check(b"data: [DONE]" in got and b'"finish_reason":"length"' in got, f"the stream was cut: {got[-200:]!r}")
        check(gw.wait(timeout=5) == 0, "the gateway did not exit 0 after its drain")


def test_keep_alive_pipelining_chunked():
    with Stack() as s:
        p = s.port
        c = http.client.HTTPConnection("127.0.0.1", p, timeout=10)
        c.request("GET", "/healthz")
        r = c.getresponse()
        r.read()
        first = c.sock
        c.request("POST", "/v1/chat/completions", body=json.dumps({"messages": user("hi"), "max_tokens": 3}))
        r = c.getresponse()
        check(r.status == 200 and json.loads(r.read())["usage"]["completion_tokens"] == 3, "chat on keep-alive")
        c.request("GET", "/v1/models")
        r = c.getresponse()
        check(r.status == 200 and MODEL_NAME in r.read().decode(), "models on keep-alive")
        check(c.sock is first, "the connection was not reused")
        c.close()
        # A chunked request body, in three chunks.
        body = json.dumps({"messages": user("chunked"), "max_tokens": 2}).encode()
        parts = [body[:10], body[10:25], body[25:]]
        chunked = b"".join(b"%x\r\n%s\r\n" % (len(x), x) for x in parts) + b"0\r\n\r\n"
        out = raw(p, b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                     b"Connection: close\r\n\r\n" + chunked)
        check(out.startswith(b"HTTP/1.1 200") and b'"completion_tokens":2' in out, f"chunked: {out[:200]!r}")
        # Two requests in one write: two answers, in order.
        out = raw(p, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /v1/models HTTP/1.1\r\nHost: x\r\n"
                     b"Connection: close\r\n\r\n")
        check(out.count(b"HTTP/1.1 200") == 2 and out.index(b'"ok"') < out.index(MODEL_NAME.encode()),
              f"pipelined: {out[:300]!r}")
        # HTTP/1.0 gets a close-delimited stream.
        out = raw(p, b"POST /v1/chat/completions HTTP/1.0\r\nContent-Length: %d\r\n\r\n%s" % (
            len(json.dumps({"messages": user("hi"), "max_tokens": 2, "stream": True})),
            json.dumps({"messages": user("hi"), "max_tokens": 2, "stream": True}).encode()))
        check(b"Transfer-Encoding" not in out and out.rstrip().endswith(b"data: [DONE]"), f"1.0: {out[-200:]!r}")


def test_timeouts():
    with Stack(workers=0, gateway_args=["--request-timeout-ms", "400", "--idle-timeout-ms", "600"]) as s:
        t0 = time.time()
        out = raw(s.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # never finishes its headers
        took = time.time() - t0
        check(out.startswith(b"HTTP/1.1 408") and b"request_timeout" in out, f"slow headers: {out[:120]!r}")
        check(0.3 < took < 1.5, f"408 after {took:.2f} s")
        t0 = time.time()
        sock = socket.create_connection(("127.0.0.1", s.port), timeout=5)
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        got = b""
        while True:
            chunk = sock.recv(4096)
            if not chunk:
                break
            got += chunk
        took = time.time() - t0
        sock.close()
        check(got.count(b"HTTP/1.1 200") == 1 and 0.5 < took < 2.0, f"idle keep-alive closed after {took:.2f} s")
        t0 = time.time()
        out = raw(s.port, b"GET /v1/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                          b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
        took = time.time() - t0
        check(out.startswith(b"HTTP/1.1 101") and b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" in out, f"handshake {out!r}")
        check(0.5 < took < 2.0, f"an idle WebSocket closed after {took:.2f} s")


def test_models_health_ready_metrics():
    with Stack(workers=0) as s:
        p = s.port
        check(get(p, "/healthz")[:2][0] == 200, "healthz")
        status, _, body = get(p, "/readyz")
        check(status == 503, f"ready without workers: {status} {body}")
        s.start_worker()
        s.wait_ready(p)
        status, _, body = get(p, "/v1/models")
        models = json.loads(body)
        check(status == 200 and models["object"] == "list" and [m["id"] for m in models["data"]] == [MODEL_NAME] and
              models["data"][0]["object"] == "model", f"{models}")
        check(get(p, f"/v1/models/{MODEL_NAME}")[0] == 200 and get(p, "/v1/models/other")[0] == 404, "one model")
        status, _, events, done = stream(p, {"messages": user("hello"), "max_tokens": 4})
        check(status == 200 and done, f"{events}")
        for i in range(2):
            status, _, body = chat(p, {"messages": user(f"hello {i}"), "max_tokens": 4})
            check(status == 200, f"{body}")
        chat(p, {"messages": user("x"), "n": 3})
        time.sleep(0.6)  # past the STATS cache
        status, h, body = get(p, "/metrics")
        text = body.decode()
        check(status == 200 and h["content-type"].startswith("text/plain"), f"{status} {h}")
        for want in ('smolmq_gateway_requests_total{route="chat",code="200"} 3',
                     'smolmq_gateway_requests_total{route="chat",code="400"} 1',
                     'smolmq_gateway_time_to_first_token_seconds_count 3',
                     'smolmq_gateway_inter_token_seconds_bucket{le="+Inf"} 9',
                     'smolmq_gateway_completion_tokens_total 12', 'smolmq_gateway_active_streams 0',
                     'smolmq_broker_up 1', 'smolmq_broker_workers 1',
                     f'smolmq_broker_queue_depth{{model="{MODEL_NAME}"}} 0',
                     'smolmq_broker_requests_total{outcome="completed"} 3', 'smolmq_broker_tokens_out_total 12'):
            check(want in text, f"/metrics lacks {want!r}:\n{text[:3000]}")
        check("smolmq_gateway_prompt_tokens_total " in text and "# TYPE smolmq_gateway_inter_token_seconds histogram"
              in text, "metrics types")


def test_static_files():
    with Stack(workers=0) as s:
        p = s.port
        status, h, body = get(p, "/")
        check(status == 200 and h["content-type"] == "text/html; charset=utf-8" and body.startswith(b"<!doctype"),
              f"{status} {h}")
        check_security_headers(h, "the web chat")
        etag = h["etag"]
        status, h2, body2 = get(p, "/index.html", {"If-None-Match": etag})
        check(status == 304 and body2 == b"" and h2["etag"] == etag, f"304: {status} {h2}")
        status, _, _ = get(p, "/", {"If-None-Match": '"other"'})
        check(status == 200, "a stale ETag")
        status, h, body = request(p, "HEAD", "/")
        check(status == 200 and body == b"" and int(h["content-length"]) > 0, "HEAD")
        for path in ("/../etc/passwd", "/%2e%2e/etc/passwd", "/index.html/..", "/nope.js", "//etc/passwd"):
            status, h, body = get(p, path)
            check(status == 404, f"{path}: {status}")
            check_security_headers(h, path)


def test_reuseport_two_gateways():
    with Stack(workers=0) as s:
        own = [free_port(), free_port()]
        shared = free_port()
        s.start_gateway(port=shared, listen=[own[0]])
        s.start_gateway(port=shared, listen=[own[1]])
        for _ in range(40):
            check(get(shared, "/healthz")[0] == 200, "the shared port")
        counts = []
        for port in own:
            text = get(port, "/metrics")[2].decode()
            line = [ln for ln in text.splitlines() if ln.startswith('smolmq_gateway_requests_total{route="health"')]
            counts.append(int(line[0].split()[-1]) if line else 0)
        check(sum(counts) == 40 and min(counts) > 0, f"requests per gateway on one port: {counts}")
        print(f"    40 requests on one port: {counts[0]} + {counts[1]}", flush=True)


# ---- tests: the fake broker ----

def test_fake_broker_reasoning_and_fields():
    fb = FakeBroker()
    try:
        with Stack(broker_ep=fb.endpoint) as s:
            p = s.port
            status, _, body = chat(p, {"messages": user("think")})
            msg = body["choices"][0]["message"]
            check(status == 200 and msg["reasoning_content"] == "Let me think." and msg["content"] == "Hello world",
                  f"{body}")
            check(body["usage"] == {"prompt_tokens": 11, "completion_tokens": 4, "total_tokens": 15,
                                    "prompt_tokens_details": {"cached_tokens": 3},
                                    "completion_tokens_details": {"reasoning_tokens": 2}}, f"{body['usage']}")
            check(body["model"] == "fake-model" and body["choices"][0]["finish_reason"] == "stop", f"{body}")
            status, _, events, done = stream(p, {"messages": user("think")})
            deltas = [e["choices"][0]["delta"] for e in events]
            check(deltas[0] == {"role": "assistant", "content": ""}, f"{deltas[0]}")
            check([d.get("reasoning_content") for d in deltas[1:3]] == ["Let me ", "think."] and
                  [d.get("content") for d in deltas[3:5]] == ["Hello", " world"] and deltas[5] == {} and done,
                  f"{deltas}")
            # The same on the WebSocket: reasoning and content deltas, then done.
            async def ws_think():
                async with websockets.connect(f"ws://127.0.0.1:{p}/v1/ws") as ws:
                    await ws.send(json.dumps({"type": "chat", "id": "t", "messages": user("think")}))
                    return (await ws_collect(ws, ["t"]))["t"]
            got = asyncio.run(ws_think())
            check([(m["type"], m.get("reasoning"), m.get("content")) for m in got[:4]] ==
                  [("delta", "Let me ", None), ("delta", "think.", None), ("delta", None, "Hello"),
                   ("delta", None, " world")], f"ws deltas {got}")
            check(got[4]["type"] == "done" and got[4]["finish_reason"] == "stop" and got[4]["model"] == "fake-model"
                  and got[4]["usage"]["total_tokens"] == 15 and len(got) == 5
                  and got[4]["usage"]["completion_tokens_details"] == {"reasoning_tokens": 2}, f"ws done {got[4:]}")
            # What the CHAT carried.
            fb.chats.clear()
            chat(p, {"messages": user("plain"), "max_completion_tokens": 7, "max_tokens": 99, "stop": "x", "seed": 5,
                     "top_k": 3, "min_p": 0.25, "repetition_penalty": 1.5, "temperature": 0, "top_p": 0.5,
                     "presence_penalty": 1, "frequency_penalty": -1,
                     "chat_template_kwargs": {"enable_thinking": False}})
            chat(p, {"messages": [{"role": "developer", "content": "sys"}, {"role": "user", "content": "plain"}],
                     "reasoning_effort": "none"})
            chat(p, {"messages": user("plain"), "reasoning_effort": "high"})
            c1, c2, c3 = fb.chats
            want = {"max_tokens": 7, "stop": ["x"], "seed": 5, "top_k": 3, "min_p": 0.25, "repeat_penalty": 1.5,
                    "temperature": 0.0, "top_p": 0.5, "presence_penalty": 1.0, "frequency_penalty": -1.0,
                    "thinking": False}
            check(all(c1.get(k) == v for k, v in want.items()), f"CHAT {c1}")
            check(c2["thinking"] is False and c2["messages"][0]["role"] == "system", f"{c2}")
            check("thinking" not in c3 and c3["max_tokens"] == 32768, f"thinking is on by default: {c3}")
            check(len({c["id"] for c in (c1, c2, c3)}) == 3, "request ids must differ")
    finally:
        fb.close()


def test_fake_broker_errors():
    fb = FakeBroker()
    try:
        with Stack(broker_ep=fb.endpoint) as s:
            p = s.port
            cases = [("overloaded", 429, "rate_limit_exceeded", "1"), ("timeout", 503, "queue_timeout", "1"),
                     ("shutting_down", 503, "shutting_down", "2"), ("worker_lost", 503, "worker_lost", "1"),
                     ("prompt_too_long", 400, "context_length_exceeded", None),
                     ("bad_request", 400, "invalid_request", None), ("internal", 500, "internal_error", None),
                     ("unknown_model", 404, "model_not_found", None), ("brand_new_code", 502, "upstream_error", None)]
            for code, st, want, retry in cases:
                for streamed in (False, True):
                    status, h, body = chat(p, {"messages": user(f"code:{code}"), "stream": streamed,
                                               "model": "asked-model"})
                    check_error(status, body, st, want)
                    check(h.get("retry-after") == retry, f"{code}: Retry-After {h.get('retry-after')}")
            # unknown_model for a model the broker's STATS list, or for none
            # named: its workers are registering (a restarted broker), a 503
            # to retry; the STATS asked then, not cached ones, decide.
            for named in ({"model": "fake-model"}, {}):
                status, h, body = chat(p, {"messages": user("code:unknown_model"), **named})
                check_error(status, body, 503, "no_workers", words=["registering", "retry"])
                check(h.get("retry-after") == "1", f"{named}: Retry-After {h.get('retry-after')}")
            # No worker serves anything: unknown_model is a 503.
            fb.stats = {**fb.stats, "workers": [], "queues": []}
            time.sleep(0.6)
            status, h, body = chat(p, {"messages": user("code:unknown_model")})
            check_error(status, body, 503, "no_workers", words=["retry"])
            # An error after the first token: an SSE error event ends the stream.
            status, _, data = request(p, "POST", "/v1/chat/completions",
                                      {"messages": user("late_error"), "stream": True})
            events, done = sse_events(data)
            check(status == 200 and not done and events[-1]["error"]["code"] == "worker_lost" and
                  events[1]["choices"][0]["delta"]["content"] == "Hel", f"{events}")
            # A gap in seq: the request ends here (internal), and is cancelled there.
            status, _, data = request(p, "POST", "/v1/chat/completions", {"messages": user("gap"), "stream": True})
            events, _ = sse_events(data)
            check(events[-1]["error"]["code"] == "bad_gateway" and "seq" in events[-1]["error"]["message"],
                  f"{events[-1]}")
            wait_for(lambda: len(fb.cancels) == 1, f"CANCELs after a seq gap: {fb.cancels}")
            # The broker's HEARTBEATs are answered while the request is open.
            before = fb.heartbeats
            status, _, body = chat(p, {"messages": user("heartbeats")})
            check(status == 200 and fb.heartbeats - before >= 4, f"{fb.heartbeats - before} heartbeats answered")
            # A broker that goes silent: 503 after liveness x interval, and a CANCEL.
            t0 = time.time()
            status, h, body = chat(p, {"messages": user("silent")})
            took = time.time() - t0
            check_error(status, body, 503, "broker_unavailable")
            check(3 * HB_MS / 1000 * 0.9 < took < 3 * HB_MS / 1000 + 1.0, f"broker_lost after {took:.2f} s")
            wait_for(lambda: len(fb.cancels) == 2, f"no CANCEL after broker_lost: {fb.cancels}")
    finally:
        fb.close()


# ---- tests: WebSocket ----

async def ws_collect(ws, ids, cancel=None):
    """Messages per id until each has its done/error."""
    got = {i: [] for i in ids}
    open_ = set(ids)
    while open_:
        m = json.loads(await asyncio.wait_for(ws.recv(), 30))
        check(m.get("id") in got, f"a message for no chat: {m}")
        got[m["id"]].append(m)
        if cancel and m["id"] == cancel and len(got[cancel]) == 3:
            await ws.send(json.dumps({"type": "cancel", "id": cancel}))
        if m["type"] in ("done", "error"):
            open_.discard(m["id"])
    return got


def test_websocket():
    prompts = {"a": ("Say hello", 3), "b": ("Count to three", 4)}
    want = {k: generate(pr, seed, 8)["content"] for k, (pr, seed) in prompts.items()}

    async def session(port):
        async with websockets.connect(f"ws://127.0.0.1:{port}/v1/ws") as ws:
            for k, (pr, seed) in prompts.items():
                await ws.send(json.dumps({"type": "chat", "id": k, "messages": user(pr), "seed": seed,
                                          "max_tokens": 8}))
            got = await ws_collect(ws, list(prompts))
            for k in prompts:
                text = "".join(m.get("content", "") for m in got[k] if m["type"] == "delta")
                done = got[k][-1]
                check(done["type"] == "done" and done["finish_reason"] == "length" and
                      done["usage"]["completion_tokens"] == 8 and "ttft_ms" in done["timings"], f"{done}")
                check(text == want[k], f"ws chat {k}: {text!r} != {want[k]!r}")
            await ws.send(json.dumps({"type": "chat", "id": "long", "messages": user("Go on"), "max_tokens": 30000}))
            got = await ws_collect(ws, ["long"], cancel="long")
            check(got["long"][-1]["type"] == "done" and got["long"][-1]["finish_reason"] == "cancelled",
                  f"cancel: {got['long'][-1]}")
            await ws.send("not json")
            m = json.loads(await ws.recv())
            check(m["type"] == "error" and m["id"] is None and m["error"]["code"] == "invalid_json", f"{m}")
            await ws.send(json.dumps({"type": "chat", "id": "bad", "messages": user("x"), "n": 2}))
            m = json.loads(await ws.recv())
            check(m["type"] == "error" and m["id"] == "bad" and m["status"] == 400 and m["error"]["param"] == "n",
                  f"{m}")
            pong = await ws.ping()
            await asyncio.wait_for(pong, 5)
            await ws.send(b"\x00binary")
            try:
                await asyncio.wait_for(ws.recv(), 5)
                raise AssertionError("a binary message was accepted")
            except websockets.ConnectionClosed as e:
                check(e.rcvd.code == 1003, f"binary: close {e.rcvd}")

    async def vanish(port):
        ws = await websockets.connect(f"ws://127.0.0.1:{port}/v1/ws")
        await ws.send(json.dumps({"type": "chat", "id": "x", "messages": user("Go on"), "max_tokens": 30000}))
        for _ in range(3):
            await ws.recv()
        ws.transport.abort()  # no close frame: the TCP connection just ends

    with Stack() as s:
        asyncio.run(session(s.port))
        asyncio.run(vanish(s.port))
        for _ in range(100):
            if s.broker_stats()["workers"][0]["in_flight"] == 0:
                break
            time.sleep(0.02)
        check(s.broker_stats()["workers"][0]["in_flight"] == 0, "a vanished WebSocket's chat still runs")
        # Frames no client library sends: unmasked (1002), invalid UTF-8 text (1007).
        for frame, code in ((b"\x81\x02hi", 1002), (b"\x81\x82abcd" + bytes([0xff ^ 0x61, 0xfe ^ 0x62]), 1007)):
            key = base64.b64encode(os.urandom(16))
            out = raw(s.port, b"GET /v1/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                              b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: " + key + b"\r\n\r\n" + frame)
            check(out.startswith(b"HTTP/1.1 101"), f"handshake: {out[:80]!r}")
            rest = out[out.index(b"\r\n\r\n") + 4:]
            check(rest[:1] == b"\x88" and struct.unpack(">H", rest[2:4])[0] == code, f"close {rest[:40]!r}, want {code}")
        status, _, _ = get(s.port, "/v1/ws")
        check(status == 426, f"a plain GET of /v1/ws: {status}")
        out = raw(s.port, b"GET /v1/ws HTTP/1.1\r\nHost: a.example\r\nOrigin: http://evil.example\r\n"
                          b"Upgrade: websocket\r\nConnection: Upgrade, close\r\nSec-WebSocket-Version: 13\r\n"
                          b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
        check(out.startswith(b"HTTP/1.1 403"), f"a foreign origin: {out[:60]!r}")


if __name__ == "__main__":
    sys.exit(run_tests("gateway", globals()))
