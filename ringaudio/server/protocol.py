"""The wire contract, sans I/O: binary frame header codec, client message parsing, pacing decisions.

Binary audio message (server -> client): a 24-byte little-endian header, then PCM::

    offset size  field
    0      2     magic         0x5241 ("RA" read as little-endian bytes b"AR")
    2      1     version       1
    3      1     flags         bit 0: first frame of an utterance, bit 1: last frame, bit 2: f32le PCM
    4      4     utterance_id  uint32
    8      8     sequence      uint64, per session, from 0, never reused
    16     8     timestamp_us  uint64, server wall clock when the frame was sent (µs since the epoch)
    24     ...   PCM           s16le (default) or f32le, frame_samples × channels

Nothing here reads a clock or a socket: time is passed in.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import Any

from .. import stream
from ..errors import RingAudioError

MAGIC = 0x5241
VERSION = 1
HEADER = struct.Struct("<HBBIQQ")
HEADER_SIZE = HEADER.size  # 24
FLAG_FIRST = stream.FLAG_FIRST  # 1
FLAG_LAST = stream.FLAG_LAST  # 2
FLAG_F32 = 4
PROTOCOL = "ringaudio/1"


class ProtocolError(RingAudioError):
    """A client message the server answers with an ``error`` event (``code`` is stable)."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        self.message = message
        super().__init__(f"{code}: {message}")


def encode_header(sequence: int, timestamp_us: int, utterance_id: int = 0, flags: int = 0) -> bytes:
    return HEADER.pack(MAGIC, VERSION, flags, utterance_id & 0xFFFFFFFF, sequence, timestamp_us)


def pack_into(buf: bytearray, sequence: int, timestamp_us: int, utterance_id: int, flags: int, offset: int = 0) -> None:
    HEADER.pack_into(buf, offset, MAGIC, VERSION, flags, utterance_id & 0xFFFFFFFF, sequence, timestamp_us)


def ws_binary_prefix(length: int) -> bytes:
    """The RFC 6455 header of an unmasked, final, uncompressed binary frame of ``length`` bytes.

    The server builds each audio message in place behind this prefix and hands the whole frame to
    the transport in one write, instead of asking the WebSocket library to frame every message.
    """
    if length < 0:
        raise ValueError("length must be >= 0")
    if length < 126:
        return bytes((0x82, length))
    if length < 1 << 16:
        return bytes((0x82, 126)) + length.to_bytes(2, "big")
    return bytes((0x82, 127)) + length.to_bytes(8, "big")


@dataclass(frozen=True)
class FrameHeader:
    flags: int
    utterance_id: int
    sequence: int
    timestamp_us: int


def decode_header(data: bytes) -> FrameHeader:
    if len(data) < HEADER_SIZE:
        raise ProtocolError("bad_frame", f"a frame is at least {HEADER_SIZE} bytes, got {len(data)}")
    magic, version, flags, utterance, seq, ts = HEADER.unpack_from(data)
    if magic != MAGIC or version != VERSION:
        raise ProtocolError("bad_frame", f"magic {magic:#x} version {version}: not a ringaudio/1 frame")
    return FrameHeader(flags, utterance, seq, ts)


# -- client messages -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Synthesize:
    text: str
    voice: str | None = None
    request_id: str | None = None


@dataclass(frozen=True)
class Control:
    action: str  # pause | resume


@dataclass(frozen=True)
class Cancel:
    pass


@dataclass(frozen=True)
class Ack:
    sequence: int
    buffered_ms: float | None = None


@dataclass(frozen=True)
class Listen:
    session_id: str
    key: str


Command = Synthesize | Control | Cancel | Ack | Listen


def _field(msg: dict[str, Any], name: str, kind: type | tuple[type, ...], required: bool = True) -> Any:
    if name not in msg or msg[name] is None:
        if required:
            raise ProtocolError("missing_field", f"'{name}' is required")
        return None
    value = msg[name]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise ProtocolError("invalid_field", f"'{name}' must be {names}")
    return value


def parse(text: str) -> Command:
    """One text message from a client -> a command, or ProtocolError with a stable code."""
    try:
        msg = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        raise ProtocolError("invalid_json", "the message is not valid JSON") from None
    if not isinstance(msg, dict):
        raise ProtocolError("invalid_message", "a message is a JSON object with a 'type'")
    kind = msg.get("type")
    if not isinstance(kind, str):
        raise ProtocolError("missing_field", "'type' is required")
    if kind == "synthesize":
        return Synthesize(
            _field(msg, "text", str), _field(msg, "voice", str, False), _field(msg, "request_id", str, False)
        )
    if kind in ("control", "flow_control"):
        action = _field(msg, "action", str)
        if action not in ("pause", "resume"):
            raise ProtocolError("invalid_field", "'action' must be 'pause' or 'resume'")
        return Control(action)
    if kind == "cancel":
        return Cancel()
    if kind == "ack":
        seq = _field(msg, "sequence", int)
        if seq < 0:
            raise ProtocolError("invalid_field", "'sequence' must be >= 0")
        buffered = _field(msg, "buffered_ms", (int, float), False)
        return Ack(seq, None if buffered is None else float(buffered))
    if kind == "listen":
        return Listen(_field(msg, "session_id", str), _field(msg, "key", str))
    raise ProtocolError("unknown_type", f"unknown message type {kind!r}")


def event(kind: str, **fields: Any) -> str:
    return json.dumps({"type": kind, **fields}, separators=(",", ":"))


# -- pacing ------------------------------------------------------------------------------------------


class Pacer:
    """How many frames a session may send now: a burst up to ``prebuffer`` frames, then real time.

    A token bucket filled at one frame per ``period`` and capped at ``prebuffer``: a stream that
    starts (or resumes after idling) sends its prebuffer at once, then one frame per period. Time is
    passed in (seconds, monotonic).
    """

    __slots__ = ("_last", "period", "prebuffer", "tokens")

    def __init__(self, period: float, prebuffer: int, now: float) -> None:
        self.period = period
        self.prebuffer = max(1, prebuffer)
        self.tokens = float(self.prebuffer)
        self._last = now

    def allowance(self, now: float, early: float = 0.0) -> int:
        """Whole frames that may go now; a frame due within ``early`` seconds counts as due (a
        scheduler that serves sessions in batches takes them slightly early, and must get them)."""
        self.tokens = min(float(self.prebuffer), self.tokens + (now - self._last) / self.period)
        self._last = now
        return int(self.tokens + early / self.period + 1e-9)

    def spend(self, frames: int) -> None:
        self.tokens -= frames

    def next_due(self, now: float) -> float:
        """When the next frame may go (the bucket holds a whole token again)."""
        return now + max(0.0, 1.0 - self.tokens) * self.period
