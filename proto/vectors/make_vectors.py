#!/usr/bin/python3
"""make_vectors.py - writes vectors.json, the SMQ/1 test vectors (README.md says what one is).

Run it with /usr/bin/python3 (Debian's, which has the msgpack module):

    /usr/bin/python3 proto/vectors/make_vectors.py [--fuzz-corpus DIR]

--fuzz-corpus also writes each valid vector into DIR as a seed for tests/fuzz/proto_fuzz.c, in that
target's form: one byte with the frame count, then each frame but the last as a 2-byte big-endian
length and its bytes, then the last frame.

The output is deterministic: the same script writes the same file, byte for byte. Bodies are packed
with msgpack's smallest encodings (Python floats as float64); invalid bodies that msgpack will not
write (invalid UTF-8, a key given twice, a lying array count) are spliced from raw bytes.
"""
import json
import os
import struct
import sys

import msgpack

HEADER = b"SMQ/1"
JOB = 7
BIG_JOB = (1 << 40) + 5  # needs all 8 bytes' worth of width, and stays exact in JSON (< 2^53)

vectors = []


class Raw:
    """Bytes spliced into a body as they are."""

    def __init__(self, b):
        self.b = b


def pack(obj):
    """msgpack of obj, where Raw values (and dict keys) go in verbatim and a list of pairs is a map."""
    if isinstance(obj, Raw):
        return obj.b
    if isinstance(obj, Pairs):
        return map_header(len(obj.items)) + b"".join(pack(k) + pack(v) for k, v in obj.items)
    if isinstance(obj, dict):
        return map_header(len(obj)) + b"".join(pack(k) + pack(v) for k, v in obj.items())
    if isinstance(obj, list):
        n = len(obj)
        head = bytes([0x90 | n]) if n < 16 else b"\xdc" + struct.pack(">H", n)
        return head + b"".join(pack(v) for v in obj)
    return msgpack.packb(obj, use_bin_type=True)


class Pairs:
    """A map written pair by pair, so that a key can be given twice."""

    def __init__(self, *items):
        self.items = items


def map_header(n):
    return bytes([0x80 | n]) if n < 16 else b"\xde" + struct.pack(">H", n)


def raw_str(b):
    """A msgpack str holding the bytes b, valid UTF-8 or not."""
    assert len(b) < 32
    return Raw(bytes([0xA0 | len(b)]) + b)


def frames(cmd, body, job=None):
    f = [HEADER, cmd.encode()]
    if job is not None:
        f.append(struct.pack(">Q", job))
    f.append(body)
    return f


def valid(name, hop, frm, cmd, body, description, job=None):
    v = {"name": name, "hop": hop, "from": frm, "description": description,
         "frames": [x.hex() for x in frames(cmd, pack(body), job)], "valid": True, "command": cmd}
    if job is not None:
        v["job"] = job
    v["body"] = body
    vectors.append(v)


def invalid(name, hop, frm, raw_frames, code, description, key=None):
    v = {"name": name, "hop": hop, "from": frm, "description": description,
         "frames": [x.hex() for x in raw_frames], "valid": False, "error_code": code}
    if key is not None:
        v["error_key"] = key
    vectors.append(v)


def bad_request(name, hop, frm, cmd, body, key, description, job=None):
    invalid(name, hop, frm, frames(cmd, pack(body), job), "bad_request", description, key)


def bad_frame(name, hop, frm, raw_frames, description):
    invalid(name, hop, frm, raw_frames, "bad_frame", description)


HELLO = [{"role": "user", "content": "Hello"}]

# ---- valid: every command on each hop it travels ----

valid("chat_minimal", "client", "client", "CHAT", {"id": "r1", "messages": HELLO},
      "The least a CHAT carries: an id and one message. Every other field takes its default.")
valid("chat_full", "client", "client", "CHAT", {
    "id": "req-0123456789",
    "model": "SmolLM3-3B",
    "messages": [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "content": "4."},
        {"role": "user", "content": "And 3+3?"},
    ],
    "max_tokens": 256,
    "temperature": 0.7,
    "top_p": 0.9,
    "top_k": 40,
    "min_p": 0.05,
    "repeat_penalty": 1.1,
    "presence_penalty": 0.5,
    "frequency_penalty": -0.5,
    "seed": 12345678901234,
    "stop": ["\n\nUser:", "</answer>"],
    "thinking": False,
    "affinity": "conv-42",
    "queue_timeout_ms": 5000,
}, "A CHAT with every field a client may send.")
valid("chat_int_floats", "client", "client", "CHAT",
      {"id": "r2", "messages": HELLO, "temperature": 1, "top_p": 1, "repeat_penalty": 2, "presence_penalty": -2},
      "Float fields given as integers: a float field accepts an integer.")
valid("chat_nil_is_absent", "client", "client", "CHAT",
      {"id": "r3", "messages": HELLO, "model": None, "seed": None, "stop": None},
      "nil for an optional field means not given: model, seed and stop are absent here.")
valid("chat_unknown_keys_ignored", "client", "client", "CHAT",
      {"id": "r4", "messages": [{"role": "user", "content": "Hi", "name": "ann"}],
       "x_future": {"nested": [1, 2.5, None, b"\x00".hex()]}, "logprobs": True},
      "Unknown keys (x_future, logprobs, messages[0].name) are ignored, whatever their values: "
      "a later minor version may add optional fields.")
valid("chat_worker_hop", "worker", "broker", "CHAT",
      {"id": "r1", "messages": HELLO, "max_tokens": 64, "seed": 7, "queued_ms": 12.5},
      "The broker's CHAT to a worker: the job id frame, and queued_ms, the time the request waited.", job=JOB)

valid("cancel_client", "client", "client", "CANCEL", {"id": "r1"}, "A client cancels its request r1.")
valid("cancel_worker", "worker", "broker", "CANCEL", {},
      "The broker cancels job 7 at its worker: the job id says which; the body is empty.", job=JOB)

valid("token_reasoning", "client", "broker", "TOKEN",
      {"id": "r1", "seq": 0, "tokens": [1, 128000, 42], "reasoning": "Let me think"},
      "A step inside <think>: its text is reasoning.")
valid("token_content", "client", "broker", "TOKEN",
      {"id": "r1", "seq": 1, "tokens": [791], "content": "The"},
      "A step of the answer.")
valid("token_unicode", "client", "broker", "TOKEN",
      {"id": "r1", "seq": 2, "tokens": [12, 13, 14], "reasoning": "", "content": " héllo — 日本語 🙂"},
      "Whole UTF-8 characters of 2, 3 and 4 bytes; an empty reasoning is the same as none.")
valid("token_worker_hop", "worker", "worker", "TOKEN",
      {"id": "r1", "seq": 0, "tokens": [], "content": ""},
      "A worker's TOKEN for job 7 (a step that held no token, e.g. a held-back stop-string prefix).",
      job=BIG_JOB)

USAGE = {"prompt_tokens": 31, "completion_tokens": 120, "cached_tokens": 16}
TIMINGS = {"queue_ms": 1.5, "ttft_ms": 35.25, "total_ms": 2900.0, "decode_tps": 41.75}
for i, finish in enumerate(["eog", "stop_string", "length", "context_full", "cancelled"]):
    valid(f"done_{finish}", "client", "broker", "DONE",
          {"id": "r1", "seq": 3 + i, "finish": finish, "usage": USAGE, "timings": TIMINGS},
          f"The terminal frame of a request that finished with \"{finish}\".")
valid("done_worker_hop", "worker", "worker", "DONE",
      {"id": "r1", "seq": 9, "finish": "eog", "usage": {"prompt_tokens": 5, "completion_tokens": 0, "cached_tokens": 0},
       "timings": {"queue_ms": 0, "ttft_ms": 0, "total_ms": 3, "decode_tps": 0}},
      "A worker's DONE for job 7; durations given as integers.", job=JOB)
valid("done_reasoning_tokens", "client", "broker", "DONE",
      {"id": "r1", "seq": 40, "finish": "eog", "usage": dict(USAGE, reasoning_tokens=87), "timings": TIMINGS},
      "usage.reasoning_tokens (optional, 0 when absent): how many of the completion tokens were the thinking "
      "block's, <think> and </think> included.")

valid("error_with_id", "client", "broker", "ERROR",
      {"id": "r1", "seq": 0, "code": "timeout", "message": "waited 30000 ms for a worker of SmolLM3-3B"},
      "An ERROR with an id ends that request.")
valid("error_without_id", "client", "broker", "ERROR",
      {"code": "bad_frame", "message": "frame 1: unknown command \"FOO\""},
      "An ERROR without an id ends no request (it answers a frame that could not be tied to one).")
valid("error_unknown_code", "client", "broker", "ERROR",
      {"code": "a_later_code", "message": "a code this version does not list"},
      "Error codes are words; a client must accept one it does not know.")
valid("error_worker_hop", "worker", "worker", "ERROR",
      {"id": "r1", "seq": 0, "code": "prompt_too_long", "message": "the prompt is 70000 tokens; the context 65536"},
      "A worker's ERROR for job 7.", job=JOB)

valid("heartbeat_client", "client", "client", "HEARTBEAT", {}, "A client's heartbeat: an empty map.")
valid("heartbeat_broker_to_client", "client", "broker", "HEARTBEAT", {"heartbeat_ms": 1000},
      "The broker's heartbeat to a client, with the broker's interval.")
valid("heartbeat_worker", "worker", "worker", "HEARTBEAT", {"capacity": 8, "running": 3},
      "A worker's heartbeat: its capacity now and what it runs.")
valid("heartbeat_worker_draining", "worker", "worker", "HEARTBEAT", {"capacity": 0, "running": 1},
      "A draining worker says capacity 0.")
valid("heartbeat_broker_to_worker", "worker", "broker", "HEARTBEAT", {},
      "The broker's heartbeat to a worker (heartbeat_ms is optional).")

valid("ready_full", "worker", "worker", "READY",
      {"model": "SmolLM3-3B", "capacity": 16, "name": "gpu-host-1/H100", "backend": "cuda", "n_ctx": 65536,
       "heartbeat_ms": 1000},
      "A worker registers with every field.")
valid("ready_minimal", "worker", "worker", "READY", {"model": "SmolLM3-3B", "capacity": 1},
      "A worker registers with the required fields only.")

valid("disconnect_worker", "worker", "worker", "DISCONNECT", {}, "A worker leaves.")
valid("disconnect_broker", "worker", "broker", "DISCONNECT", {"reason": "shutting_down"},
      "The broker tells a worker it is shutting down.")

valid("stats_request", "client", "client", "STATS", {}, "A client asks for the broker's state.")
valid("stats_reply", "client", "broker", "STATS", {
    "workers": [
        {"name": "gpu-host-1", "model": "SmolLM3-3B", "backend": "cuda", "capacity": 16, "in_flight": 3,
         "heartbeat_age_ms": 412.5},
        {"model": "SmolLM3-3B", "capacity": 2, "in_flight": 0, "heartbeat_age_ms": 3},
    ],
    "queues": [{"model": "SmolLM3-3B", "depth": 0}, {"model": "other", "depth": 4}],
    "totals": {"accepted": 1000, "completed": 950, "failed": 10, "cancelled": 20, "rejected": 5,
               "redispatched": 2, "tokens_out": 123456},
    "clients": 4,
    "uptime_ms": 86400000.0,
}, "The broker's STATS reply; the second worker gave no name or backend.")

# ---- invalid frames: bad_frame, unsupported_version ----

MIN_CHAT = pack({"id": "r1", "messages": HELLO})
invalid("wrong_header", "client", "client", [b"XMQ/1", b"CHAT", MIN_CHAT], "bad_frame",
        "Frame 0 is not SMQ/1 nor SMQ/ with another version.")
invalid("other_version", "client", "client", [b"SMQ/2", b"CHAT", MIN_CHAT], "unsupported_version",
        "A peer of another major version: answered unsupported_version, listing SMQ/1.")
invalid("other_version_worker", "worker", "worker", [b"SMQ/2", b"READY"], "unsupported_version",
        "The header is checked first: another version is unsupported_version whatever the other frames.")
bad_frame("unknown_command", "client", "client", [HEADER, b"FOO", b"\x80"], "FOO is no command.")
bad_frame("lower_case_command", "client", "client", [HEADER, b"chat", MIN_CHAT], "Commands are upper-case.")
bad_frame("too_few_frames", "client", "client", [HEADER, b"CHAT"], "A CHAT without its body.")
bad_frame("job_frame_on_client_hop", "client", "client", frames("CHAT", MIN_CHAT, JOB),
          "On the client hop every command has 3 frames: no job id.")
bad_frame("no_job_frame_on_worker_hop", "worker", "worker", frames("TOKEN", pack(
    {"id": "r1", "seq": 0, "tokens": [1]})), "A worker's TOKEN needs the job id frame: 4 frames.")
bad_frame("job_frame_on_heartbeat", "worker", "worker", frames("HEARTBEAT", pack({"capacity": 1, "running": 0}), JOB),
          "HEARTBEAT has no job id frame on either hop.")
bad_frame("job_frame_7_bytes", "worker", "broker", [HEADER, b"CHAT", b"\x00" * 6 + b"\x07", MIN_CHAT],
          "The job id frame is exactly 8 bytes.")
bad_frame("body_empty", "client", "client", [HEADER, b"HEARTBEAT", b""], "A body is a map, {} at least.")
bad_frame("body_not_a_map", "client", "client", [HEADER, b"CHAT", pack(["r1", HELLO])], "The body is an array.")
bad_frame("body_truncated", "client", "client", [HEADER, b"CHAT", MIN_CHAT[:-3]],
          "The body ends inside its last string.")
bad_frame("body_trailing_bytes", "client", "client", [HEADER, b"CHAT", MIN_CHAT + b"\xc0"],
          "One map and then a nil: a body is exactly one map.")
HUGE = pack({"id": "r1", "messages": Raw(b"\xdd\xff\xff\xff\xff")}) + b"\x80" * 8
bad_frame("body_huge_array_count", "client", "client", [HEADER, b"CHAT", HUGE],
          f"An array header claiming 4294967295 entries in a {len(HUGE)}-byte body: rejected before anything is "
          "allocated for them.")
bad_frame("body_huge_str_length", "client", "client",
          [HEADER, b"CHAT", pack({"id": Raw(b"\xdb\x7f\xff\xff\xff"), "messages": HELLO})],
          "A str claiming 2 GiB in a small body.")
bad_frame("body_deep_nesting", "client", "client",
          [HEADER, b"CHAT", pack({"id": "r1", "messages": HELLO, "x": Raw(b"\x91" * 40 + b"\x00")})],
          "Arrays nested 41 deep (an unknown key's value, but the nesting limit of 32 holds for the whole body).")
bad_frame("body_reserved_byte", "client", "client", [HEADER, b"CHAT", pack({"id": Raw(b"\xc1"), "messages": HELLO})],
          "0xc1 is never used in msgpack.")

# ---- invalid bodies: bad_request, with the key path the message names ----

bad_request("missing_id", "client", "client", "CHAT", {"messages": HELLO}, "id", "CHAT without its id.")
bad_request("missing_messages", "client", "client", "CHAT", {"id": "r1"}, "messages", "CHAT without messages.")
bad_request("empty_messages", "client", "client", "CHAT", {"id": "r1", "messages": []}, "messages",
            "messages needs 1 to 1024 entries.")
bad_request("id_too_long", "client", "client", "CHAT", {"id": "x" * 65, "messages": HELLO}, "id",
            "An id is 1 to 64 bytes.")
bad_request("bad_role", "client", "client", "CHAT", {"id": "r1", "messages": [{"role": "robot", "content": "hi"}]},
            "messages[0].role", "role is one of system, user, assistant, tool.")
bad_request("content_not_a_string", "client", "client", "CHAT",
            {"id": "r1", "messages": [{"role": "user", "content": "a"}, {"role": "user", "content": 5}]},
            "messages[1].content", "A message's content is a str.")
bad_request("bin_instead_of_str", "client", "client", "CHAT",
            {"id": "r1", "messages": [{"role": "user", "content": b"Hello"}]}, "messages[0].content",
            "msgpack bin is not a string.")
bad_request("invalid_utf8", "client", "client", "CHAT",
            {"id": "r1", "messages": [{"role": "user", "content": raw_str(b"caf\xc3")}]}, "messages[0].content",
            "A str whose last character is cut: invalid UTF-8.")
bad_request("invalid_utf8_surrogate", "client", "client", "CHAT",
            {"id": "r1", "messages": [{"role": "user", "content": raw_str(b"\xed\xa0\x80")}]},
            "messages[0].content", "A UTF-16 surrogate encoded in UTF-8 (CESU) is not valid UTF-8.")
bad_request("temperature_out_of_range", "client", "client", "CHAT",
            {"id": "r1", "messages": HELLO, "temperature": 3.5}, "temperature", "temperature is 0 to 2.")
bad_request("top_p_zero", "client", "client", "CHAT", {"id": "r1", "messages": HELLO, "top_p": 0}, "top_p",
            "top_p is in (0, 1]: 0 is out.")
bad_request("temperature_not_a_number", "client", "client", "CHAT",
            {"id": "r1", "messages": HELLO, "temperature": "hot"}, "temperature", "A float field takes numbers only.")
bad_request("max_tokens_float", "client", "client", "CHAT", {"id": "r1", "messages": HELLO, "max_tokens": 100.0},
            "max_tokens", "A uint field takes only integers, even a whole float.")
bad_request("max_tokens_negative", "client", "client", "CHAT", {"id": "r1", "messages": HELLO, "max_tokens": -5},
            "max_tokens", "A uint field takes no negative integer.")
bad_request("max_tokens_zero", "client", "client", "CHAT", {"id": "r1", "messages": HELLO, "max_tokens": 0},
            "max_tokens", "max_tokens is at least 1.")
bad_request("seed_negative", "client", "client", "CHAT", {"id": "r1", "messages": HELLO, "seed": -1}, "seed",
            "seed is a uint.")
bad_request("thinking_not_bool", "client", "client", "CHAT", {"id": "r1", "messages": HELLO, "thinking": 1},
            "thinking", "A bool is msgpack true or false, not 1.")
bad_request("too_many_stop_strings", "client", "client", "CHAT",
            {"id": "r1", "messages": HELLO, "stop": [f"s{i}" for i in range(9)]}, "stop", "At most 8 stop strings.")
bad_request("empty_stop_string", "client", "client", "CHAT", {"id": "r1", "messages": HELLO, "stop": ["a", ""]},
            "stop[1]", "A stop string is 1 to 256 bytes.")
bad_request("duplicate_key", "client", "client", "CHAT", Pairs(("id", "r1"), ("messages", HELLO), ("id", "r2")),
            "id", "A key given twice.")
bad_request("duplicate_key_nested", "client", "client", "CHAT",
            {"id": "r1", "messages": [Pairs(("role", "user"), ("content", "a"), ("content", "b"))]},
            "messages[0].content", "A key given twice inside a message.")
bad_request("message_not_a_map", "client", "client", "CHAT", {"id": "r1", "messages": ["hello"]}, "messages[0]",
            "Each message is a map.")
bad_request("cancel_without_id", "client", "client", "CANCEL", {}, "id", "CANCEL names the request.")
bad_request("token_negative_id", "client", "broker", "TOKEN", {"id": "r1", "seq": 0, "tokens": [5, -1]},
            "tokens[1]", "Token ids are uints.")
bad_request("done_bad_finish", "client", "broker", "DONE",
            {"id": "r1", "seq": 1, "finish": "tired", "usage": USAGE, "timings": TIMINGS}, "finish",
            "finish is one of eog, stop_string, length, context_full, cancelled.")
bad_request("done_missing_usage_key", "client", "broker", "DONE",
            {"id": "r1", "seq": 1, "finish": "eog", "usage": {"prompt_tokens": 1, "completion_tokens": 2},
             "timings": TIMINGS}, "usage.cached_tokens", "usage has all three counts.")
bad_request("error_id_without_seq", "client", "broker", "ERROR", {"id": "r1", "code": "timeout", "message": "late"},
            "seq", "An ERROR with an id carries its seq.")
bad_request("done_negative_reasoning_tokens", "client", "broker", "DONE",
            {"id": "r1", "seq": 1, "finish": "eog", "usage": dict(USAGE, reasoning_tokens=-1), "timings": TIMINGS},
            "usage.reasoning_tokens", "reasoning_tokens, when given, is a uint.")
bad_request("ready_capacity_zero", "worker", "worker", "READY", {"model": "m", "capacity": 0}, "capacity",
            "A worker registers with a capacity of 1 to 4096.")
bad_request("ready_bad_backend", "worker", "worker", "READY", {"model": "m", "capacity": 1, "backend": "tpu"},
            "backend", "backend is cpu or cuda.")
bad_request("heartbeat_capacity_too_big", "worker", "worker", "HEARTBEAT", {"capacity": 5000, "running": 0},
            "capacity", "capacity is at most 4096.")
bad_request("stats_worker_missing_model", "client", "broker", "STATS", {
    "workers": [{"capacity": 1, "in_flight": 0, "heartbeat_age_ms": 1.0}], "queues": [],
    "totals": {k: 0 for k in ("accepted", "completed", "failed", "cancelled", "rejected", "redispatched",
                              "tokens_out")},
    "clients": 0, "uptime_ms": 1.0}, "workers[0].model", "Each worker row names its model.")

doc = {"protocol": "SMQ/1", "vectors": vectors}
names = [v["name"] for v in vectors]
assert len(names) == len(set(names)), "vector names are unique"
out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "vectors.json")
with open(out, "w", encoding="utf-8") as f:
    json.dump(doc, f, indent=2, ensure_ascii=False)
    f.write("\n")
if "--fuzz-corpus" in sys.argv:
    corpus = sys.argv[sys.argv.index("--fuzz-corpus") + 1]
    os.makedirs(corpus, exist_ok=True)
    for v in vectors:
        if v["valid"]:
            fr = [bytes.fromhex(x) for x in v["frames"]]
            seed = bytes([len(fr)]) + b"".join(struct.pack(">H", len(x)) + x for x in fr[:-1]) + fr[-1]
            with open(os.path.join(corpus, v["name"]), "wb") as f:
                f.write(seed)
print(f"{out}: {len(vectors)} vectors ({sum(v['valid'] for v in vectors)} valid)", file=sys.stderr)
