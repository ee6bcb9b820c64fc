#!/usr/bin/env python3
"""fake_server.py - a stand-in for the smolmq gateway, for working on the web
chat without the broker and workers.

    python3 gateway/web/dev/fake_server.py OUT_DIR [--port 8090] [--model smolmq-tiny]
                                           [--api-key KEY] [--delay 0.02]

Serves OUT_DIR (the output of build.sh) with the gateway's security headers,
GET /v1/models, and a streaming POST /v1/chat/completions in OpenAI's SSE
format: a role chunk, delta.reasoning_content while "thinking", delta.content
for the answer, finish_reason, a usage chunk (stream_options.include_usage),
then data: [DONE]. Words in the last user message pick a behaviour:

    429      -> 429 with Retry-After: 7     503    -> 503 (no worker)
    500      -> 500                          xss    -> an answer full of HTML/script
    slow     -> a long, slow reply (to Stop) break  -> the stream stops mid-answer
    midError -> an error event mid-stream    long   -> a long markdown answer

Dev endpoints: GET /dev/last-request (the last chat body and its headers),
GET /dev/stats (streams started, finished, cut by the client),
POST /dev/config {"api_key": "..." | null, "delay": 0.01}.
"""
import argparse
import json
import os
import re
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

CSP = ("default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
       "connect-src 'self'; frame-ancestors 'none'")
TYPES = {
    ".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml", ".png": "image/png",
    ".ico": "image/x-icon", ".json": "application/json", ".txt": "text/plain; charset=utf-8",
    ".woff2": "font/woff2", ".map": "application/json",
}

REASONING = (
    "The user is greeting me and asking a question. Let me think about what would be most "
    "useful here. I should give a short, friendly answer, show a small code example since "
    "they might be a programmer, and keep the formatting clean: a heading, a list, a code "
    "block and a small table. Let me also mention `inline code` once."
)

ANSWER = """## Merging two sorted lists

Here is a simple approach that walks both lists **once**, so it runs in *O(n + m)* time:

1. Keep an index into each list.
2. Append the smaller head to the result and advance that index.
3. When one list runs out, append the rest of the other.

```python
def merge(a, b):
    \"\"\"Merge two sorted lists into one sorted list.\"\"\"
    i = j = 0
    out = []
    while i < len(a) and j < len(b):
        if a[i] <= b[j]:
            out.append(a[i]); i += 1
        else:
            out.append(b[j]); j += 1
    return out + a[i:] + b[j:]  # one of these is empty
```

| Input a | Input b | Result |
| --- | --- | --- |
| `[1, 4]` | `[2, 3]` | `[1, 2, 3, 4]` |
| `[]` | `[5]` | `[5]` |

> Python's standard library already has `heapq.merge`, which does this lazily.
"""

XSS = """Here is some HTML the model should never be able to run:

<img src=x onerror=alert(1)>

And inline: <script>alert(2)</script> and <b onclick="alert(3)">bold?</b>

A [bad link](javascript:alert(4)) and a [good link](https://example.com).

![tracking pixel](https://example.com/pixel.png)

<iframe src="javascript:alert(5)"></iframe>
"""

LONG = ANSWER + "\n" + "\n\n".join(
    f"### Part {k}\n\nThis paragraph is here to make the answer long enough to scroll. "
    "It talks calmly about queues, workers and the patience of brokers. " * 3
    for k in range(1, 7))


def pieces(text):
    """Splits text into token-like pieces (a word with its leading space)."""
    return re.findall(r"\s*\S+|\s+", text)


class State:
    def __init__(self, args):
        self.models = args.model or ["smolmq-tiny"]
        self.api_key = args.api_key
        self.delay = args.delay
        self.lock = threading.Lock()
        self.last_request = None
        self.stats = {"started": 0, "finished": 0, "cancelled": 0}


class Handler(BaseHTTPRequestHandler):
    server_version = "smolmq-fake/1"
    st = None  # State
    root = "."

    def log_message(self, fmt, *a):
        if os.environ.get("FAKE_VERBOSE"):
            sys.stderr.write("fake: " + (fmt % a) + "\n")

    def headers_common(self):
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Content-Security-Policy", CSP)
        self.send_header("Referrer-Policy", "no-referrer")

    def send_json(self, code, obj, extra=None):
        body = json.dumps(obj).encode()
        self.send_response(code)
        self.headers_common()
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def error(self, code, message, etype, extra=None, ecode=None):
        self.send_json(code, {"error": {"message": message, "type": etype, "param": None, "code": ecode}}, extra)

    def authorized(self):
        if not self.st.api_key:
            return True
        if self.headers.get("Authorization", "") == "Bearer " + self.st.api_key:
            return True
        self.error(401, "Missing or invalid API key: send Authorization: Bearer KEY.",
                   "invalid_request_error", ecode="invalid_api_key")
        return False

    def do_GET(self):
        path = self.path.split("?", 1)[0]
        if path == "/v1/models":
            if not self.authorized():
                return
            now = int(time.time())
            self.send_json(200, {"object": "list", "data": [
                {"id": m, "object": "model", "created": now, "owned_by": "smolmq"} for m in self.st.models]})
        elif path == "/dev/last-request":
            self.send_json(200, self.st.last_request or {})
        elif path == "/dev/stats":
            with self.st.lock:
                self.send_json(200, dict(self.st.stats))
        elif path.startswith("/v1/"):
            self.error(404, f"Unknown endpoint {path}.", "invalid_request_error")
        else:
            self.static(path)

    def static(self, path):
        if path == "/":
            path = "/index.html"
        full = os.path.realpath(os.path.join(self.root, path.lstrip("/")))
        if not full.startswith(os.path.realpath(self.root) + os.sep) or not os.path.isfile(full):
            self.send_response(404)
            self.headers_common()
            self.send_header("Content-Type", "text/plain")
            self.end_headers()
            self.wfile.write(b"not found\n")
            return
        data = open(full, "rb").read()
        self.send_response(200)
        self.headers_common()
        self.send_header("Content-Type", TYPES.get(os.path.splitext(full)[1], "application/octet-stream"))
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        path = self.path.split("?", 1)[0]
        n = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(n) if n else b""
        if path == "/dev/config":
            cfg = json.loads(raw or b"{}")
            if "api_key" in cfg:
                self.st.api_key = cfg["api_key"]
            if "delay" in cfg:
                self.st.delay = float(cfg["delay"])
            self.send_json(200, {"ok": True})
            return
        if path != "/v1/chat/completions":
            self.error(404, f"Unknown endpoint {path}.", "invalid_request_error")
            return
        if not self.authorized():
            return
        try:
            body = json.loads(raw)
        except ValueError:
            self.error(400, "The request body is not valid JSON.", "invalid_request_error")
            return
        self.st.last_request = {"body": body, "authorization": self.headers.get("Authorization")}
        model = body.get("model") or self.st.models[0]
        if model not in self.st.models:
            self.error(404, f"The model '{model}' does not exist.", "invalid_request_error", ecode="model_not_found")
            return
        msgs = body.get("messages") or []
        last = next((m.get("content", "") for m in reversed(msgs) if m.get("role") == "user"), "")
        if "429" in last:
            self.error(429, "The server is overloaded: too many requests in the queue.", "rate_limit_error",
                       {"Retry-After": "7"})
            return
        if "503" in last:
            self.error(503, f"No worker serves the model '{model}' right now.", "service_unavailable")
            return
        if "500" in last:
            self.error(500, "Internal error: the fake server was asked to fail.", "server_error")
            return
        thinking = (body.get("chat_template_kwargs") or {}).get("enable_thinking", True) is not False
        if body.get("reasoning_effort") == "none":
            thinking = False
        if "xss" in last.lower():
            reasoning, answer = "The user wants to see HTML. <img src=x onerror=alert(6)>", XSS
        elif "long" in last.lower() or "slow" in last.lower():
            reasoning, answer = REASONING * 3, LONG
        else:
            reasoning, answer = REASONING, ANSWER
        if not thinking:
            reasoning = ""
        delay = self.st.delay * (6 if "slow" in last.lower() else 1)
        self.stream(body, model, reasoning, answer, delay, last)

    def stream(self, body, model, reasoning, answer, delay, last):
        with self.st.lock:
            self.st.stats["started"] += 1
        self.send_response(200)
        self.headers_common()
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        cid = "chatcmpl-fake%d" % int(time.time() * 1000)
        created = int(time.time())
        max_tokens = body.get("max_tokens") or body.get("max_completion_tokens")

        def chunk(delta, finish=None):
            return {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                    "system_fingerprint": None,
                    "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}

        def send(obj):
            self.wfile.write(b"data: " + json.dumps(obj).encode() + b"\n\n")
            self.wfile.flush()

        count = 0
        finish = "stop"
        try:
            time.sleep(delay * 8)  # "prefill"
            send(chunk({"role": "assistant", "content": ""}))
            self.wfile.write(b": keep-alive comment\n\n")
            for p in pieces(reasoning):
                if max_tokens and count >= max_tokens:
                    finish = "length"
                    break
                send(chunk({"reasoning_content": p}))
                count += 1
                time.sleep(delay)
            for k, p in enumerate(pieces(answer) if finish == "stop" else []):
                if max_tokens and count >= max_tokens:
                    finish = "length"
                    break
                if "break" in last and k == 20:
                    return  # the connection closes with no finish and no [DONE]
                if "midError" in last and k == 20:
                    send({"error": {"message": "The worker serving this request was lost.",
                                    "type": "server_error", "code": "worker_lost"}})
                    return
                send(chunk({"content": p}))
                count += 1
                time.sleep(delay)
            send(chunk({}, finish))
            if (body.get("stream_options") or {}).get("include_usage"):
                prompt = sum(len(pieces(m.get("content", ""))) + 4 for m in body.get("messages", []))
                send({"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                      "choices": [], "usage": {"prompt_tokens": prompt, "completion_tokens": count,
                                               "total_tokens": prompt + count,
                                               "completion_tokens_details": {
                                                   "reasoning_tokens": len(pieces(reasoning))}}})
            self.wfile.write(b"data: [DONE]\n\n")
            self.wfile.flush()
            with self.st.lock:
                self.st.stats["finished"] += 1
        except (BrokenPipeError, ConnectionResetError):
            with self.st.lock:
                self.st.stats["cancelled"] += 1


def main():
    ap = argparse.ArgumentParser(description="A fake smolmq gateway for the web chat.")
    ap.add_argument("root", help="the folder build.sh wrote")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8090, help="0 picks a free port (printed)")
    ap.add_argument("--model", action="append", help="a model id to list (repeatable)")
    ap.add_argument("--api-key", help="require Authorization: Bearer KEY on /v1/*")
    ap.add_argument("--delay", type=float, default=0.02, help="seconds between tokens")
    args = ap.parse_args()
    Handler.st = State(args)
    Handler.root = os.path.abspath(args.root)
    srv = ThreadingHTTPServer((args.host, args.port), Handler)
    srv.daemon_threads = True
    print(f"fake gateway: http://{args.host}:{srv.server_address[1]}/", flush=True)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
