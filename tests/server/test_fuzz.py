"""A seeded protocol fuzz of the real server process, over real WebSocket connections.

Eight sessions (``SESSIONS``) each send their share of generated client messages at once, while a
ninth task opens dedicated connections for the cases that must close (1007, 1009, 1002). The
messages are a function of the seed only (each session draws from its own ``random.Random``);
the server's timing is not, so every assertion is about properties, never about exact replies:

* the server process stays alive and logs no traceback, and nothing but JSON lines;
* every text reply is strict JSON (no NaN) with a documented ``type`` and fields, every ``error``
  has a documented ``code``, and none says synthesis failed (``worker_died``, ``backend_error``,
  ``internal_error``, ``unavailable``): client input must not break a worker;
* every audio frame has the documented header and size; its sequence never goes back, and on a
  session's own stream a gap only follows the ``overrun`` or ``cancelled`` that announces it;
* a fuzzed session is never closed by the server (but after ``session_ended`` or ``idle_timeout``),
  the server keeps answering pings, and the dedicated cases get their close codes (never 1011); a
  session the server did close is then replayed message by message on new connections, to name
  the message that closes it;
* afterwards the fuzzed sessions and a fresh one still synthesize (continuous frames, then
  ``utterance.end``), ``/healthz`` answers 200 within 2 s and ``/metrics`` has a finite
  ``tts_end_to_end_latency_ms_sum``.

Short form (CI): ``pytest tests/server/test_fuzz.py`` (>= 10 000 messages). Long form:
``RINGAUDIO_LONG=1 pytest tests/server/test_fuzz.py`` (>= 100 000). ``RINGAUDIO_FUZZ_SEED=<int>``
replays another seed (the seed is in every failure message); ``RINGAUDIO_FUZZ_CATEGORIES=numbers,strings``
fuzzes with some categories only (see ``CATEGORIES``), to attribute a failure.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import math
import os
import random
import re
import struct
import time
import urllib.request
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from ringaudio import config as config_mod
from ringaudio import wire as P

from ..conftest import long_runs
from .conftest import ServerProcess, start

SEED = int(os.environ.get("RINGAUDIO_FUZZ_SEED", "20260509"))
SESSIONS = 8
MESSAGES = 100_000 if long_runs() else 10_000
TIME_BOUND_S = 900.0 if long_runs() else 40.0  # the fuzz phase; a server that keeps up needs a fraction
PING_EVERY = 32  # messages between pings: a bound on the backlog, and a liveness check
PING_TIMEOUT_S = 10.0

# docs/protocol.md
EVENT_FIELDS: dict[str, set[str]] = {
    "session": {"session_id", "listen_key", "sample_rate", "channels", "format", "frame_samples", "frame_ms"},
    "queued": {"utterance_id", "request_id"},
    "utterance.start": {"utterance_id", "request_id"},
    "utterance.end": {"utterance_id", "request_id", "frames", "duration_ms", "last_sequence"},
    "paused": {"sequence"},
    "resumed": {"sequence"},
    "cancelled": {"last_sequence", "next_sequence"},
    "overrun": {"expected", "received", "lost"},
    "listening": {"session_id", "sequence"},
    "error": {"code", "message"},
}
ERROR_CODES = {
    "invalid_json",
    "invalid_message",
    "unknown_type",
    "missing_field",
    "invalid_field",
    "invalid_text",
    "text_too_long",
    "queue_full",
    "already_paused",
    "not_paused",
    "binary_not_supported",
    "listen_refused",
    "listener",
    "session_ended",
    "worker_died",
    "backend_error",
    "ring_closed",
    "internal_error",
    "unavailable",
    "too_many_sessions",
    "idle_timeout",
}
# documented, but client input must never cause them against a healthy synthetic backend
FAILURE_CODES = {"worker_died", "backend_error", "internal_error", "unavailable"}
# 1000 normal, 1001 going away, 1007 not UTF-8, 1008 a client that does not read, 1009 too big, 1013 too
# many sessions (docs); 1002 is the WebSocket library's for bad framing. 1011 (internal error) is
# documented too, but no client message may cause it.
CLOSE_CODES = {1000, 1001, 1002, 1007, 1008, 1009, 1013}
ENDING_ERRORS = {"session_ended", "idle_timeout"}  # the server then closes the connection with 1000


def _server_config() -> Any:
    configs = Path("configs")
    return config_mod.load(configs if configs.is_dir() else None, dict(os.environ))


MAX_BYTES: int = _server_config().server.max_message_bytes  # 65 536 by default


# -- building messages ----------------------------------------------------------------------------


class Raw(str):
    """A token written into the JSON as is (NaN, 1e400, an integer of 5 000 digits, ...)."""


class Pairs(list):  # type: ignore[type-arg]
    """An object given as (key, value) pairs: keys may repeat."""


_SURROGATE = re.compile("[\ud800-\udfff]")


def enc_str(s: str) -> str:
    """A JSON string literal, UTF-8 as is, lone surrogates as ``\\udXXX`` escapes (the client library
    cannot send them raw, and the server must still refuse them)."""
    return _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", json.dumps(s, ensure_ascii=False))


def enc(value: Any) -> str:
    if isinstance(value, Raw):
        return str(value)
    if isinstance(value, str):
        return enc_str(value)
    if isinstance(value, Pairs):
        return "{" + ",".join(f"{enc_str(k)}:{enc(v)}" for k, v in value) + "}"
    if isinstance(value, dict):
        return "{" + ",".join(f"{enc_str(k)}:{enc(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(enc(v) for v in value) + "]"
    return json.dumps(value)


def nbytes(msg: str | bytes) -> int:
    return len(msg) if isinstance(msg, bytes) else len(msg.encode())


@dataclass
class Ctx:
    """What a message may refer to, known only when it is sent (session ids are the server's)."""

    own: tuple[str, str]
    peers: list[tuple[str, str] | None]
    last_seq: int | None

    def peer(self, k: int) -> tuple[str, str]:
        return self.peers[k % len(self.peers)] or self.own


Part = str | bytes | float | Callable[[Ctx], str]  # a float: pause that long; "\0reconnect": a new session
RECONNECT = "\0reconnect"

SHORT_TEXTS = ["Hi.", "Okay.", "Yes, go on.", "One two three.", "Good morning.", "Stop here.", "Short one.", "Ready?"]
TYPES = ["synthesize", "control", "flow_control", "cancel", "ack", "listen"]
WEIRD_NUMBERS = [
    "NaN",
    "Infinity",
    "-Infinity",
    "-0",
    "-0.0",
    "0e0",
    "1e400",
    "-1e400",
    "1e-400",
    "1E+2",
    "1e99999999999999999999",
    "9223372036854775807",
    "9223372036854775808",
    "18446744073709551615",
    "18446744073709551616",
    "-9223372036854775809",
    "-1",
    "1.5",
    "3.0",
    "1" + "0" * 400,  # an int whose float() overflows
    "1" + "0" * 4299,  # 4 300 digits: the most json.loads accepts
    "1" + "0" * 4300,
    "1" + "0" * 4999,  # 5 000 digits
    "-" + "9" * 5000,
    "1." + "0" * 5000,
    "0." + "0" * 4999 + "1",
]
STRINGS = [
    "\ud800",
    "\udfff",
    "a\ud800b",
    "\udc00\ud800",
    "\ud83d\ude00",
    "\U0001f600",
    "\x00",
    "nul\x00inside",
    "\x1b[31mred",
    "\u202eevil",
    "\ufeff",
    "\uffff",
    "\U0010ffff",
    "",
    " ",
    "\n",
    "\t\r",
    "é",
    "ключ",
    "../../etc/passwd",
    "%s%s%n",
    "{}",
    "null",
    "synthesize",
]
WRONG_VALUES: list[Any] = [
    None,
    True,
    False,
    0,
    1,
    -1,
    1.5,
    -0.0,
    "",
    " ",
    "x",
    [],
    [1],
    {},
    {"a": 1},
    [None],
    {"text": "Hi."},
    "pause",
    "synthesize",
    2**53 + 1,
    -(2**63),
    2**64,
]
TYPE_VARIANTS = [
    "Synthesize",
    "SYNTHESIZE",
    " synthesize",
    "synthesize ",
    "synthesize\x00",
    "flow-control",
    "control.pause",
    "pause",
    "session",
    "queued",
    "error",
    "utterance.end",
    "listening",
    "",
    "\ud800",
    "x" * 1000,
]
EXTRA_KEYS = ["extra", "__proto__", "constructor", "type ", "", "\ud800", "TEXT", "sequence", "k" * 300]


def random_id(rng: random.Random) -> str:
    return rng.randbytes(8).hex()


def valid(rng: random.Random, kind: str) -> dict[str, Any]:
    if kind == "synthesize":
        msg: dict[str, Any] = {"type": "synthesize", "text": rng.choice(SHORT_TEXTS)}
        if rng.random() < 0.3:
            msg["request_id"] = f"r{rng.randrange(10_000)}"
        if rng.random() < 0.1:
            msg["voice"] = "en"
        return msg
    if kind in ("control", "flow_control"):
        return {"type": kind, "action": rng.choice(["pause", "resume"])}
    if kind == "cancel":
        return {"type": "cancel"}
    if kind == "ack":
        return {"type": "ack", "sequence": rng.randrange(500), "buffered_ms": rng.choice([0, 40, 100.5])}
    return {"type": "listen", "session_id": random_id(rng), "key": base64.urlsafe_b64encode(rng.randbytes(16)).decode()}


def fit(build: Callable[[int], str], n: int, per_char: int) -> str:
    """``build(n)``, with ``n`` cut so that the message stays within MAX_BYTES."""
    msg = build(n)
    over = nbytes(msg) - MAX_BYTES
    if over > 0:
        msg = build(max(0, n - (over + per_char - 1) // per_char))
    assert nbytes(msg) <= MAX_BYTES
    return msg


# -- the categories ---------------------------------------------------------------------------------


def gen_interleave(rng: random.Random) -> list[Part]:
    """Hostile orders of mostly valid commands: pause/resume/cancel/synthesize/listen/ack, random and
    real session ids, bursts, short waits, and now and then a new session."""
    parts: list[Part] = []
    for _ in range(rng.choice([1, 1, 1, 2, 3, 5, 8])):
        r = rng.random()
        if r < 0.22:
            parts.append(json.dumps(valid(rng, "synthesize")))
        elif r < 0.44:
            parts.append(
                json.dumps({"type": rng.choice(["control", "flow_control"]), "action": rng.choice(["pause", "resume"])})
            )
        elif r < 0.58:
            parts.append('{"type":"cancel"}')
        elif r < 0.76:
            which = rng.choice(["recent", "recent", "recent", "zero", "future"])
            buffered = rng.choice([None, 0, 40, 12.5, 250])

            def ack(ctx: Ctx, which: str = which, buffered: float | None = buffered) -> str:
                seq = {"recent": ctx.last_seq or 0, "zero": 0, "future": (ctx.last_seq or 0) + 1000}[which]
                return json.dumps({"type": "ack", "sequence": seq, "buffered_ms": buffered})

            parts.append(ack)
        elif r < 0.91:
            target = rng.choices(
                ["own_real", "own_wrong", "peer_wrong", "peer_real", "random", "empty"], [10, 10, 30, 3, 20, 5]
            )[0]
            k = rng.randrange(SESSIONS)
            wrong = base64.urlsafe_b64encode(rng.randbytes(16)).decode()
            rid = random_id(rng)

            def listen(ctx: Ctx, target: str = target, k: int = k, wrong: str = wrong, rid: str = rid) -> str:
                sid, key = {
                    "own_real": ctx.own,
                    "own_wrong": (ctx.own[0], wrong),
                    "peer_wrong": (ctx.peer(k)[0], wrong),
                    "peer_real": ctx.peer(k),
                    "random": (rid, wrong),
                    "empty": ("", ""),
                }[target]
                return json.dumps({"type": "listen", "session_id": sid, "key": key})

            parts.append(listen)
        elif r < 0.97:
            parts.extend(storm(rng))
        elif r < 0.99:
            parts.append(rng.choice([0.02, 0.05, 0.1, 0.2]))
        else:
            parts.append(RECONNECT)
    return parts


def storm(rng: random.Random) -> list[Part]:
    """Rounds of synthesize bursts, each ended by a cancel: jobs and cancels to the workers as fast as
    the socket takes them, with request_ids up to the longest allowed (128) or far longer."""
    rid = "q" * rng.choice([8, 128, 128, 65_000])
    burst = json.dumps({"type": "synthesize", "text": rng.choice(SHORT_TEXTS), "request_id": rid})
    parts: list[Part] = []
    for _ in range(rng.randint(1, 8)):
        parts.extend([burst] * rng.randint(2, 8))
        parts.append('{"type":"cancel"}')
    return parts


def gen_fields(rng: random.Random) -> list[Part]:
    """Every message type with missing, wrong-typed, null, extra and renamed fields."""
    msg: dict[str, Any] = valid(rng, rng.choice(TYPES))
    for _ in range(rng.choice([1, 1, 2, 3])):
        r = rng.random()
        keys = list(msg)
        if r < 0.2 and keys:
            del msg[rng.choice(keys)]
        elif r < 0.55 and keys:
            msg[rng.choice(keys)] = rng.choice(WRONG_VALUES)
        elif r < 0.75:
            msg[rng.choice(EXTRA_KEYS)] = rng.choice(WRONG_VALUES + STRINGS)
        elif r < 0.85:
            msg["type"] = rng.choice(TYPE_VARIANTS)
        elif r < 0.92:
            msg["action"] = rng.choice(["Pause", "pause ", "PAUSE", "stop", "play", "", "resume\x00", "pause,resume"])
        else:
            for name in ("text", "action", "sequence", "session_id", "key", "voice", "request_id"):
                msg[name] = None  # every field null
    r = rng.random()
    if r < 0.05:
        return [enc([msg])]
    if r < 0.1:
        return [enc({"message": msg})]
    return [enc(msg)]


def gen_numbers(rng: random.Random) -> list[Part]:
    """Huge, non-finite, negative-zero and 5 000-digit numbers in every field (and in extra ones)."""
    w = Raw(rng.choice(WEIRD_NUMBERS))
    r = rng.random()
    if r < 0.35:  # an ack of a frame really sent, so the value reaches the latency metric

        def ack(ctx: Ctx, w: Raw = w) -> str:
            return enc({"type": "ack", "sequence": ctx.last_seq or 0, "buffered_ms": w})

        return [ack]
    if r < 0.5:
        return [enc({"type": "ack", "sequence": w, "buffered_ms": 40})]
    kind = rng.choice(TYPES)
    msg: dict[str, Any] = valid(rng, kind)
    if r < 0.75 and len(msg) > 1:
        msg[rng.choice([k for k in msg if k != "type"])] = w
    elif r < 0.9:
        msg[rng.choice(EXTRA_KEYS)] = w
    else:
        msg["type"] = w
    return [enc(msg)]


def gen_strings(rng: random.Random) -> list[Part]:
    """Lone surrogates, control characters and very long strings (65 000 characters) in every string
    field: text, voice, request_id, action, session_id, key, type, extra keys."""
    kind = rng.choice(["synthesize", "synthesize", "synthesize", "control", "listen", "other"])
    long = rng.random() < 0.25
    if long:
        filler, per_char = rng.choice([("r", 1), ("é", 2), ("\u20ac", 3), ("\U0001f600", 4), ("\ud800", 6)])
        n = rng.choice([129, 1000, 5001, 32_768, 65_000])
    else:
        weird = rng.choice(STRINGS)
    if kind == "synthesize":
        name = rng.choice(["text", "text", "voice", "request_id"])
        base = valid(rng, "synthesize")
    elif kind == "control":
        name, base = "action", {"type": rng.choice(["control", "flow_control"]), "action": "pause"}
    elif kind == "listen":
        name, base = rng.choice(["session_id", "key"]), valid(rng, "listen")
    else:
        name = rng.choice(["type", *EXTRA_KEYS[:3]])
        base = valid(rng, rng.choice(TYPES))
    text = base.get("text", "Hi.")
    prefix_weird = rng.random() < 0.5

    def build(n: int) -> str:
        value = filler * n if long else weird
        if name == "text" and not long:
            value = f"{value} {text}" if prefix_weird else f"{text} {value}"  # reaches the worker if let in
        return enc({**base, name: value})

    if long:
        return [fit(build, n, per_char)]
    return [build(0)]


def gen_structure(rng: random.Random) -> list[Part]:
    """Not JSON, JSON that is not an object, empty objects, arrays, nulls, duplicate keys, deep
    nesting (up to the 32 767 levels that fit in a message), truncated messages."""
    r = rng.random()
    if r < 0.3:
        return [
            rng.choice(
                [
                    "",
                    " ",
                    "\n",
                    "{",
                    "}",
                    "[",
                    "null",
                    "true",
                    "0",
                    "-0",
                    "NaN",
                    '"synthesize"',
                    "[]",
                    "{}",
                    "[{}]",
                    '[{"type":"cancel"}]',
                    '{"type":null}',
                    '{"type":["synthesize"]}',
                    '{"type":{"type":"cancel"}}',
                    '{"type":"cancel"} {"type":"cancel"}',
                    '{"type":"cancel"}garbage',
                    "\ufeff" + '{"type":"cancel"}',
                    '{"type":"cancel",}',
                    "{'type':'cancel'}",
                    '{"type":"cancel" /* c */}',
                    '{"type":"synthesize","text":"Hi.\x00"}',
                    '{"type":"synthesize","text":"line\nbreak"}',
                    '{"type":"cancel"}\x00',
                    '{"type":"ack","sequence":0x10}',
                    '{"type":"ack","sequence":01}',
                    '{"type":"ack","sequence":+1}',
                    '{"type":"ack","sequence":.5}',
                ]
            )
        ]
    if r < 0.45:
        pairs = Pairs([("type", rng.choice(TYPES)), ("type", rng.choice(TYPES + TYPE_VARIANTS))])
        pairs.append((rng.choice(["text", "action", "sequence"]), rng.choice(WRONG_VALUES)))
        rng.shuffle(pairs)
        return [enc(pairs)]
    if r < 0.7:
        depth = rng.choice([10, 100, 1000, 5000, 10_000, 32_767])
        shape = rng.choice(["array", "object", "in_field", "unclosed"])
        if shape == "array":
            return ["[" * depth + "]" * depth]
        if shape == "object":
            depth = min(depth, (MAX_BYTES - 1) // 6)
            return ['{"a":' * depth + "1" + "}" * depth]
        if shape == "in_field":
            head = '{"type":"synthesize","text":"Hi.","voice":'
            depth = min(depth, (MAX_BYTES - len(head) - 1) // 2)
            return [head + "[" * depth + "]" * depth + "}"]
        return ["[" * min(MAX_BYTES, 2 * depth)]
    if r < 0.85:
        whole = enc(valid(rng, rng.choice(TYPES)))
        return [whole[: rng.randrange(len(whole))]]
    alphabet = '{}[]":,0123456789.eE+-truefalsn \\u' + "abcdef"
    return ["".join(rng.choice(alphabet) for _ in range(rng.randrange(1, 200)))]


def gen_binary(rng: random.Random) -> list[Part]:
    """Binary messages: random bytes, invalid UTF-8, JSON sent as binary, a frame header."""
    r = rng.random()
    if r < 0.5:
        return [rng.randbytes(rng.choice([0, 1, 2, 23, 24, 25, 1944, rng.randrange(4096)]))]
    if r < 0.7:
        return [rng.choice([b"\xff", b"\xc0\xaf", b"\xed\xa0\x80", b"\xe2\x82", b"\xf4\x90\x80\x80", b"\x80" * 100])]
    if r < 0.9:
        return [enc(valid(rng, rng.choice(TYPES))).encode()]
    if r < 0.98:
        return [P.encode_header(rng.randrange(2**32), rng.randrange(2**40), 1, 3) + rng.randbytes(1920)]
    return [rng.randbytes(MAX_BYTES)]


def gen_sizes(rng: random.Random) -> list[Part]:
    """Messages of exactly max_message_bytes or one byte less (ASCII or multi-byte): they must work."""
    size = MAX_BYTES - rng.choice([0, 0, 1])
    filler = rng.choice(["x", "é", "\u20ac", "\U0001f600"])
    r = rng.random()
    if r < 0.5:
        head, tail = '{"type":"cancel","pad":"', '"}'
    elif r < 0.8:
        head, tail = '{"type":"synthesize","text":"', '"}'  # text_too_long
    else:
        return [rng.randbytes(size)]
    room = size - len(head) - len(tail)
    body = filler * (room // len(filler.encode()))
    body += "y" * (room - len(body.encode()))
    msg = head + body + tail
    assert nbytes(msg) == size
    return [msg]


CATEGORIES: dict[str, tuple[float, Callable[[random.Random], list[Part]]]] = {
    "interleave": (30, gen_interleave),
    "fields": (20, gen_fields),
    "numbers": (12, gen_numbers),
    "strings": (12, gen_strings),
    "structure": (12, gen_structure),
    "binary": (10, gen_binary),
    "sizes": (2, gen_sizes),
}


def selected_categories() -> list[str]:
    wanted = [c.strip() for c in os.environ.get("RINGAUDIO_FUZZ_CATEGORIES", "").split(",") if c.strip()]
    unknown = set(wanted) - set(CATEGORIES)
    assert not unknown, f"unknown fuzz categories {sorted(unknown)}; known: {sorted(CATEGORIES)}"
    return wanted or list(CATEGORIES)


def describe(msg: str | bytes) -> str:
    text = repr(msg)
    return text if len(text) <= 160 else f"{text[:150]}… ({nbytes(msg)} bytes)"


# -- a raw WebSocket client, for what the library will not send ---------------------------------------

MASK = b"\x37\xfa\x21\x3d"


def ws_frame(opcode: int, payload: bytes, *, fin: bool = True, masked: bool = True, rsv: int = 0) -> bytes:
    head = bytes([(0x80 if fin else 0) | rsv << 4 | opcode])
    n = len(payload)
    bit = 0x80 if masked else 0
    if n < 126:
        head += bytes([bit | n])
    elif n < 1 << 16:
        head += bytes([bit | 126]) + struct.pack("!H", n)
    else:
        head += bytes([bit | 127]) + struct.pack("!Q", n)
    if not masked:
        return head + payload
    return head + MASK + bytes(b ^ MASK[i % 4] for i, b in enumerate(payload))


class RawWS:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> RawWS:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert head.startswith(b"HTTP/1.1 101"), head
        raw = cls(reader, writer)
        opcode, payload = await raw.frame()
        assert opcode == 1 and json.loads(payload)["type"] == "session"
        return raw

    async def frame(self) -> tuple[int, bytes]:
        b0, b1 = await self.reader.readexactly(2)
        n = b1 & 0x7F
        if n == 126:
            (n,) = struct.unpack("!H", await self.reader.readexactly(2))
        elif n == 127:
            (n,) = struct.unpack("!Q", await self.reader.readexactly(8))
        return b0 & 0x0F, await self.reader.readexactly(n)

    async def outcome(self, timeout: float = 10.0) -> tuple[str, Any]:
        """("closed", code or None for no close frame) or ("reply", the first text event)."""
        try:
            async with asyncio.timeout(timeout):
                while True:
                    opcode, payload = await self.frame()
                    if opcode == 8:
                        code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
                        with contextlib.suppress(OSError, TimeoutError):
                            self.writer.write(ws_frame(8, payload[:2]))
                        return "closed", code
                    if opcode == 1:
                        return "reply", json.loads(payload)
        except (asyncio.IncompleteReadError, ConnectionError):
            return "closed", None
        except TimeoutError:
            return "timeout", None

    async def close(self) -> None:
        with contextlib.suppress(OSError, TimeoutError):
            self.writer.close()
            await asyncio.wait_for(self.writer.wait_closed(), 2)


# -- the cases that get a dedicated connection ----------------------------------------------------------


@dataclass(frozen=True)
class Case:
    name: str
    expect: str  # "closed:<code>" or "reply:<type or error code>" (one of several, "|"-separated)
    run: Callable[[ServerProcess], Awaitable[tuple[str, Any]]]

    def check(self, outcome: tuple[str, Any]) -> str | None:
        """None if ``outcome`` is what the case expects, else what went wrong."""
        kind, value = outcome
        want_kind, want = self.expect.split(":", 1)
        if kind == "reply" and isinstance(value, dict):
            got = value.get("code") if value.get("type") == "error" else value.get("type")
        else:
            got = str(value)
        if kind == want_kind and got in want.split("|"):
            return None
        return f"{self.name}: expected {self.expect}, got {kind}:{got} ({str(value)[:200]})"


def raw_case(name: str, expect: str, frames: list[bytes]) -> Case:
    async def run(srv: ServerProcess) -> tuple[str, Any]:
        raw = await RawWS.open(srv.port)
        try:
            raw.writer.write(b"".join(frames))
            await raw.writer.drain()
            return await raw.outcome()
        finally:
            await raw.close()

    return Case(name, expect, run)


def lib_case(name: str, expect: str, message: str | bytes | list[str]) -> Case:
    async def run(srv: ServerProcess) -> tuple[str, Any]:
        async with connect(srv.url, max_size=None, proxy=None, ping_interval=None, open_timeout=10) as ws:
            await ws.recv()
            try:
                await ws.send(message)
                async with asyncio.timeout(10):
                    while True:
                        reply = await ws.recv()
                        if isinstance(reply, str):
                            return "reply", json.loads(reply)
            except ConnectionClosed as closed:
                return "closed", closed.rcvd.code if closed.rcvd else None
            except TimeoutError:
                return "timeout", None

    return Case(name, expect, run)


def _exact(size: int, filler: str, head: str = '{"type":"cancel","pad":"', tail: str = '"}') -> str:
    room = size - len(head) - len(tail)
    body = filler * (room // len(filler.encode()))
    body += "y" * (room - len(body.encode()))
    msg = head + body + tail
    assert nbytes(msg) == size
    return msg


def _fragments(total: int) -> list[str]:
    msg = _exact(total, "x")
    return [msg[i : i + 16_384] for i in range(0, len(msg), 16_384)]


TEXT, CONT = 1, 0
CLOSE_CASES: list[Case] = [
    # invalid UTF-8 in text frames: the client library cannot send these, a raw socket can
    raw_case("utf8-byte-ff", "closed:1007", [ws_frame(TEXT, b"\xff")]),
    raw_case("utf8-overlong", "closed:1007", [ws_frame(TEXT, b'{"type":"cancel","x":"\xc0\xaf"}')]),
    raw_case(
        "utf8-surrogate-in-text", "closed:1007", [ws_frame(TEXT, b'{"type":"synthesize","text":"Hi \xed\xa0\x80."}')]
    ),
    raw_case("utf8-truncated", "closed:1007", [ws_frame(TEXT, b'{"type":"synthesize","text":"\xe2\x82"}')]),
    raw_case("utf8-above-10ffff", "closed:1007", [ws_frame(TEXT, b"\xf4\x90\x80\x80")]),
    raw_case(
        "utf8-invalid-in-continuation",
        "closed:1007",
        [ws_frame(TEXT, b'{"type":"cancel",', fin=False), ws_frame(CONT, b'"x":"\xff"}')],
    ),
    raw_case(
        "utf8-bad-char-across-fragments",
        "closed:1007",
        [ws_frame(TEXT, b'{"type":"cancel","x":"\xe2', fin=False), ws_frame(CONT, b'\x28\xa1"}')],
    ),
    raw_case(  # valid UTF-8 split inside a character must be put together, not refused
        "utf8-valid-char-across-fragments",
        "reply:invalid_field",
        [ws_frame(TEXT, b'{"type":"ack","sequence":"\xc3', fin=False), ws_frame(CONT, b'\xa9"}')],
    ),
    # bad framing: the library's 1002
    raw_case("frame-unmasked", "closed:1002", [ws_frame(TEXT, b'{"type":"cancel"}', masked=False)]),
    raw_case("frame-rsv1-without-extension", "closed:1002", [ws_frame(TEXT, b'{"type":"cancel"}', rsv=4)]),
    raw_case("frame-reserved-opcode", "closed:1002", [ws_frame(3, b"x")]),
    raw_case("frame-continuation-first", "closed:1002", [ws_frame(CONT, b'{"type":"cancel"}')]),
    raw_case("frame-long-ping", "closed:1002", [ws_frame(9, b"p" * 126)]),
    raw_case("frame-fragmented-ping", "closed:1002", [ws_frame(9, b"p", fin=False)]),
    # sizes around max_message_bytes: just under works, just over closes with 1009
    lib_case("size-max-ascii", "reply:cancelled", _exact(MAX_BYTES, "x")),
    lib_case("size-max-2-byte-chars", "reply:cancelled", _exact(MAX_BYTES, "é")),
    lib_case("size-max-4-byte-chars", "reply:cancelled", _exact(MAX_BYTES, "\U0001f600")),
    lib_case("size-max-fragmented", "reply:cancelled", _fragments(MAX_BYTES)),
    lib_case("size-max-binary", "reply:binary_not_supported", b"\0" * MAX_BYTES),
    lib_case(
        "size-max-text-too-long",
        "reply:text_too_long",
        _exact(MAX_BYTES, "x", '{"type":"synthesize","text":"'),
    ),
    lib_case("size-max-nesting", "reply:invalid_json|invalid_message", "[" * (MAX_BYTES // 2) + "]" * (MAX_BYTES // 2)),
    lib_case("size-over-ascii", "closed:1009", _exact(MAX_BYTES + 1, "x")),
    lib_case("size-over-bytes-not-chars", "closed:1009", _exact(MAX_BYTES + 1, "\u20ac")),
    lib_case("size-over-fragmented", "closed:1009", _fragments(MAX_BYTES + 1)),
    lib_case("size-over-binary", "closed:1009", b"\0" * (MAX_BYTES + 1)),
    lib_case("size-over-nesting-100000", "closed:1009", "[" * 100_000 + "]" * 100_000),
    lib_case("size-over-1mb", "closed:1009", _exact(1 << 20, "x")),
]


@pytest.mark.parametrize("case", CLOSE_CASES, ids=[c.name for c in CLOSE_CASES])
def test_dedicated_connection_cases(server: ServerProcess, case: Case) -> None:
    outcome = asyncio.run(asyncio.wait_for(case.run(server), 30))
    assert case.check(outcome) is None, case.check(outcome)
    assert server.proc.poll() is None


# -- the fuzz -----------------------------------------------------------------------------------------


@dataclass(eq=False)
class Conn:
    index: int
    ws: ClientConnection
    session: dict[str, Any]
    frame_bytes: int
    last_seq: int | None = None
    listening: bool = False
    ended: bool = False  # session_ended or idle_timeout: the server closes it (1000)
    next_ok: set[int] = field(default_factory=set)  # where an overrun or a cancelled said the stream goes on
    closing: bool = False  # we close it
    watch: asyncio.Queue[tuple[str, Any]] | None = None
    reader: asyncio.Task[None] | None = None


def _strict(token: str) -> Any:
    raise ValueError(f"{token} is not JSON")


class Fuzz:
    def __init__(self, srv: ServerProcess, seed: int, total: int, categories: list[str], bound_s: float) -> None:
        self.srv, self.seed, self.categories = srv, seed, categories
        self.share = -(-total // SESSIONS)
        self.bound_s = bound_s
        self.weights = [CATEGORIES[c][0] for c in categories]
        self.problems: dict[str, list[str]] = {}
        self.counts: Counter[str] = Counter()
        self.sent: Counter[str] = Counter()
        self.replies: Counter[str] = Counter()
        self.codes: Counter[str] = Counter()
        self.closes: Counter[str] = Counter()
        self.peers: list[tuple[str, str] | None] = [None] * SESSIONS
        self.history: list[deque[tuple[str, str | bytes]]] = [deque(maxlen=64) for _ in range(SESSIONS)]
        self.suspects: list[tuple[int | None, list[tuple[str, str | bytes]]]] = []  # closes to attribute
        self.conns: list[Conn | None] = [None] * SESSIONS
        self.stop = False
        self.deadline = 0.0
        self.elapsed = 0.0

    def problem(self, key: str, detail: str) -> None:
        self.counts[key] += 1
        examples = self.problems.setdefault(key, [])
        if len(examples) < 3:
            examples.append(detail)

    def recent(self, i: int, n: int = 5) -> str:
        return self.recent_of(list(self.history[i]), n)

    # -- connections ----------------------------------------------------------------------------------
    async def open(self, i: int) -> Conn:
        ws = await connect(self.srv.url, proxy=None, ping_interval=None, open_timeout=10, max_size=None)
        first = json.loads(await asyncio.wait_for(ws.recv(), 10))
        if first.get("type") != "session":
            await ws.close()
            raise RuntimeError(f"first message is not a session: {first}")
        self.check_event(first, None, i)
        conn = Conn(i, ws, first, P.HEADER_SIZE + first["frame_samples"] * first["channels"] * 2)
        conn.reader = asyncio.create_task(self.read(conn))
        self.peers[i] = (first["session_id"], first["listen_key"])
        self.conns[i] = conn
        return conn

    async def read(self, conn: Conn) -> None:
        i = conn.index
        try:
            async for msg in conn.ws:
                if isinstance(msg, bytes):
                    self.check_frame(conn, msg)
                else:
                    self.check_text(conn, msg)
        except ConnectionClosed:
            pass
        except Exception as exc:
            self.problem("the client's reader failed", f"{exc!r} after {self.recent(i)}")
        if conn.closing:
            return
        rcvd = conn.ws.protocol.close_rcvd
        code = rcvd.code if rcvd is not None else None
        reason = rcvd.reason if rcvd is not None else ""
        self.closes[str(code)] += 1
        if code not in CLOSE_CODES:
            self.problem(
                f"close code {code} (undocumented)", f"reason {reason!r}; session {i} had sent {self.recent(i)}"
            )
        elif not (code == 1000 and conn.ended):
            self.problem(
                f"server closed a fuzzed session with {code}", f"reason {reason!r}; last sent: {self.recent(i)}"
            )
        else:
            return
        self.suspects.append((code, list(self.history[i])))

    def check_text(self, conn: Conn, raw: str) -> None:
        try:
            ev = json.loads(raw, parse_constant=_strict)
        except ValueError as exc:
            self.problem("a reply is not strict JSON", f"{exc}: {raw[:200]!r}")
            return
        self.check_event(ev, conn, conn.index)
        if not isinstance(ev, dict):
            return
        kind = ev.get("type")
        if kind == "error" and ev.get("code") in ENDING_ERRORS:
            conn.ended = True
        elif kind == "overrun" and isinstance(ev.get("received"), int):
            conn.next_ok.add(ev["received"])
        elif kind == "cancelled" and isinstance(ev.get("next_sequence"), int):
            conn.next_ok.add(ev["next_sequence"])
        elif kind == "listening":
            conn.listening = True
            conn.last_seq = None  # another stream's sequence from here on
        if conn.watch is not None:
            conn.watch.put_nowait(("event", ev))

    def check_event(self, ev: Any, conn: Conn | None, i: int) -> None:
        if not isinstance(ev, dict) or ev.get("type") not in EVENT_FIELDS:
            self.problem("a reply with an undocumented type", str(ev)[:200])
            return
        kind = ev["type"]
        self.replies[kind] += 1
        missing = EVENT_FIELDS[kind] - set(ev)
        if missing:
            self.problem(f"a {kind} event without {sorted(missing)}", str(ev)[:200])
        if kind == "overrun" and ev.get("lost") != ev.get("received", 0) - ev.get("expected", 0):
            self.problem("an overrun whose lost != received - expected", str(ev)[:200])
        if kind == "error":
            code = ev.get("code")
            self.codes[str(code)] += 1
            if code not in ERROR_CODES:
                self.problem(f"error code {code!r} (undocumented)", f"{str(ev)[:200]} after {self.recent(i)}")
            elif code in FAILURE_CODES:
                self.problem(f"error {code} (synthesis failed)", f"{str(ev)[:300]}; last sent: {self.recent(i)}")

    def check_frame(self, conn: Conn, raw: bytes) -> None:
        self.replies["frame"] += 1
        if len(raw) != conn.frame_bytes:
            self.problem("a frame of the wrong size", f"{len(raw)} bytes, not {conn.frame_bytes}")
        try:
            h = P.decode_header(raw)
        except P.ProtocolError as exc:
            self.problem("a frame with a bad header", str(exc))
            return
        last = conn.last_seq
        if last is not None and h.sequence <= last:
            self.problem("a frame sequence went back or repeated", f"{h.sequence} after {last}")
        elif last is not None and h.sequence != last + 1 and h.sequence not in conn.next_ok and not conn.listening:
            self.problem(  # docs: a gap only ever follows an overrun or a cancelled that says where it goes on
                "a gap in the frame sequence that no overrun or cancelled accounts for",
                f"{h.sequence} after {last} (announced {sorted(conn.next_ok)}); last sent: {self.recent(conn.index)}",
            )
        conn.last_seq = h.sequence
        conn.next_ok = {n for n in conn.next_ok if n > h.sequence}
        if conn.watch is not None:
            conn.watch.put_nowait(("frame", h))

    # -- the senders ----------------------------------------------------------------------------------
    async def session(self, i: int) -> None:
        rng = random.Random(f"{self.seed}:{i}")
        hist = self.history[i]
        conn: Conn | None = None
        n = since_ping = 0
        while n < self.share and not self.stop:
            if time.monotonic() > self.deadline:
                return
            category = rng.choices(self.categories, self.weights)[0]
            parts = CATEGORIES[category][1](rng)
            for part in parts:
                if conn is None or conn.reader is None or conn.reader.done():
                    try:
                        conn = await self.open(i)
                    except Exception as exc:
                        self.problem("a session could not connect", f"{exc!r}")
                        self.stop = True
                        return
                if isinstance(part, float):
                    await asyncio.sleep(part)
                    continue
                if part == RECONNECT:
                    hist.append(("new session", ""))
                    await self.close(conn)
                    conn = None
                    continue
                ctx = Ctx(self.peers[i] or ("", ""), self.peers, conn.last_seq)
                msg = part(ctx) if callable(part) else part
                hist.append((category, msg))
                try:
                    await conn.ws.send(msg)
                except ConnectionClosed:
                    if conn.reader is not None:
                        await asyncio.wait({conn.reader}, timeout=5)  # it records the close
                    conn = None
                    continue
                n += 1
                since_ping += 1
                self.sent[category] += 1
            if since_ping >= PING_EVERY and conn is not None:
                since_ping = 0
                try:
                    pong = await conn.ws.ping()
                    await asyncio.wait_for(pong, PING_TIMEOUT_S)
                except ConnectionClosed:
                    pass
                except TimeoutError:
                    self.problem(
                        f"the server stopped answering (no pong within {PING_TIMEOUT_S:.0f} s)",
                        f"session {i}, after {self.recent(i)}",
                    )
                    self.stop = True

    async def close(self, conn: Conn) -> None:
        conn.closing = True
        with contextlib.suppress(OSError, TimeoutError):
            await asyncio.wait_for(conn.ws.close(), 5)
        if conn.reader is not None:
            await asyncio.wait({conn.reader}, timeout=5)

    async def closers(self) -> None:
        """The dedicated-connection cases, while the sessions fuzz."""
        rng = random.Random(f"{self.seed}:closers")
        rounds = 10 if long_runs() else 1
        for _ in range(rounds):
            for case in rng.sample(CLOSE_CASES, len(CLOSE_CASES)):
                if self.stop or time.monotonic() > self.deadline:
                    return
                await asyncio.sleep(rng.uniform(0.0, 0.3))
                try:
                    outcome = await asyncio.wait_for(case.run(self.srv), 30)
                except Exception as exc:
                    outcome = ("failed", repr(exc))
                self.closes[f"case:{outcome[0]}:{outcome[1] if outcome[0] != 'reply' else 'event'}"] += 1
                wrong = case.check(outcome)
                if wrong is not None:
                    self.problem(f"dedicated case {case.name}", wrong)

    # -- after the fuzz -------------------------------------------------------------------------------
    async def synthesizes(self, conn: Conn, label: str, fresh: bool) -> None:
        """The session still works: one sentence, its frames continuous, then its utterance.end."""
        queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        conn.watch = queue
        rid = f"check-{label}"
        try:
            async with asyncio.timeout(20):
                if not fresh:  # whatever state the fuzz left: not paused, nothing queued
                    await conn.ws.send('{"type":"control","action":"resume"}')
                    await conn.ws.send('{"type":"cancel"}')
                    while not ((item := await queue.get())[0] == "event" and item[1]["type"] == "cancelled"):
                        pass
                await conn.ws.send(
                    json.dumps({"type": "synthesize", "text": "One sentence to check.", "request_id": rid})
                )
                uid = None
                seqs: list[int] = []
                while True:
                    kind, value = await queue.get()
                    if kind == "frame":
                        if uid is not None and value.utterance_id == uid:
                            seqs.append(value.sequence)
                        continue
                    if value.get("request_id") != rid:
                        continue
                    if value["type"] == "queued":
                        uid = value["utterance_id"]
                    elif value["type"] == "error":
                        self.problem(f"{label}: synthesize refused", str(value)[:300])
                        return
                    elif value["type"] == "utterance.end":
                        break
            expected = list(range(seqs[0], seqs[0] + len(seqs))) if seqs else []
            if not seqs or seqs != expected or (fresh and seqs[0] != 0):
                self.problem(f"{label}: frames not continuous from {0 if fresh else 'n'}", f"{seqs[:5]}…{seqs[-5:]}")
            if value["frames"] != len(seqs) or value["last_sequence"] != (seqs[-1] if seqs else None):
                self.problem(f"{label}: utterance.end disagrees with the frames", f"{value}, {len(seqs)} frames")
        except TimeoutError:
            last = self.recent(conn.index) if not fresh else ""
            self.problem(f"{label}: no utterance.end within 20 s", f"last sent: {last}")
        except ConnectionClosed as closed:
            self.problem(f"{label}: closed while synthesizing", f"{closed!r}")
        finally:
            conn.watch = None

    async def replay(self, msg: str | bytes) -> tuple[str, Any]:
        """Send ``msg`` alone on a new connection, then a probe: ("ok", None) if the probe is answered,
        ("closed", code) if the server closed the connection first, ("timeout", None)."""
        async with connect(self.srv.url, proxy=None, ping_interval=None, open_timeout=10, max_size=None) as ws:
            await ws.recv()
            try:
                await ws.send(msg)
                await ws.send('{"type":"probe"}')
                async with asyncio.timeout(5):
                    while True:
                        reply = await ws.recv()
                        if isinstance(reply, str) and "probe" in reply and '"unknown_type"' in reply:
                            return "ok", None
            except ConnectionClosed as closed:
                return "closed", closed.rcvd.code if closed.rcvd else None
            except TimeoutError:
                return "timeout", None

    async def attribute(self) -> None:
        """Which message closed each session the server closed: replay the last ones it had sent, alone."""
        culprits: set[str] = set()
        budget = 400  # replays in all
        for code, history in self.suspects[:20]:
            candidates = [(c, m) for c, m in history if c != "new session"]
            if any(describe(m) in culprits for _, m in candidates):
                continue
            for category, msg in candidates:
                if budget <= 0:
                    return
                budget -= 1
                try:
                    outcome = await asyncio.wait_for(self.replay(msg), 15)
                except Exception as exc:
                    outcome = ("failed", repr(exc))
                if outcome[0] != "ok":
                    culprits.add(describe(msg))
                    self.problem(
                        f"this message alone makes the server close the session ({outcome[0]} {outcome[1]})",
                        f"[{category}] {describe(msg)}",
                    )
                    break
            else:
                self.problem(f"a close with {code} that no single message reproduces", self.recent_of(candidates))

    @staticmethod
    def recent_of(history: list[tuple[str, str | bytes]], n: int = 5) -> str:
        return " | ".join(f"[{c}] {describe(m)}" for c, m in history[-n:])

    async def run(self) -> None:
        t0 = time.monotonic()
        self.deadline = t0 + self.bound_s
        await asyncio.gather(*(self.session(i) for i in range(SESSIONS)), self.closers())
        self.elapsed = time.monotonic() - t0
        sent = sum(self.sent.values())
        if sent < self.share * SESSIONS and not self.stop:
            self.problem(
                "the fuzz did not finish in its time bound",
                f"{sent} of {self.share * SESSIONS} messages in {self.elapsed:.1f} s",
            )
        if self.srv.proc.poll() is not None:
            return
        live = [c for c in self.conns if c is not None and c.reader is not None and not c.reader.done()]
        if self.stop:  # the server stopped answering: what follows would only time out as well
            return
        await asyncio.gather(
            *(self.synthesizes(c, f"fuzzed session {c.index}", False) for c in live if not c.listening)
        )
        await asyncio.gather(*(self.close(c) for c in live))
        try:
            conn = await self.open(0)
        except Exception as exc:
            self.problem("a fresh session could not connect after the fuzz", repr(exc))
            return
        await self.synthesizes(conn, "fresh session", True)
        await self.close(conn)
        if self.suspects and not self.stop:
            await self.attribute()

    def http_checks(self) -> None:
        t0 = time.monotonic()
        try:
            with urllib.request.urlopen(self.srv.http + "/healthz", timeout=2) as resp:
                status, body = resp.status, resp.read().decode()
            took = time.monotonic() - t0
            if status != 200 or took > 2:
                self.problem("/healthz", f"status {status} after {took:.2f} s: {body[:200]}")
        except Exception as exc:
            self.problem("/healthz did not answer 200 within 2 s", repr(exc))
        try:
            with urllib.request.urlopen(self.srv.http + "/metrics", timeout=5) as resp:
                metrics = resp.read().decode()
        except Exception as exc:
            self.problem("/metrics did not answer", repr(exc))
            return
        for line in metrics.splitlines():
            if line.startswith("tts_end_to_end_latency_ms_sum"):
                value = float(line.rsplit(" ", 1)[1])
                if not math.isfinite(value):
                    self.problem("/metrics: tts_end_to_end_latency_ms_sum is not finite", line)

    def log_checks(self) -> None:
        for entry in self.srv.lines:
            if "level" not in entry or "timestamp" not in entry:
                self.problem("a server log line that is not JSON", str(entry.get("message", entry))[:300])
                continue
            error = str(entry.get("error", ""))
            if "Traceback" in error or (entry["level"] in ("ERROR", "CRITICAL") and "Traceback" in json.dumps(entry)):
                tb = [ln for ln in error.strip().splitlines() if ln.strip()] or [str(entry.get("message"))]
                last = re.sub(r"\d+", "N", tb[-1])  # one problem for "4301 digits" and "5000 digits"
                key = f"a traceback in the server log: {entry.get('message')!r} {last}"[:200]
                if key not in self.problems:  # one excerpt each: the innermost frames
                    self.problem(key, "\n      ".join(["", *tb[-7:]]))
                else:
                    self.counts[key] += 1

    def report(self) -> str:
        lines = [
            f"seed {self.seed} (replay: RINGAUDIO_FUZZ_SEED={self.seed}), categories {','.join(self.categories)}, "
            f"{sum(self.sent.values())} messages in {self.elapsed:.1f} s",
            f"sent {dict(self.sent)}",
            f"replies {dict(self.replies)}",
            f"error codes {dict(self.codes)}",
            f"closes {dict(self.closes)}",
        ]
        for key, examples in self.problems.items():
            lines.append(f"PROBLEM ({self.counts[key]}x) {key}")
            lines.extend(f"    {e}" for e in examples)
        return "\n".join(lines)


def plan(seed: int, session: int, items: int) -> list[str | bytes | float]:
    """The first ``items`` plan items of a session, with what they refer to fixed (no server)."""
    rng = random.Random(f"{seed}:{session}")
    ctx = Ctx(("own-id", "own-key"), [(f"id{k}", f"key{k}") for k in range(SESSIONS)], 41)
    out: list[str | bytes | float] = []
    for _ in range(items):
        category = rng.choices(list(CATEGORIES), [w for w, _ in CATEGORIES.values()])[0]
        out.extend(part(ctx) if callable(part) else part for part in CATEGORIES[category][1](rng))
    return out


def test_fuzz_messages_are_a_function_of_the_seed() -> None:
    first = plan(SEED, 3, 400)
    assert first == plan(SEED, 3, 400)
    assert first != plan(SEED + 1, 3, 400) and first != plan(SEED, 4, 400)
    assert all(nbytes(m) <= MAX_BYTES for m in first if not isinstance(m, float))


@pytest.mark.timeout(1800 if long_runs() else 300)
def test_protocol_fuzz() -> None:
    categories = selected_categories()
    srv = start()
    fuzz = Fuzz(srv, SEED, MESSAGES, categories, TIME_BOUND_S)
    print(f"protocol fuzz: seed {SEED}, {MESSAGES} messages, categories {categories}")
    try:
        asyncio.run(asyncio.wait_for(fuzz.run(), TIME_BOUND_S + 120))
    except TimeoutError:
        fuzz.problem("the fuzz run hung", "")
    finally:
        alive = srv.proc.poll() is None
        if alive:
            fuzz.http_checks()
        else:
            fuzz.problem("the server process died", f"exit code {srv.proc.returncode}")
        code = srv.stop()
        if alive and code != 0:
            fuzz.problem("the server did not stop cleanly", f"exit code {code}")
        fuzz.log_checks()
        print(fuzz.report())
    assert not fuzz.problems, fuzz.report()
    assert sum(fuzz.sent.values()) >= MESSAGES, fuzz.report()
