"""smolmq_client - a Python client for the smolmq chat broker.

It speaks SMQ/1 (proto/PROTOCOL.md): one ZeroMQ DEALER socket to the broker's
client ROUTER, msgpack bodies. Needs only pyzmq and msgpack (Debian:
python3-zmq, python3-msgpack).

    from smolmq_client import Client

    with Client() as client:                      # $SMQ_BROKER or tcp://127.0.0.1:5555
        for ev in client.chat([{"role": "user", "content": "Hi!"}], max_tokens=200):
            if ev.kind == "token":
                print(ev.content, end="", flush=True)
            elif ev.kind == "done":
                print("\\n", ev.finish, ev.usage)
            else:
                print("error", ev.code, ev.message)

        r = client.complete("What is 2+2?", thinking=False)
        print(r.content, r.finish, r.usage)

Several requests can be open at once on one client: submit() them, then call
next_event() to receive their events in arrival order (each carries its
request's id), or iterate each one's chat() stream.

The client is single-threaded: it does its work (receiving, sending
heartbeats, answering the broker's, noticing that the broker went silent)
inside next_event(), chat() iteration, complete() and stats(). While
requests are open, call one of them at least every heartbeat interval (the
broker's, when it is shorter than the client's), or the broker will consider
the client gone and cancel its requests. A Client must not be shared between
threads without a lock (ZeroMQ sockets are not thread-safe).

The module also holds the codec used by the client (and usable on its own):
decode_frames() reads one multipart message strictly (the frame-level checks
of PROTOCOL.md §2 and the body checks of §3-§9), and encode_chat(),
encode_cancel(), encode_heartbeat(), encode_stats() and encode_frames() build
what the client sends.
"""

import collections
import itertools
import logging
import math
import os
import re
import struct
import sys
import time
import uuid

import msgpack
import zmq

__all__ = [
    "Client", "Stream", "Event", "Completion", "Frame", "Ext",
    "ProtocolError", "RequestError", "BrokerError",
    "decode_frames", "decode_body", "validate_body", "encode_frames",
    "encode_chat", "encode_cancel", "encode_heartbeat", "encode_stats",
    "chat_body", "load_certificate",
    "HEADER", "BODY_MAX", "DEFAULT_ENDPOINT", "CHAT_PARAMS",
]

log = logging.getLogger("smolmq_client")
log.addHandler(logging.NullHandler())

HEADER = b"SMQ/1"
BODY_MAX = 8 << 20
DEFAULT_ENDPOINT = "tcp://127.0.0.1:5555"
# While requests are open, a broker HEARTBEAT is answered with one of ours
# unless we sent one this recently: at most one answer per this many seconds
# (PROTOCOL.md §6).
ECHO_GAP_S = 0.05
# The range of an announced heartbeat interval (READY, the broker's HEARTBEAT).
HEARTBEAT_MS_MIN, HEARTBEAT_MS_MAX = 10, 600000

ID_MAX = 64
NAME_MAX = 128
MESSAGES_MAX = 1024
CONTENT_MAX = 1 << 20
STOP_MAX = 8
STOP_LEN_MAX = 256
CAPACITY_MAX = 4096
UINT32_MAX = (1 << 32) - 1
INT32_MAX = (1 << 31) - 1
UINT64_MAX = (1 << 64) - 1
FLT_MAX = 3.4028234663852886e38
DBL_MAX = sys.float_info.max
DEPTH_MAX = 32  # maps and arrays nested at most this deep, the body's map included

COMMANDS = ("CHAT", "CANCEL", "TOKEN", "DONE", "ERROR", "HEARTBEAT", "STATS", "READY", "DISCONNECT")
# Commands that carry the 8-byte job id frame on the worker hop.
JOB_COMMANDS = frozenset(("CHAT", "CANCEL", "TOKEN", "DONE", "ERROR"))
ROLES = ("system", "user", "assistant", "tool")
FINISH = ("eog", "stop_string", "length", "context_full", "cancelled")
BACKENDS = ("cpu", "cuda")

# The optional CHAT parameters, in the order PROTOCOL.md §3 lists them.
CHAT_PARAMS = (
    "model", "max_tokens", "temperature", "top_p", "top_k", "min_p", "repeat_penalty",
    "presence_penalty", "frequency_penalty", "seed", "stop", "thinking", "affinity",
    "queue_timeout_ms",
)


# --------------------------------------------------------------------------
# errors


class ProtocolError(ValueError):
    """A message that breaks SMQ/1.

    code is the PROTOCOL.md §10 code a peer answers with: "bad_frame" (the
    frames cannot be read), "unsupported_version" (another SMQ/ version) or
    "bad_request" (a readable body with a field missing, mistyped or out of
    range; key names the field, e.g. "messages[0].role").
    """

    def __init__(self, code, message, key=None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.key = key


class RequestError(ProtocolError):
    """A request that submit() refuses before sending it (code "bad_request")."""

    def __init__(self, message, key=None):
        super().__init__("bad_request", message, key)


class BrokerError(Exception):
    """An ERROR that ends a request (raised by complete()) or answers stats().

    code is the §10 code (or a local one: "broker_lost", "internal"), message
    the explanation, id the request it ended (None when not tied to one).
    """

    def __init__(self, code, message, id=None):
        super().__init__("%s: %s" % (code, message))
        self.code = code
        self.message = message
        self.id = id


# --------------------------------------------------------------------------
# msgpack bodies


class _Map(dict):
    """A decoded msgpack map. dups: the string keys given more than once;
    bad_keys: what was wrong with keys that are not strings of valid UTF-8
    (those are left out of the dict)."""

    __slots__ = ("dups", "bad_keys")

    def __init__(self):
        super().__init__()
        self.dups = []
        self.bad_keys = []


class _BadStr:
    """A msgpack str whose bytes are not valid UTF-8 (validate_body() names it)."""

    __slots__ = ("data",)

    def __init__(self, data):
        self.data = data

    def __repr__(self):
        return "<invalid UTF-8 %r>" % (self.data,)


class Ext(collections.namedtuple("Ext", "type data")):
    """A msgpack ext value (any type code, -128 to 127)."""


class _Reader:
    """A strict msgpack reader. Python's msgpack module cannot serve here: it
    refuses ext types below 0 other than -1 (valid msgpack, e.g. inside an
    unknown key's value, which must be ignored), replaces or refuses invalid
    UTF-8 where validate_body() must name the key, and keeps only the last
    of a key given twice. Every length and count is checked against the bytes
    left before it is trusted; maps and arrays nest at most DEPTH_MAX deep
    (the body's map included), so recursion is bounded."""

    def __init__(self, data):
        self.b = data
        self.p = 0

    def take(self, n):
        p = self.p
        if n > len(self.b) - p:
            raise ValueError("truncated: %d bytes wanted at byte %d, %d are left" % (n, p, len(self.b) - p))
        self.p = p + n
        return self.b[p:p + n]

    def uint(self, n):
        return int.from_bytes(self.take(n), "big")

    def str(self, n):
        raw = self.take(n)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return _BadStr(raw)

    def container(self, depth, count, per):
        if depth >= DEPTH_MAX:
            raise ValueError("at byte %d: maps and arrays nested deeper than %d" % (self.p, DEPTH_MAX))
        if count * per > len(self.b) - self.p:
            raise ValueError("at byte %d: a count of %d cannot fit in the %d bytes left" % (self.p, count, len(self.b) - self.p))

    def array(self, n, depth):
        self.container(depth, n, 1)
        return [self.value(depth + 1) for _ in range(n)]

    def map(self, n, depth):
        self.container(depth, n, 2)
        m = _Map()
        for i in range(n):
            k = self.value(depth + 1)
            v = self.value(depth + 1)
            if isinstance(k, str):
                if k in m:
                    m.dups.append(k)
                m[k] = v
            else:
                m.bad_keys.append("key %d is not valid UTF-8" % i if isinstance(k, _BadStr)
                                  else "key %d is not a string" % i)
        return m

    def value(self, depth):
        t = self.take(1)[0]
        if t <= 0x7F:
            return t
        if t >= 0xE0:
            return t - 0x100
        if t <= 0x8F:
            return self.map(t & 0x0F, depth)
        if t <= 0x9F:
            return self.array(t & 0x0F, depth)
        if t <= 0xBF:
            return self.str(t & 0x1F)
        if t == 0xC0:
            return None
        if t == 0xC2:
            return False
        if t == 0xC3:
            return True
        if 0xC4 <= t <= 0xC6:  # bin 8/16/32
            return self.take(self.uint(1 << (t - 0xC4)))
        if 0xC7 <= t <= 0xC9:  # ext 8/16/32
            n = self.uint(1 << (t - 0xC7))
            code = struct.unpack(">b", self.take(1))[0]
            return Ext(code, self.take(n))
        if t == 0xCA:
            return struct.unpack(">f", self.take(4))[0]
        if t == 0xCB:
            return struct.unpack(">d", self.take(8))[0]
        if 0xCC <= t <= 0xCF:  # uint 8/16/32/64
            return self.uint(1 << (t - 0xCC))
        if 0xD0 <= t <= 0xD3:  # int 8/16/32/64
            n = 1 << (t - 0xD0)
            return int.from_bytes(self.take(n), "big", signed=True)
        if 0xD4 <= t <= 0xD8:  # fixext 1/2/4/8/16
            code = struct.unpack(">b", self.take(1))[0]
            return Ext(code, self.take(1 << (t - 0xD4)))
        if 0xD9 <= t <= 0xDB:  # str 8/16/32
            return self.str(self.uint(1 << (t - 0xD9)))
        if t in (0xDC, 0xDD):
            return self.array(self.uint(2 << (t - 0xDC)), depth)
        if t in (0xDE, 0xDF):
            return self.map(self.uint(2 << (t - 0xDE)), depth)
        raise ValueError("at byte %d: 0xc1 is not msgpack" % (self.p - 1))


def decode_body(data):
    """Decodes a body: exactly one msgpack map, at most BODY_MAX bytes,
    nested at most DEPTH_MAX deep.

    Returns a dict (nested maps are dicts too; str is str, bin bytes, ext
    Ext). Raises ProtocolError "bad_frame" when the bytes are not exactly one
    such map. Duplicate keys, keys that are not strings and invalid UTF-8 are
    left for validate_body() (code "bad_request"), which names the key.
    """
    data = bytes(data)
    if len(data) > BODY_MAX:
        raise ProtocolError("bad_frame", "body: %d bytes, more than the 8 MiB limit" % len(data))
    if not data:
        raise ProtocolError("bad_frame", "body: empty, not a msgpack map")
    b0 = data[0]
    if not (0x80 <= b0 <= 0x8F or b0 in (0xDE, 0xDF)):
        raise ProtocolError("bad_frame", "body: not a msgpack map (first byte 0x%02x)" % b0)
    r = _Reader(data)
    try:
        body = r.value(0)
    except ValueError as e:
        raise ProtocolError("bad_frame", "body: not valid msgpack (%s)" % e) from None
    if r.p != len(data):
        raise ProtocolError("bad_frame", "body: %d bytes after the msgpack map" % (len(data) - r.p))
    return body


def _b(message, key):
    return ProtocolError("bad_request", "%s: %s" % (key, message), key)


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _check_map(m, key):
    """Checks a map's keys: strings, valid UTF-8, none given twice."""
    if not isinstance(m, dict):
        raise _b("not a map", key)
    bad = getattr(m, "bad_keys", None)
    if bad:
        raise _b(bad[0], key or "body")
    for k in m:  # a dict a program built
        if not isinstance(k, str) or not _utf8_ok(k):
            raise _b("key %r is not a string of valid UTF-8" % (k,), key or "body")
    dups = getattr(m, "dups", None)
    if dups:
        # Of several, the one that sorts first (shorter, then by bytes), as
        # PROTOCOL.md §2 says.
        first = min(dups, key=lambda k: (len(k.encode("utf-8")), k.encode("utf-8")))
        raise _b("key given twice", _join(key, first))


def _join(prefix, k):
    return "%s.%s" % (prefix, k) if prefix else str(k)


def _utf8_ok(s):
    try:
        s.encode("utf-8")
        return True
    except UnicodeEncodeError:  # lone surrogates
        return False


def _str(v, key, lo=0, hi=None, choices=None, text=False):
    """A str of lo-hi UTF-8 bytes. text: U+0000 allowed (in text for people
    and models; not in ids, names and words)."""
    if isinstance(v, _BadStr):
        raise _b("not valid UTF-8", key)
    if not isinstance(v, str):
        raise _b("not a string" + (" (bin is not a string)" if isinstance(v, (bytes, bytearray)) else ""), key)
    if not _utf8_ok(v):  # lone surrogates in a str a program built
        raise _b("not valid UTF-8", key)
    if not text and "\0" in v:
        raise _b("holds U+0000", key)
    n = len(v.encode("utf-8"))
    if n < lo or (hi is not None and n > hi):
        if hi is None:
            raise _b("%d bytes, at least %d wanted" % (n, lo), key)
        raise _b("%d bytes, %d-%d wanted" % (n, lo, hi), key)
    if choices is not None and v not in choices:
        raise _b("%r is not one of %s" % (v, ", ".join(choices)), key)
    return v


def _uint(v, key, lo=0, hi=UINT64_MAX):
    if not _is_int(v):
        raise _b("not an unsigned integer", key)
    if v < lo or v > hi:
        if hi == UINT64_MAX:
            raise _b("%d is out of range (>= %d wanted)" % (v, lo), key)
        raise _b("%d is out of range %d-%d" % (v, lo, hi), key)
    return v


def _float(v, key, lo, hi, lo_open=False, what=None, f32=False):
    """A number (integer or float) in [lo, hi] ((lo, hi] with lo_open).
    f32: the receiver keeps it as a 32-bit float, and the range holds for
    the value kept (1e-50 for top_p would become 0)."""
    if not (_is_int(v) or isinstance(v, float)):
        raise _b("not a number", key)
    try:
        f = float(v)
    except OverflowError:
        f = math.inf
    if f32:
        f = struct.unpack("<f", struct.pack("<f", f))[0] if abs(f) <= FLT_MAX else math.nan
    ok = not math.isnan(f) and (f > lo if lo_open else f >= lo) and f <= hi
    if not ok:
        raise _b("%r is out of range %s" % (v, what or "%s-%s" % (lo, hi)), key)
    return v


def _ms(v, key):
    """A duration or rate: a number >= 0 and finite."""
    return _float(v, key, 0, DBL_MAX, what=">= 0")


def _bool(v, key):
    if not isinstance(v, bool):
        raise _b("not a bool", key)
    return v


def _array(v, key, lo=0, hi=None):
    if not isinstance(v, list):
        raise _b("not an array", key)
    if len(v) < lo or (hi is not None and len(v) > hi):
        raise _b("%d entries, %d-%s wanted" % (len(v), lo, hi if hi is not None else "any"), key)
    return v


class _Fields:
    """Reads the known keys of one map: nil means absent (PROTOCOL.md §2)."""

    def __init__(self, m, prefix=""):
        _check_map(m, prefix)
        self.m = m
        self.prefix = prefix

    def key(self, k):
        return _join(self.prefix, k)

    def get(self, k, required=False):
        v = self.m.get(k)
        if v is None and required:
            raise _b("missing", self.key(k))
        return v


def _validate_chat(body, hop):
    f = _Fields(body)
    _str(f.get("id", True), "id", 1, ID_MAX)
    if f.get("model") is not None:
        _str(f.get("model"), "model", 1, NAME_MAX)
    msgs = _array(f.get("messages", True), "messages", 1, MESSAGES_MAX)
    for i, m in enumerate(msgs):
        mf = _Fields(m, "messages[%d]" % i)
        _str(mf.get("role", True), mf.key("role"), choices=ROLES)
        _str(mf.get("content", True), mf.key("content"), 0, CONTENT_MAX, text=True)

    def stop(v, k):
        _array(v, k, 0, STOP_MAX)
        for i, s in enumerate(v):
            _str(s, "%s[%d]" % (k, i), 1, STOP_LEN_MAX, text=True)

    # In this order, the C codec's: a body with two faults names the same one.
    checks = (
        ("max_tokens", lambda v, k: _uint(v, k, 1, UINT32_MAX)),
        ("temperature", lambda v, k: _float(v, k, 0, 2, f32=True)),
        ("top_p", lambda v, k: _float(v, k, 0, 1, lo_open=True, what="(0, 1]", f32=True)),
        ("top_k", lambda v, k: _uint(v, k, 0, UINT32_MAX)),
        ("min_p", lambda v, k: _float(v, k, 0, 1, f32=True)),
        ("repeat_penalty", lambda v, k: _float(v, k, 0, FLT_MAX, lo_open=True, what="> 0", f32=True)),
        ("presence_penalty", lambda v, k: _float(v, k, -2, 2, what="-2 to 2", f32=True)),
        ("frequency_penalty", lambda v, k: _float(v, k, -2, 2, what="-2 to 2", f32=True)),
        ("seed", lambda v, k: _uint(v, k)),
        ("stop", stop),
        ("thinking", _bool),
        ("affinity", lambda v, k: _str(v, k, 1, NAME_MAX)),
        ("queue_timeout_ms", lambda v, k: _uint(v, k, 0, UINT32_MAX)),
        ("queued_ms", _ms),  # the broker's, on the worker hop; checked on both, as the C codec does
    )
    for k, check in checks:
        v = f.get(k)
        if v is not None:
            check(v, k)


def _id_seq(f):
    _str(f.get("id", True), "id", 1, ID_MAX)
    _uint(f.get("seq", True), "seq")


def _validate_token(body):
    f = _Fields(body)
    _id_seq(f)
    toks = _array(f.get("tokens", True), "tokens")
    for i, t in enumerate(toks):
        _uint(t, "tokens[%d]" % i, 0, INT32_MAX)
    for k in ("reasoning", "content"):
        if f.get(k) is not None:
            _str(f.get(k), k, text=True)


def _validate_done(body):
    f = _Fields(body)
    _id_seq(f)
    _str(f.get("finish", True), "finish", choices=FINISH)
    u = _Fields(f.get("usage", True), "usage")
    for k in ("prompt_tokens", "completion_tokens", "cached_tokens"):
        _uint(u.get(k, True), u.key(k), 0, UINT32_MAX)
    if u.get("reasoning_tokens") is not None:
        _uint(u.get("reasoning_tokens"), u.key("reasoning_tokens"), 0, UINT32_MAX)
    t = _Fields(f.get("timings", True), "timings")
    for k in ("queue_ms", "ttft_ms", "total_ms", "decode_tps"):
        _ms(t.get(k, True), t.key(k))


def _validate_error(body):
    f = _Fields(body)
    if f.get("id") is not None:
        _str(f.get("id"), "id", 1, ID_MAX)
    if f.get("seq") is not None:
        _uint(f.get("seq"), "seq")
    _str(f.get("code", True), "code", 1)
    _str(f.get("message", True), "message", text=True)
    if f.get("id") is not None and f.get("seq") is None:
        raise _b("missing (an ERROR with an id carries its seq)", "seq")


def _validate_stats_reply(body):
    f = _Fields(body)
    for i, w in enumerate(_array(f.get("workers", True), "workers")):
        wf = _Fields(w, "workers[%d]" % i)
        if wf.get("name") is not None:
            _str(wf.get("name"), wf.key("name"), 0, NAME_MAX)
        _str(wf.get("model", True), wf.key("model"), 1, NAME_MAX)
        if wf.get("backend") is not None:
            _str(wf.get("backend"), wf.key("backend"), choices=BACKENDS)
        _uint(wf.get("capacity", True), wf.key("capacity"), 0, CAPACITY_MAX)
        _uint(wf.get("in_flight", True), wf.key("in_flight"), 0, UINT32_MAX)
        _ms(wf.get("heartbeat_age_ms", True), wf.key("heartbeat_age_ms"))
    for i, q in enumerate(_array(f.get("queues", True), "queues")):
        qf = _Fields(q, "queues[%d]" % i)
        _str(qf.get("model", True), qf.key("model"), 1, NAME_MAX)
        _uint(qf.get("depth", True), qf.key("depth"), 0, UINT32_MAX)
    t = _Fields(f.get("totals", True), "totals")
    for k in ("accepted", "completed", "failed", "cancelled", "rejected", "redispatched", "tokens_out"):
        _uint(t.get(k, True), t.key(k))
    _uint(f.get("clients", True), "clients", 0, UINT32_MAX)
    _ms(f.get("uptime_ms", True), "uptime_ms")


def _validate_ready(body):
    f = _Fields(body)
    _str(f.get("model", True), "model", 1, NAME_MAX)
    _uint(f.get("capacity", True), "capacity", 1, CAPACITY_MAX)
    if f.get("name") is not None:
        _str(f.get("name"), "name", 0, NAME_MAX)
    if f.get("backend") is not None:
        _str(f.get("backend"), "backend", choices=BACKENDS)
    if f.get("n_ctx") is not None:
        _uint(f.get("n_ctx"), "n_ctx", 1, UINT32_MAX)
    if f.get("heartbeat_ms") is not None:
        _uint(f.get("heartbeat_ms"), "heartbeat_ms", HEARTBEAT_MS_MIN, HEARTBEAT_MS_MAX)


def _validate_worker_heartbeat(body):
    f = _Fields(body)
    _uint(f.get("capacity", True), "capacity", 0, CAPACITY_MAX)
    _uint(f.get("running", True), "running", 0, UINT32_MAX)


def _validate_broker_heartbeat(body):
    f = _Fields(body)
    if f.get("heartbeat_ms") is not None:
        _uint(f.get("heartbeat_ms"), "heartbeat_ms", HEARTBEAT_MS_MIN, HEARTBEAT_MS_MAX)


def validate_body(command, body, hop="client", sender=None):
    """Checks a decoded body against PROTOCOL.md §3-§9.

    hop is "client" or "worker"; sender ("client", "broker", "worker" or
    None for unknown) picks between bodies that differ by direction: the
    STATS request {} and the STATS reply, the client-hop CANCEL {id} and the
    worker-hop CANCEL {}, a worker's HEARTBEAT {capacity, running}, the
    broker's {heartbeat_ms?} and a client's {}. Bodies that say nothing are
    not read, so not checked (the STATS request, a client's HEARTBEAT, the
    worker-hop CANCEL). When sender is None a STATS body is taken as a
    request, a client-hop HEARTBEAT as a client's and a worker-hop HEARTBEAT
    as the broker's. Raises ProtocolError "bad_request" with key set;
    unknown keys are ignored.
    """
    if command == "CHAT":
        _validate_chat(body, hop)
    elif command == "CANCEL":
        if hop == "client":  # on the worker hop the job id says which; the body says nothing
            _str(_Fields(body).get("id", True), "id", 1, ID_MAX)
    elif command == "TOKEN":
        _validate_token(body)
    elif command == "DONE":
        _validate_done(body)
    elif command == "ERROR":
        _validate_error(body)
    elif command == "HEARTBEAT":
        if hop == "worker" and sender == "worker":
            _validate_worker_heartbeat(body)
        elif sender == "broker" or (hop == "worker" and sender is None):
            _validate_broker_heartbeat(body)
        # a client's heartbeat and the STATS request say nothing: their
        # bodies are not read (so not checked), as in the C codec
    elif command == "STATS":
        if sender == "broker":
            _validate_stats_reply(body)
    elif command == "READY":
        _validate_ready(body)
    elif command == "DISCONNECT":
        f = _Fields(body)
        if f.get("reason") is not None:
            _str(f.get("reason"), "reason")
    else:  # pragma: no cover - decode_frames() checked the command
        raise ProtocolError("bad_frame", "unknown command %r" % command)
    return body


# --------------------------------------------------------------------------
# frames


class Frame(collections.namedtuple("Frame", "command job body")):
    """One decoded message: command (str), job (int, worker hop only, else
    None) and body (dict)."""


def _printable(b):
    return bytes(b[:32]).decode("ascii", "backslashreplace") + ("..." if len(b) > 32 else "")


def decode_frames(frames, hop="client", sender=None, validate=True):
    """Reads one multipart message as a DEALER sends it (no routing id).

    frames: a sequence of bytes-like frames. hop: "client" or "worker" (on
    the worker hop CHAT, CANCEL, TOKEN, DONE and ERROR carry the job id).
    sender: see validate_body(). With validate=False only the frame-level
    checks are done (header, command, frame count, job id, body size, one
    msgpack map).

    Returns a Frame. Raises ProtocolError with code "unsupported_version"
    (header SMQ/ and another version), "bad_frame" (anything else wrong with
    the frames) or "bad_request" (a field of the body; key names it).
    """
    if hop not in ("client", "worker"):
        raise ValueError("hop must be 'client' or 'worker'")
    frames = [bytes(f) for f in frames]
    if not frames:
        raise ProtocolError("bad_frame", "empty message")
    head = frames[0]
    if head != HEADER:
        # "SMQ/" and a short version word: a peer of another version
        if head.startswith(b"SMQ/") and 5 <= len(head) <= 16:
            raise ProtocolError(
                "unsupported_version",
                "header %r: this peer speaks SMQ/1" % _printable(head))
        raise ProtocolError("bad_frame", "frame 0: header %r, not SMQ/1" % _printable(head))
    if len(frames) < 2:
        raise ProtocolError("bad_frame", "1 frame: no command")
    cmd_b = frames[1]
    cmd = cmd_b.decode("ascii", "replace")
    if cmd not in COMMANDS:
        raise ProtocolError("bad_frame", "frame 1: unknown command %r" % _printable(cmd_b))
    # A command on a hop it does not travel (READY on the client hop) is not
    # a frame error here, as in the C codec: the receiver ignores it.
    has_job = hop == "worker" and cmd in JOB_COMMANDS
    want = 4 if has_job else 3
    if len(frames) != want:
        raise ProtocolError("bad_frame", "%s on the %s hop: %d frames, %d wanted" % (cmd, hop, len(frames), want))
    job = None
    if has_job:
        if len(frames[2]) != 8:
            raise ProtocolError("bad_frame", "frame 2: job id of %d bytes, 8 wanted" % len(frames[2]))
        job = int.from_bytes(frames[2], "big")
    body = decode_body(frames[-1])
    if validate:
        validate_body(cmd, body, hop, sender)
    return Frame(cmd, job, _plain(body))


def _plain(v):
    """_Map -> dict, recursively (so bodies compare and print as dicts)."""
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_plain(x) for x in v]
    return v


def encode_frames(command, body, job=None):
    """The frames of one message: [header, command, (job id,) body].

    body: a dict (packed here) or already packed bytes. job: an int for the
    worker hop's job commands.
    """
    if command not in COMMANDS:
        raise ValueError("unknown command %r" % command)
    if isinstance(body, dict):
        body = msgpack.packb(body, use_bin_type=True)
    frames = [HEADER, command.encode("ascii")]
    if job is not None:
        frames.append(int(job).to_bytes(8, "big"))
    frames.append(bytes(body))
    return frames


def chat_body(id, messages, **params):
    """The CHAT body (a dict) for a request, checked as the broker checks it.

    messages: a list of {"role", "content"} maps (only those two keys are
    sent), or a str for one user message. params: the keys of CHAT_PARAMS;
    None means "not given". stop may be a str for one stop string. Raises
    RequestError (a ValueError) naming the bad field, TypeError for an
    unknown parameter.
    """
    unknown = [k for k in params if k not in CHAT_PARAMS]
    if unknown:
        raise TypeError("unknown CHAT parameter %r (known: %s)" % (unknown[0], ", ".join(CHAT_PARAMS)))
    if isinstance(messages, str):
        messages = [{"role": "user", "content": messages}]
    if not isinstance(messages, (list, tuple)):
        raise RequestError("messages: not a list of {role, content} maps", "messages")
    msgs = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise RequestError("messages[%d]: not a {role, content} map" % i, "messages[%d]" % i)
        msgs.append({"role": m.get("role"), "content": m.get("content")})
    body = {"id": id}
    model = params.get("model")
    if model is not None:
        body["model"] = model
    body["messages"] = msgs
    for k in CHAT_PARAMS[1:]:
        v = params.get(k)
        if v is None:
            continue
        if k == "stop":
            v = [v] if isinstance(v, str) else list(v) if isinstance(v, tuple) else v
        body[k] = v
    try:
        _validate_chat(body, "client")
    except ProtocolError as e:
        raise RequestError(e.message, e.key) from None
    return body


def encode_chat(id, messages, **params):
    """The packed CHAT body (bytes); see chat_body()."""
    return msgpack.packb(chat_body(id, messages, **params), use_bin_type=True)


def encode_cancel(id):
    """The packed CANCEL body {id} (client hop)."""
    _str(id, "id", 1, ID_MAX)
    return msgpack.packb({"id": id}, use_bin_type=True)


def encode_heartbeat():
    """The packed client-hop HEARTBEAT body: {}."""
    return b"\x80"


def encode_stats():
    """The packed STATS request body: {}."""
    return b"\x80"


def load_certificate(path):
    """Reads a czmq certificate file (smolmq-broker --keygen writes them).

    Returns {"public_key": Z85, "secret_key": Z85 or None}.
    """
    keys = {"public_key": None, "secret_key": None}
    with open(path, encoding="utf-8") as f:
        for line in f:
            m = re.match(r'\s*(public|secret)-key\s*=\s*"?([^"\s]+)"?', line)
            if m:
                keys[m.group(1) + "_key"] = m.group(2)
    if keys["public_key"] is None:
        raise ValueError("%s: no public-key in this certificate" % path)
    return keys


# --------------------------------------------------------------------------
# the client


class Event:
    """One event of a request.

    kind: "token", "done" or "error". id: the request's id (None for an
    ERROR the broker could not tie to a request: not terminal). seq: the
    frame's sequence number (None for local errors). terminal: True for
    "done" and for an "error" with an id. local: True for errors the client
    made itself (code "broker_lost", or "internal" for a seq gap or an
    unreadable frame). For "token": tokens (list of ints), reasoning and
    content (text deltas, "" when none). For "done": finish, usage and
    timings (dicts). For "error": code and message. body: the frame's body.
    """

    __slots__ = ("kind", "id", "seq", "tokens", "reasoning", "content", "finish", "usage",
                 "timings", "code", "message", "local", "body")

    def __init__(self, kind, id=None, seq=None, tokens=None, reasoning="", content="", finish=None,
                 usage=None, timings=None, code=None, message=None, local=False, body=None):
        self.kind = kind
        self.id = id
        self.seq = seq
        self.tokens = tokens if tokens is not None else []
        self.reasoning = reasoning
        self.content = content
        self.finish = finish
        self.usage = usage
        self.timings = timings
        self.code = code
        self.message = message
        self.local = local
        self.body = body

    @property
    def terminal(self):
        return self.kind == "done" or (self.kind == "error" and self.id is not None)

    def __repr__(self):
        if self.kind == "token":
            detail = "tokens=%r reasoning=%r content=%r" % (self.tokens, self.reasoning, self.content)
        elif self.kind == "done":
            detail = "finish=%r usage=%r timings=%r" % (self.finish, self.usage, self.timings)
        else:
            detail = "code=%r message=%r%s" % (self.code, self.message, " local" if self.local else "")
        return "<Event %s id=%r seq=%r %s>" % (self.kind, self.id, self.seq, detail)


class Completion(collections.namedtuple("Completion", "id content reasoning finish usage timings")):
    """complete()'s result: the whole answer text (content), the reasoning,
    finish, usage and timings of the DONE frame."""


class _Request:
    __slots__ = ("id", "next_seq", "discard")

    def __init__(self, id):
        self.id = id
        self.next_seq = 0
        self.discard = False    # its Stream was closed early: drop its events


class Stream:
    """The events of one request, as an iterator (Client.chat() returns one).

    Iteration ends after the terminal event ("done", or "error"). id is the
    request's id; cancel() asks the broker to stop it (the stream still ends
    with its terminal event, normally done/"cancelled"). Closing the stream
    early (close(), or leaving a for loop with break) cancels the request
    and drops its remaining events.
    """

    def __init__(self, client, id):
        self.client = client
        self.id = id
        self.ended = False

    def __iter__(self):
        return self

    def __next__(self):
        if self.ended:
            raise StopIteration
        ev = self.client._wait_for(self.id)
        if ev.terminal:
            self.ended = True
        return ev

    def next(self, timeout=None):
        """The next event, or None when timeout seconds pass first."""
        if self.ended:
            raise StopIteration
        ev = self.client._wait_for(self.id, timeout)
        if ev is not None and ev.terminal:
            self.ended = True
        return ev

    def cancel(self):
        self.client.cancel(self.id)

    def close(self):
        if not self.ended:
            self.ended = True
            self.client._abandon(self.id)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


class Client:
    """A connection to the smolmq broker (one ZeroMQ DEALER).

    endpoint: the broker's client endpoint; default $SMQ_BROKER, else
    tcp://127.0.0.1:5555. heartbeat_ms, liveness: PROTOCOL.md §6 (a
    HEARTBEAT every heartbeat_ms while requests are open, and one in answer
    to each of the broker's, so that a broker with a shorter interval does
    not take the client for gone; open requests end with a local
    "broker_lost" error after silence_s, liveness x the larger of
    heartbeat_ms and the interval the broker's HEARTBEATs announce, without
    any frame from the broker). curve: None, or a dict with server_key (the
    broker's public key) and optionally public_key and secret_key (the
    client's pair; a fresh pair when absent), all Z85 strings. context: a
    zmq.Context (default: the shared instance).
    """

    def __init__(self, endpoint=None, heartbeat_ms=1000, liveness=3, curve=None, context=None):
        if endpoint is None:
            endpoint = os.environ.get("SMQ_BROKER") or DEFAULT_ENDPOINT
        if not (isinstance(heartbeat_ms, (int, float)) and heartbeat_ms > 0):
            raise ValueError("heartbeat_ms must be > 0")
        if not (_is_int(liveness) and liveness >= 1):
            raise ValueError("liveness must be an integer >= 1")
        self.endpoint = endpoint
        self.heartbeat_s = heartbeat_ms / 1000.0
        self.liveness = liveness
        self.broker_heartbeat_s = None  # the broker's interval, once its HEARTBEAT says it
        self._ctx = context or zmq.Context.instance()
        self._sock = self._ctx.socket(zmq.DEALER)
        self._sock.setsockopt(zmq.LINGER, 0)
        if curve is not None:
            self._setup_curve(curve)
        self._sock.connect(endpoint)
        self._open = {}                 # id -> _Request: no terminal frame received yet
        self._zombies = set()           # ids ended locally that the broker may still hold
        self._events = collections.deque()   # events not yet taken, in arrival order
        self._owned = set()             # ids whose events go to a Stream, not next_event()
        self._stats_waiting = False
        self._stats_reply = None
        self._stats_error = None
        now = time.monotonic()
        self._last_heard = now
        self._last_hb = now
        self._ids = itertools.count(1)
        self._id_prefix = uuid.uuid4().hex[:12]
        self.closed = False

    def _setup_curve(self, curve):
        if not isinstance(curve, dict) or not curve.get("server_key"):
            raise ValueError("curve must be a dict with server_key (and public_key, secret_key)")
        if not zmq.has("curve"):
            raise ValueError("this libzmq has no CURVE support")
        pub, sec = curve.get("public_key"), curve.get("secret_key")
        if (pub is None) != (sec is None):
            raise ValueError("curve: give both public_key and secret_key, or neither")
        if pub is None:
            pub, sec = (k.decode("ascii") for k in zmq.curve_keypair())
        for name, key in (("server_key", curve["server_key"]), ("public_key", pub), ("secret_key", sec)):
            k = key.encode("ascii") if isinstance(key, str) else bytes(key)
            if len(k) != 40:
                raise ValueError("curve %s: a Z85 key is 40 characters, this one %d" % (name, len(k)))
        enc = lambda k: k.encode("ascii") if isinstance(k, str) else bytes(k)
        self._sock.curve_serverkey = enc(curve["server_key"])
        self._sock.curve_publickey = enc(pub)
        self._sock.curve_secretkey = enc(sec)

    # ---- sending

    def _send(self, command, body, block=False):
        try:
            self._sock.send_multipart([HEADER, command.encode("ascii"), body],
                                      flags=0 if block else zmq.NOBLOCK)
            return True
        except zmq.Again:
            return False

    def submit(self, messages, id=None, **params):
        """Sends a CHAT request and returns its id.

        messages: a list of {"role", "content"} maps, or a str (one user
        message). id: 1-64 bytes, unique among this client's open requests
        (generated when None). params: model, max_tokens, temperature,
        top_p, top_k, min_p, repeat_penalty, presence_penalty,
        frequency_penalty, seed, stop, thinking, affinity, queue_timeout_ms
        (PROTOCOL.md §3; None means "not given"). Raises RequestError
        (ValueError) for a bad field, TypeError for an unknown parameter,
        ValueError for an id still open. The events come from next_event().
        """
        return self._submit(messages, id, params, owned=False)

    def _submit(self, messages, id, params, owned):
        self._check_open()
        if id is None:
            id = "%s-%d" % (self._id_prefix, next(self._ids))
        body = chat_body(id, messages, **params)
        if id in self._open:
            raise ValueError("id %r: a request with this id is still open" % id)
        if id in self._zombies:
            raise ValueError("id %r: ended locally, and the broker may still hold it; use another id" % id)
        if not self._open:
            # Silence is measured from when we start expecting to hear.
            now = time.monotonic()
            self._last_heard = now
            self._last_hb = now
        if not self._send("CHAT", msgpack.packb(body, use_bin_type=True)):
            raise BrokerError("overloaded", "the queue to the broker is full (is it running at %s?)" % self.endpoint)
        self._open[id] = _Request(id)
        if owned:
            self._owned.add(id)
        return id

    def cancel(self, id):
        """Asks the broker to stop request id. Its events still end with a
        terminal one (normally done with finish "cancelled"). Cancelling an
        id that is not open does nothing."""
        self._check_open()
        if id in self._open:
            self._send("CANCEL", encode_cancel(id))

    def chat(self, messages, id=None, **params):
        """Sends a request (as submit()) and returns a Stream over its
        events, ending with its terminal event."""
        id = self._submit(messages, id, params, owned=True)
        return Stream(self, id)

    def complete(self, messages, id=None, **params):
        """Sends a request and waits for all of it: a Completion (content,
        reasoning, finish, usage, timings). Raises BrokerError when it ends
        with an error."""
        content, reasoning = [], []
        for ev in self.chat(messages, id, **params):
            if ev.kind == "token":
                content.append(ev.content)
                reasoning.append(ev.reasoning)
            elif ev.kind == "done":
                return Completion(ev.id, "".join(content), "".join(reasoning), ev.finish, ev.usage, ev.timings)
            else:
                raise BrokerError(ev.code, ev.message, ev.id)
        raise BrokerError("internal", "the stream ended without a terminal event")  # pragma: no cover

    def stats(self, timeout=None):
        """Asks the broker for its state (PROTOCOL.md §9) and returns the
        body (a dict). Raises TimeoutError after timeout seconds (default
        silence_s), BrokerError when the broker answers with an
        ERROR that is not about a request."""
        self._check_open()
        if timeout is None:
            timeout = self.silence_s
        self._stats_waiting, self._stats_reply, self._stats_error = True, None, None
        try:
            self._send("STATS", encode_stats(), block=True)
            deadline = time.monotonic() + timeout
            while self._stats_reply is None and self._stats_error is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("no STATS answer from %s in %.1f s" % (self.endpoint, timeout))
                self._pump(left)
            if self._stats_error is not None:
                raise BrokerError(self._stats_error.code, self._stats_error.message)
            return self._stats_reply
        finally:
            self._stats_waiting = False

    def next_event(self, timeout=None):
        """The next event of any open request submit() sent (in arrival
        order), or an id-less ERROR from the broker.

        Waits up to timeout seconds (None: as long as requests are open).
        Returns None when the timeout passes or when no request is open and
        no event is waiting. Sends heartbeats and detects a silent broker
        while it waits. Events of requests made with chat() go to their
        Stream, not here.
        """
        self._check_open()
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            ev = self._take(None)
            if ev is not None:
                return ev
            if all(id in self._owned for id in self._open):
                self._pump(0)
                ev = self._take(None)
                return ev
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return None
            self._pump(left)

    @property
    def silence_s(self):
        """How long the broker may say nothing before the open requests end
        with broker_lost: liveness x the larger of our interval and the
        broker's latest announced one (PROTOCOL.md §6)."""
        return self.liveness * max(self.heartbeat_s, self.broker_heartbeat_s or 0)

    @property
    def open_requests(self):
        """The ids of the requests whose terminal event has not arrived."""
        return list(self._open)

    def close(self, cancel=True):
        """Cancels the open requests (unless cancel=False) and closes the
        socket (waiting at most 0.5 s for those CANCELs to leave)."""
        if self.closed:
            return
        linger = 0
        if cancel and self._open:
            for id in list(self._open):
                self._send("CANCEL", encode_cancel(id))
            linger = 500
        self._sock.close(linger=linger)
        self.closed = True

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ---- internals

    def _check_open(self):
        if self.closed:
            raise ValueError("this Client is closed")

    def _take(self, id):
        """Removes and returns the first waiting event of request id (None:
        of any request not owned by a Stream)."""
        for i, ev in enumerate(self._events):
            if ev.id == id or (id is None and ev.id not in self._owned):
                del self._events[i]
                return ev
        return None

    def _wait_for(self, id, timeout=None):
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            ev = self._take(id)
            if ev is not None:
                if ev.terminal:
                    self._owned.discard(id)
                return ev
            if id not in self._open:  # pragma: no cover - a terminal event is always queued
                raise BrokerError("internal", "request %r is not open" % id, id)
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return None
            self._pump(left)

    def _abandon(self, id):
        """A Stream closed early: cancel its request and drop its events."""
        self._owned.discard(id)
        self._events = collections.deque(e for e in self._events if e.id != id)
        r = self._open.get(id)
        if r is not None and not self.closed:
            r.discard = True
            self._send("CANCEL", encode_cancel(id))

    def _pump(self, wait):
        """Receives what has arrived, sends a heartbeat when one is due and
        checks liveness; when that brought nothing new, polls for up to wait
        seconds (None: until the next heartbeat or liveness deadline) and
        does it again. The callers loop on their own condition."""
        if self._drain() + self._tick():
            return
        now = time.monotonic()
        limits = [] if wait is None else [wait]
        if self._open:
            limits.append(self._last_hb + self.heartbeat_s - now)
            limits.append(self._last_heard + self.silence_s - now)
        t = max(0.0, min(limits)) if limits else self.heartbeat_s
        if self._sock.poll(int(math.ceil(t * 1000)), zmq.POLLIN):
            self._drain()
        self._tick()

    def _drain(self):
        """Receives and dispatches every message waiting; returns how many."""
        n = 0
        while True:
            try:
                frames = self._sock.recv_multipart(flags=zmq.NOBLOCK)
            except zmq.Again:
                return n
            n += 1
            self._last_heard = time.monotonic()
            self._dispatch(frames)

    def _tick(self):
        """Heartbeat and liveness; returns how many requests it ended."""
        if not self._open:
            return 0
        now = time.monotonic()
        if now - self._last_hb >= self.heartbeat_s:
            self._send("HEARTBEAT", encode_heartbeat())
            self._last_hb = now
        if now - self._last_heard >= self.silence_s:
            silent = now - self._last_heard
            ended = list(self._open)
            for id in ended:
                self._end_locally(id, "broker_lost", "no frame from the broker at %s for %.1f s" % (self.endpoint, silent))
            return len(ended)
        return 0

    def _end_locally(self, id, code, message):
        """Ends an open request with a local error event; cancels it at the
        broker, which may still hold it."""
        r = self._open.pop(id)
        self._zombies.add(id)
        self._send("CANCEL", encode_cancel(id))
        if not r.discard:
            self._events.append(Event("error", id=id, code=code, message=message, local=True))

    def _dispatch(self, frames):
        try:
            fr = decode_frames(frames, "client", sender="broker")
        except ProtocolError as e:
            self._bad_frame(frames, e)
            return
        cmd, body = fr.command, fr.body
        if cmd == "HEARTBEAT":
            # The broker judges us by its own interval, which may be shorter
            # than ours: answer it; and judge it by the larger of the two
            # (PROTOCOL.md §6).
            if body.get("heartbeat_ms") is not None:
                self.broker_heartbeat_s = body["heartbeat_ms"] / 1000.0
            now = time.monotonic()
            if self._open and now - self._last_hb >= ECHO_GAP_S:
                self._send("HEARTBEAT", encode_heartbeat())
                self._last_hb = now
            return
        if cmd == "STATS":
            if self._stats_waiting:
                self._stats_reply = body
            return
        if cmd not in ("TOKEN", "DONE", "ERROR"):
            # A command a broker does not send to clients: bad_frame (PROTOCOL.md §2).
            log.warning("broker sent %s on the client hop", cmd)
            self._send_error("bad_frame", "frame 1: a broker does not send %s to a client" % cmd)
            return
        id = body.get("id")
        if id is None:  # an ERROR not tied to a request
            ev = Event("error", code=body["code"], message=body["message"], body=body)
            if self._stats_waiting:
                self._stats_error = ev
            else:
                log.warning("broker error: %s: %s", ev.code, ev.message)
                self._events.append(ev)
                while sum(1 for e in self._events if e.id is None) > 100:
                    self._take_first_idless()
            return
        r = self._open.get(id)
        terminal = cmd != "TOKEN"
        if r is None:
            if terminal:
                self._zombies.discard(id)
            return  # a request ended locally (or never ours): nothing to say
        seq = body["seq"]
        if seq != r.next_seq:
            self._end_locally(id, "internal", "seq gap: frame %d arrived where %d was due (%s)" % (seq, r.next_seq, cmd))
            if terminal:
                self._zombies.discard(id)
            return
        r.next_seq += 1
        if cmd == "TOKEN":
            ev = Event("token", id=id, seq=seq, tokens=body["tokens"], reasoning=body.get("reasoning") or "",
                       content=body.get("content") or "", body=body)
        elif cmd == "DONE":
            ev = Event("done", id=id, seq=seq, finish=body["finish"], usage=body["usage"],
                       timings=body["timings"], body=body)
        else:
            ev = Event("error", id=id, seq=seq, code=body["code"], message=body["message"], body=body)
        if terminal:
            del self._open[id]
        if not r.discard:
            self._events.append(ev)

    def _send_error(self, code, message):
        """An ERROR without id to the broker (never in answer to an ERROR)."""
        self._send("ERROR", msgpack.packb({"code": code, "message": message}, use_bin_type=True))

    def _take_first_idless(self):
        for i, e in enumerate(self._events):
            if e.id is None:
                del self._events[i]
                return

    def _bad_frame(self, frames, err):
        """A frame from the broker that breaks the protocol (PROTOCOL.md §4).
        Frame-level faults are answered with ERROR (not to an ERROR: no
        ping-pong); bad fields are not. The open request it names, if any,
        ends with a local "internal" error (and is cancelled)."""
        cmd = bytes(frames[1]) if len(frames) > 1 else b""
        log.warning("unreadable frame from the broker (%s): %s", err.code, err.message)
        if err.code in ("bad_frame", "unsupported_version") and cmd != b"ERROR":
            self._send_error(err.code, err.message if err.code == "bad_frame" else "this client speaks SMQ/1")
        # Tie it to a request if its body names one, so that request cannot hang.
        id = None
        try:
            body = decode_body(bytes(frames[-1]))
            if isinstance(body.get("id"), str):
                id = body["id"]
        except Exception:
            pass
        if id is not None and id in self._open:
            self._end_locally(id, "internal", "unreadable %s frame from the broker (%s): %s"
                              % (cmd.decode("ascii", "replace"), err.code, err.message))
            if cmd in (b"DONE", b"ERROR"):
                self._zombies.discard(id)
