#!/usr/bin/python3
"""smolmq_chat - ask the smolmq broker one question and stream the answer.

    smolmq_chat.py [--broker E] [--model M] [--no-think] [--max-tokens N]
                   [--temperature T] [--seed S] [--system TEXT] "question"

The reasoning streams to stderr (dim on a terminal), the answer to stdout,
then one line on stderr: finish, completion tokens, tokens/s. Ctrl-C cancels
the request and waits for its terminal frame (a second Ctrl-C quits at
once). Exit status: 0 when the request finished, 1 on an error (its code and
message on stderr), 130 when cancelled with Ctrl-C, 2 for bad arguments.
"""

import argparse
import os
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from smolmq_client import Client, RequestError, load_certificate  # noqa: E402


def _key(value):
    """A Z85 key given as itself or as a certificate file."""
    if value is None or len(value) == 40 and not os.path.exists(value):
        return value, None
    cert = load_certificate(value)
    return cert["public_key"], cert["secret_key"]


def main(argv=None):
    ap = argparse.ArgumentParser(description="Ask the smolmq broker one question; stream the answer.")
    ap.add_argument("question")
    ap.add_argument("--broker", help="broker endpoint (default $SMQ_BROKER or tcp://127.0.0.1:5555)")
    ap.add_argument("--model", help="model name (default: the one the broker serves)")
    ap.add_argument("--no-think", action="store_true", help="answer without the <think> phase")
    ap.add_argument("--max-tokens", type=int, metavar="N")
    ap.add_argument("--temperature", type=float, metavar="T")
    ap.add_argument("--seed", type=int, metavar="S")
    ap.add_argument("--system", metavar="TEXT", help="a system message before the question")
    ap.add_argument("--broker-key", metavar="KEY|FILE",
                    help="CURVE: the broker's public key (Z85, or its certificate file)")
    ap.add_argument("--key", metavar="FILE",
                    help="CURVE: this client's certificate (with its secret key; default a fresh pair)")
    args = ap.parse_args(argv)

    curve = None
    if args.broker_key:
        curve = {"server_key": _key(args.broker_key)[0]}
        if args.key:
            pub, sec = _key(args.key)
            if sec is None:
                ap.error("--key %s: no secret-key in it" % args.key)
            curve.update(public_key=pub, secret_key=sec)

    messages = []
    if args.system is not None:
        messages.append({"role": "system", "content": args.system})
    messages.append({"role": "user", "content": args.question})
    params = dict(model=args.model, max_tokens=args.max_tokens, temperature=args.temperature,
                  seed=args.seed, thinking=False if args.no_think else None)

    tty = sys.stderr.isatty() and not os.environ.get("NO_COLOR")
    dim, undim = ("\x1b[2m", "\x1b[0m") if tty else ("", "")

    interrupted = []

    def on_sigint(signum, frame):
        if interrupted:  # the second Ctrl-C: give up at once
            sys.stderr.write("\n")
            os._exit(130)
        interrupted.append(time.monotonic())

    client = Client(args.broker, curve=curve)
    try:
        try:
            id = client.submit(messages, **params)
        except (RequestError, TypeError) as e:
            print("smolmq_chat: %s" % e, file=sys.stderr)
            return 2
        old = signal.signal(signal.SIGINT, on_sigint)
        t0 = time.monotonic()
        t_first = None
        cancelled = False
        in_reasoning = False
        answered = False
        n_tokens = 0
        try:
            while True:
                if interrupted and not cancelled:
                    cancelled = True
                    client.cancel(id)
                    sys.stderr.write("%s\n[cancelling...]\n" % undim)
                    sys.stderr.flush()
                ev = client.next_event(timeout=0.1)
                if ev is None:
                    continue
                if ev.id != id:  # an ERROR the broker could not tie to our request
                    print("smolmq_chat: broker: %s: %s" % (ev.code, ev.message), file=sys.stderr)
                    continue
                if ev.kind == "token":
                    n_tokens += len(ev.tokens)
                    if t_first is None and ev.tokens:
                        t_first = time.monotonic()
                    if ev.reasoning:
                        if not in_reasoning:
                            sys.stderr.write(dim)
                            in_reasoning = True
                        sys.stderr.write(ev.reasoning)
                        sys.stderr.flush()
                    if ev.content:
                        if in_reasoning:
                            sys.stderr.write(undim + "\n")
                            sys.stderr.flush()
                            in_reasoning = False
                        sys.stdout.write(ev.content)
                        sys.stdout.flush()
                        answered = True
                    continue
                if in_reasoning:
                    sys.stderr.write(undim + "\n")
                    in_reasoning = False
                if answered:
                    sys.stdout.write("\n")
                    sys.stdout.flush()
                if ev.kind == "done":
                    usage = ev.usage or {}
                    timings = ev.timings or {}
                    n = usage.get("completion_tokens", n_tokens)
                    tps = timings.get("decode_tps")
                    if not tps and t_first is not None and n > 1:
                        tps = (n - 1) / max(time.monotonic() - t_first, 1e-9)
                    extra = ""
                    if timings.get("ttft_ms") is not None:
                        extra = ", first token after %.0f ms" % timings["ttft_ms"]
                    sys.stderr.write("%s[%s, %d tokens, %.1f tokens/s%s, %.1f s]%s\n" % (
                        dim, ev.finish, n, tps or 0.0, extra, time.monotonic() - t0, undim))
                    sys.stderr.flush()
                    return 130 if cancelled and ev.finish == "cancelled" else 0
                print("smolmq_chat: error %s: %s" % (ev.code, ev.message), file=sys.stderr)
                return 1
        finally:
            signal.signal(signal.SIGINT, old)
    finally:
        client.close()


if __name__ == "__main__":
    sys.exit(main())
