#!/usr/bin/env python3
"""gateway_clients_test.py - clients nobody here wrote, against the gateway.

Starts a broker, a worker and smolmq-gateway on random free ports, then:
the official OpenAI Node SDK (tests/clients/openai, npm `openai`, pinned),
curl reading the SSE stream, and `make run`'s launcher (deploy/run.sh). Most
tests put tests/fake_worker.py behind the broker: a scripted worker whose
answers think first and contain markdown and an HTML injection attempt,
which the test model's random weights never do. Prints PASS/FAIL lines.
"""
import asyncio
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

from nettest import check, free_port, npm_ci, run_tests

BUILD = os.environ.get("SMQ_BUILD", "build")
BIN = os.path.join(BUILD, "bin")
PY = sys.executable
HERE = os.path.dirname(os.path.abspath(__file__))
TMP = tempfile.mkdtemp(prefix="smolmq-gwclients-")




def get(url, timeout=5):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.status, r.read()


class Stack:
    """broker + fake worker (or a real one) + gateway; killed at the end."""

    def __init__(self, real_worker=False, broker_args=(), worker_args=()):
        self.cport, self.wport, self.hport = free_port(), free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.hport}"
        self.procs, self.logs = [], []
        self.real_worker = real_worker
        self.broker_args, self.worker_args = list(broker_args), list(worker_args)

    def spawn(self, name, args):
        log = open(os.path.join(TMP, f"{name}-{len(self.logs)}.log"), "w+")
        self.logs.append((name, log))
        p = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=log)
        self.procs.append(p)
        return p

    def __enter__(self):
        self.broker = self.spawn("broker", [os.path.join(BIN, "smolmq-broker"), "--clients",
                                            f"tcp://127.0.0.1:{self.cport}", "--workers",
                                            f"tcp://127.0.0.1:{self.wport}", *self.broker_args])
        if self.real_worker:
            self.spawn("worker", [os.path.join(BIN, "smolmq-worker"), "--model",
                                  os.path.join("tests", "data", "models", "smollm3-tiny-q4_k_m.gguf"),
                                  "--broker", f"tcp://127.0.0.1:{self.wport}", *self.worker_args])
        else:
            self.spawn("fake-worker", [PY, os.path.join(HERE, "fake_worker.py"), "--broker",
                                       f"tcp://127.0.0.1:{self.wport}", "--token-ms", "10"])
        self.gateway = self.spawn("gateway", [os.path.join(BIN, "smolmq-gateway"), "--listen",
                                              f"127.0.0.1:{self.hport}", "--broker", f"tcp://127.0.0.1:{self.cport}"])
        end = time.time() + 20
        while time.time() < end:
            try:
                if get(self.url + "/readyz", timeout=1)[0] == 200:
                    return self
            except Exception:
                pass
            time.sleep(0.1)
        raise AssertionError(f"the gateway was not ready within 20 s\n{self.tail()}")

    def tail(self):
        out = []
        for name, f in self.logs:
            f.flush()
            f.seek(0)
            out.append(f"--- {name}:\n" + "\n".join(f.read().splitlines()[-10:]))
        return "\n".join(out)

    def __exit__(self, *exc):
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            p.wait()
        for _, f in self.logs:
            f.close()
        return False



def test_openai_node_sdk():
    folder = os.path.join(HERE, "clients", "openai")
    npm_ci(folder)
    with Stack() as s:
        p = subprocess.run(["node", os.path.join(folder, "openai_sdk_test.mjs")], capture_output=True, text=True,
                           timeout=120, env={**os.environ, "SMQ_GATEWAY": s.url, "SMQ_MODEL": "smolmq-fake"})
        for line in p.stdout.splitlines():
            print("    " + line, flush=True)
        check(p.returncode == 0 and "FAIL" not in p.stdout,
              f"the OpenAI SDK test failed: {p.stdout.strip()[-800:]} {p.stderr.strip()[-800:]}\n{s.tail()}")


def sse_events(raw):
    """The data: payloads of an SSE stream, in order."""
    out = []
    for block in raw.replace("\r\n", "\n").split("\n\n"):
        data = [ln[5:].lstrip() for ln in block.split("\n") if ln.startswith("data:")]
        if data:
            out.append("\n".join(data))
    return out


def test_curl_sse():
    with Stack() as s:
        body = json.dumps({"model": "smolmq-fake", "messages": [{"role": "user", "content": "hi"}], "stream": True,
                           "stream_options": {"include_usage": True}})
        p = subprocess.run(["curl", "-sS", "-N", "-D", "-", "-H", "Content-Type: application/json", "-d", body,
                            s.url + "/v1/chat/completions"], capture_output=True, text=True, timeout=60)
        check(p.returncode == 0, f"curl: {p.stderr}")
        head, _, stream = p.stdout.replace("\r\n", "\n").partition("\n\n")
        check(head.startswith("HTTP/1.1 200"), f"status: {head.splitlines()[0]}")
        check("content-type: text/event-stream" in head.lower(), f"headers: {head}")
        events = sse_events(stream)
        check(events[-1] == "[DONE]", f"last event {events[-1]!r}")
        chunks = [json.loads(e) for e in events[:-1]]
        check(chunks[0]["choices"][0]["delta"].get("role") == "assistant", f"first chunk {chunks[0]}")
        reasoning = "".join(c["choices"][0]["delta"].get("reasoning_content") or "" for c in chunks if c["choices"])
        content = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
        check(reasoning.startswith("The user asks") and content.startswith("Here is **the answer**"),
              f"{reasoning!r} {content!r}")
        finish = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"] and c["choices"][0].get("finish_reason")]
        check(finish == ["stop"], f"finish reasons {finish}")
        usage = [c for c in chunks if not c["choices"]]
        check(len(usage) == 1 and usage[0]["usage"]["completion_tokens"] == 40, f"usage chunks {usage}")


def broker_in_flight(stack):
    sys.path.insert(0, os.path.join(HERE, "..", "proto", "clients", "python"))
    from smolmq_client import Client
    c = Client(f"tcp://127.0.0.1:{stack.cport}")
    try:
        return sum(w["in_flight"] for w in c.stats(timeout=2)["workers"])
    finally:
        c.close()


def test_browser_chat():
    """The web chat in headless Chromium (Debian's chromium, playwright-core
    from the web chat's own pinned dev dependencies)."""
    npm_ci(os.path.join("gateway", "web"))
    chromium = os.environ.get("CHROMIUM", "/usr/bin/chromium")
    check(os.path.exists(chromium), f"{chromium} is missing (Debian package chromium; make deps installs it)")
    with Stack() as s:
        p = subprocess.Popen(["node", os.path.join(HERE, "browser", "chat_test.mjs")], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env={**os.environ, "SMQ_GATEWAY": s.url, "SHOTS": os.path.join(BUILD, "browser")})
        try:
            lines = []
            for line in p.stdout:
                line = line.rstrip("\n")
                if line == "STOPPED":
                    n = None
                    for _ in range(20):
                        n = broker_in_flight(s)
                        if n == 0:
                            break
                        time.sleep(0.1)
                    p.stdin.write("ok\n" if n == 0 else f"in_flight {n}\n")
                    p.stdin.flush()
                    continue
                lines.append(line)
                print("    " + line, flush=True)
            rc = p.wait(timeout=120)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
        check(rc == 0 and not any(ln.startswith("FAIL") for ln in lines),
              f"the browser test failed: {p.stderr.read()[-1500:]}\n{s.tail()}")
        print(f"    screenshots in {os.path.join(BUILD, 'browser')}", flush=True)


# ---- load ----

async def stream_once(port, body):
    """One streaming POST on its own connection: the SSE data payloads."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    data = json.dumps(body).encode()
    writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Connection: close\r\nContent-Length: %d\r\n\r\n" % len(data) + data)
    await writer.drain()
    raw = await reader.read()
    writer.close()
    head, _, rest = raw.partition(b"\r\n\r\n")
    check(head.startswith(b"HTTP/1.1 200"), f"status {head[:60]!r}: {rest[:300]!r}")
    body = b""
    if b"chunked" in head.lower():
        while rest:
            size_line, _, rest = rest.partition(b"\r\n")
            n = int(size_line.split(b";")[0], 16)
            if n == 0:
                break
            body, rest = body + rest[:n], rest[n + 2:]
    else:
        body = rest
    return sse_events(body.decode())


def stream_summary(events, tag):
    check(events and events[-1] == "[DONE]", f"{tag}: no [DONE] at the end: {events[-3:]}")
    chunks = [json.loads(e) for e in events[:-1]]
    content = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    finish = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"] and c["choices"][0].get("finish_reason")]
    usage = [c["usage"] for c in chunks if not c["choices"]]
    check(len(finish) == 1 and len(usage) == 1, f"{tag}: finish {finish}, usage chunks {usage}")
    return content, finish[0], usage[0]


def test_load_1000_concurrent_streams():
    """1,000 streaming requests at once through the gateway, on the test
    model: every one completes, and each has exactly the text the same
    request gets alone (no event lost, duplicated or reordered)."""
    # Sanitized runs (SMQ_TEST_QUICK=1) are several times slower: 200 there.
    n, max_tokens = (200 if os.environ.get("SMQ_TEST_QUICK") == "1" else 1000), 4
    msgs = lambda i: [{"role": "system", "content": "/system_override"},  # noqa: E731
                      {"role": "user", "content": f"Question {i % 10}"}]
    body = lambda i: {"messages": msgs(i), "max_tokens": max_tokens, "seed": i % 10, "stream": True,  # noqa: E731
                      "stream_options": {"include_usage": True}}
    raise_fd_limit(n + 200)
    with Stack(real_worker=True, broker_args=["--queue-max", "2000", "--queue-timeout-ms", "600000"],
               worker_args=["--threads", "2", "--capacity", "64"]) as s:
        alone = {}
        for i in range(10):
            alone[i] = stream_summary(asyncio.run(stream_once(s.hport, body(i))), f"alone {i}")

        async def all_of_them():
            return await asyncio.gather(*(stream_once(s.hport, body(i)) for i in range(n)), return_exceptions=True)

        t0 = time.time()
        results = asyncio.run(all_of_them())
        took = time.time() - t0
        errors = [r for r in results if isinstance(r, Exception)]
        if errors:
            raise AssertionError(f"{len(errors)} of {n} failed, e.g. {errors[0]!r}\n{s.tail()}")
        for i, events in enumerate(results):
            content, finish, usage = stream_summary(events, f"request {i}")
            check((content, finish) == alone[i % 10][:2] and usage["completion_tokens"] == max_tokens,
                  f"request {i}: {content!r} {finish} {usage} differs from alone: {alone[i % 10]}")
        print(f"    {n} concurrent streams: all complete and equal to their lone runs, in {took:.1f} s", flush=True)


def raise_fd_limit(need):
    """The soft limit on open files up to the hard one (the gateway inherits
    it); fails when even that is below need."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < need:
        raise AssertionError(f"this machine allows {hard} open files per process; the test needs {need}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def rss_kb(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def test_10000_idle_keepalive_connections():
    n = 10000
    raise_fd_limit(n + 200)
    with Stack() as s:
        before = rss_kb(s.gateway.pid)

        async def hold():
            conns = []
            for k in range(0, n, 500):  # in batches: the listen backlog is finite
                conns += await asyncio.gather(*(asyncio.open_connection("127.0.0.1", s.hport) for _ in range(500)))
            async def healthz(r, w):
                w.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                head = await r.readuntil(b"\r\n\r\n")
                length = [int(ln.split(b":")[1]) for ln in head.split(b"\r\n") if ln.lower().startswith(b"content-length:")]
                await r.readexactly(length[0] if length else 0)
                return head

            answers = await asyncio.gather(*(healthz(r, w) for r, w in conns))
            ok = sum(a.startswith(b"HTTP/1.1 200") for a in answers)
            await asyncio.sleep(1.0)
            held = rss_kb(s.gateway.pid)
            # Still alive and serving on the same connections?
            again = await asyncio.gather(*(healthz(r, w) for r, w in conns[:100]))
            for _, w in conns:
                w.close()
            return ok, held, sum(a.startswith(b"HTTP/1.1 200") for a in again)

        ok, held, again = asyncio.run(hold())
        check(ok == n and again == 100, f"{ok} of {n} answered, then {again} of 100 kept alive\n{s.tail()}")
        per_conn = (held - before) * 1024 / n
        print(f"    gateway RSS {before / 1024:.1f} MB idle, {held / 1024:.1f} MB holding {n} keep-alive "
              f"connections ({per_conn / 1024:.1f} KB each)", flush=True)
        check(per_conn < 32 * 1024, f"{per_conn / 1024:.1f} KB per idle connection")
        check(s.gateway.poll() is None, "the gateway died")


def test_make_run_launcher():
    """deploy/run.sh (what `make run` starts): the URL, a working chat, and
    Ctrl-C stopping every process."""
    hport, cport, wport = free_port(), free_port(), free_port()
    env = {**os.environ, "HTTP": f"127.0.0.1:{hport}", "BROKER_CLIENTS": f"tcp://127.0.0.1:{cport}",
           "BROKER_WORKERS": f"tcp://127.0.0.1:{wport}", "LOGS": os.path.join(TMP, "run-logs"), "WORKERS": "2",
           "MODEL": os.path.join("tests", "data", "models", "smollm3-tiny-q4_k_m.gguf")}
    p = subprocess.Popen(["bash", "deploy/run.sh", BUILD], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env=env, start_new_session=True)
    try:
        line = p.stdout.readline().strip()
        check(line == f"http://127.0.0.1:{hport}/", f"run.sh printed {line!r}")
        req = urllib.request.Request(line + "v1/chat/completions", data=json.dumps(
            {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}).encode(),
            headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as r:
            answer = json.loads(r.read())
        check(answer["choices"][0]["finish_reason"] == "length", f"{answer}")
        status, body = get(line + "v1/models")
        check(json.loads(body)["data"][0]["id"] == "smollm3-tiny-q4_k_m", f"models {body[:200]!r}")
        children = subprocess.run(["pgrep", "-s", str(p.pid)], capture_output=True, text=True).stdout.split()
        check(len(children) >= 5, f"processes of the cluster: {children}")  # bash, broker, 2 workers, gateway
        p.send_signal(signal.SIGINT)
        rc = p.wait(timeout=30)
        check(rc == 0, f"run.sh exited {rc}: {p.stderr.read()[-500:]}")
        left = subprocess.run(["pgrep", "-s", str(p.pid)], capture_output=True, text=True).stdout.split()
        check(not left, f"processes left after Ctrl-C: {left}")
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()


if __name__ == "__main__":
    sys.exit(run_tests("gateway_clients", globals()))
