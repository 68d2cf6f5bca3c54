"""The wire contract, sans I/O: binary frame header codec, client message parsing, error codes.

Both ends of a connection import this module, so it imports only the standard library and
:mod:`ringaudio.errors`: a client process (``ringaudio.client``, the benchmark's raw client) that
decodes frames loads no server, engine, worker pool, numba or Prometheus client on the way.

Binary audio message (server -> client): a 24-byte little-endian header, then PCM::

    offset size  field
    0      2     magic         0x5241 ("RA" read as little-endian bytes b"AR")
    2      1     version       1
    3      1     flags         bit 0: first frame of an utterance, bit 1: last frame, bits 2-7: reserved (0)
    4      4     utterance_id  uint32
    8      8     sequence      uint64, per session, from 0, never reused
    16     8     timestamp_us  uint64, server wall clock when the frame was sent (µs since the epoch)
    24     ...   PCM           s16le, frame_samples × channels

Nothing here reads a clock or a socket: time is passed in.
"""

from __future__ import annotations

import enum
import json
import math
import re
import struct
from dataclasses import dataclass
from typing import Any

from .errors import FrameFormatError, ProtocolError, RingAudioError

__all__ = [
    "FLAG_FIRST",
    "FLAG_LAST",
    "HEADER",
    "HEADER_SIZE",
    "MAGIC",
    "MAX_BUFFERED_MS",
    "MAX_INT_DIGITS",
    "MAX_LISTEN_CHARS",
    "MAX_REQUEST_ID_CHARS",
    "MAX_SEQUENCE",
    "MAX_VOICE_CHARS",
    "PROTOCOL",
    "SEQUENCE_OFFSET",
    "VERSION",
    "Ack",
    "Cancel",
    "Command",
    "Control",
    "ErrorCode",
    "FrameHeader",
    "Listen",
    "ProtocolError",  # what parse() and decode_header() raise; defined in ringaudio.errors
    "Synthesize",
    "audio_message",
    "decode_header",
    "encode_header",
    "error_code",
    "event",
    "parse",
    "ws_binary_prefix",
]

MAGIC = 0x5241
VERSION = 1
HEADER = struct.Struct("<HBBIQQ")
HEADER_SIZE = HEADER.size  # 24
SEQUENCE_OFFSET = 8  # the uint64 sequence, which a lean client reads without decoding the rest
FLAG_FIRST = 1
FLAG_LAST = 2
PROTOCOL = "ringaudio/1"


class ErrorCode(enum.StrEnum):
    """Every ``code`` an ``error`` event can carry (docs/protocol.md, "Errors").

    A ``StrEnum``, so a member is the very string that goes on the wire: ``event("error",
    code=ErrorCode.QUEUE_FULL)`` and ``exc.code == "queue_full"`` both work unchanged.
    """

    # a client message the parser refuses
    INVALID_JSON = "invalid_json"
    INVALID_MESSAGE = "invalid_message"
    UNKNOWN_TYPE = "unknown_type"
    MISSING_FIELD = "missing_field"
    INVALID_FIELD = "invalid_field"
    # a synthesize the engine refuses
    INVALID_TEXT = "invalid_text"
    TEXT_TOO_LONG = "text_too_long"
    QUEUE_FULL = "queue_full"
    STREAM_ENDED = "stream_ended"
    # a command that does not fit the session's state
    ALREADY_PAUSED = "already_paused"
    NOT_PAUSED = "not_paused"
    BINARY_NOT_SUPPORTED = "binary_not_supported"
    LISTEN_REFUSED = "listen_refused"
    LISTEN_ELSEWHERE = "listen_elsewhere"
    LISTENER = "listener"
    # the connection ends
    SESSION_ENDED = "session_ended"
    TOO_MANY_SESSIONS = "too_many_sessions"
    IDLE_TIMEOUT = "idle_timeout"
    # synthesis of one utterance failed
    WORKER_DIED = "worker_died"
    BACKEND_ERROR = "backend_error"
    RING_CLOSED = "ring_closed"
    RING_UNAVAILABLE = "ring_unavailable"
    SYNTHESIS_FAILED = "synthesis_failed"
    INTERNAL_ERROR = "internal_error"
    UNAVAILABLE = "unavailable"
    FORMAT_UNAVAILABLE = "format_unavailable"
    # never sent: what decode_header raises for a binary message that is not a ringaudio/1 frame
    BAD_FRAME = "bad_frame"


_CODES = frozenset(ErrorCode)


def error_code(exc: BaseException) -> ErrorCode:
    """The wire's error code for an exception, chosen in this one place.

    An exception that names a wire code (``ProtocolError``, ``TextError``, ``StreamError``,
    ``RingClosed``, ``ArenaFull``, ... carry it as ``code``) gets that code; any other ringaudio
    error is a refusal of the engine that the client cannot fix (``unavailable``); anything else
    is a bug of ours (``internal_error``). A ``code`` that is not a wire code (``SystemExit.code``,
    ``HTTPError.code``, a misspelt one) is ignored rather than sent, so a client only ever sees the
    documented codes.
    """
    code = getattr(exc, "code", None)
    if isinstance(code, str) and code in _CODES:
        return ErrorCode(code)
    if isinstance(exc, RingAudioError):
        return ErrorCode.UNAVAILABLE
    return ErrorCode.INTERNAL_ERROR


def encode_header(sequence: int, timestamp_us: int, utterance_id: int = 0, flags: int = 0) -> bytes:
    return HEADER.pack(MAGIC, VERSION, flags, utterance_id & 0xFFFFFFFF, sequence, timestamp_us)


def audio_message(flags: int, utterance_id: int, sequence: int, timestamp_us: int, payload: Any) -> bytes:
    """One audio frame as the whole WebSocket message a client gets: ``ws_binary_prefix``, the
    audio header, the payload (bytes-like). The C ring kernels build the same bytes in one call
    (``read_message``); this is the reference, and what other paths use."""
    head = HEADER.pack(MAGIC, VERSION, flags, utterance_id & 0xFFFFFFFF, sequence, timestamp_us)
    return ws_binary_prefix(HEADER_SIZE + len(payload)) + head + bytes(payload)


def ws_binary_prefix(length: int) -> bytes:
    """The RFC 6455 header of an unmasked, final, uncompressed binary frame of ``length`` bytes.

    The server builds each audio message in place behind this prefix and hands the whole frame to
    the transport in one write, instead of asking the WebSocket library to frame every message.
    """
    if length < 0:
        raise FrameFormatError(f"a WebSocket payload length is >= 0, got {length}")
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
        raise ProtocolError(ErrorCode.BAD_FRAME, f"a frame is at least {HEADER_SIZE} bytes, got {len(data)}")
    magic, version, flags, utterance, seq, ts = HEADER.unpack_from(data)
    if magic != MAGIC or version != VERSION:
        raise ProtocolError(ErrorCode.BAD_FRAME, f"magic {magic:#x} version {version}: not a ringaudio/1 frame")
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
    underruns: int | None = None  # the client's playout underruns so far (a running count)


@dataclass(frozen=True)
class Listen:
    session_id: str
    key: str


@dataclass(frozen=True)
class Format:
    encoding: str | None  # s16le | f32le | opus (None: as it is)
    level: tuple[int, int] | None = None  # (sample_rate, frame_ms): one of audio.quality_levels


Command = Synthesize | Control | Cancel | Ack | Listen | Format
WIRE_ENCODINGS = ("s16le", "f32le", "opus")


# Bounds of client message fields (docs/protocol.md, "Client -> server").
MAX_SEQUENCE = 2**63 - 1
MAX_BUFFERED_MS = 3_600_000.0
MAX_UNDERRUNS = 2**31 - 1
MAX_REQUEST_ID_CHARS = 128
MAX_VOICE_CHARS = 64
MAX_LISTEN_CHARS = 128  # session_id and key
MAX_INT_DIGITS = 20  # any integer literal in a message; 2**64 has 20 digits
_VOICE = re.compile(r"[A-Za-z0-9_.+/-]+")


def _encodable(value: str) -> bool:
    """False for a string holding a lone surrogate (JSON ``"\\ud800"``), which no UTF-8 sink accepts."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _parse_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise ProtocolError(ErrorCode.INVALID_FIELD, f"integers have at most {MAX_INT_DIGITS} digits")
    return int(text)


def _parse_float(text: str) -> float:
    value = float(text)  # a JSON number literal: never raises, but 1e400 is inf
    if not math.isfinite(value):
        raise ProtocolError(ErrorCode.INVALID_FIELD, "numbers must be finite")
    return value


def _parse_constant(text: str) -> Any:
    raise ProtocolError(ErrorCode.INVALID_FIELD, f"{text} is not a JSON number")


def _loads(text: str) -> Any:
    """``json.loads`` that raises only ProtocolError: ``invalid_field`` for a number a message cannot
    carry (``NaN``/``Infinity``/``-Infinity``, a float that overflows to inf, an integer of more than
    MAX_INT_DIGITS digits, which json.loads would refuse past 4 300 digits with a bare ValueError),
    ``invalid_json`` for anything else it refuses (JSONDecodeError, RecursionError of deep nesting)."""
    try:
        return json.loads(text, parse_int=_parse_int, parse_float=_parse_float, parse_constant=_parse_constant)
    except ProtocolError:
        raise
    except Exception:
        raise ProtocolError(ErrorCode.INVALID_JSON, "the message is not valid JSON") from None


def _field(msg: dict[str, Any], name: str, kind: type | tuple[type, ...], required: bool = True) -> Any:
    if name not in msg or msg[name] is None:
        if required:
            raise ProtocolError(ErrorCode.MISSING_FIELD, f"'{name}' is required")
        return None
    value = msg[name]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        raise ProtocolError(ErrorCode.INVALID_FIELD, f"'{name}' must be {' or '.join(k.__name__ for k in kinds)}")
    return value


def _string(msg: dict[str, Any], name: str, limit: int, required: bool = True) -> Any:
    """A string field of at most ``limit`` characters, encodable as UTF-8."""
    value = _field(msg, name, str, required)
    if value is not None and (len(value) > limit or not _encodable(value)):
        raise ProtocolError(ErrorCode.INVALID_FIELD, f"'{name}' must be valid text of at most {limit} characters")
    return value


def parse(text: str) -> Command:
    """One text message from a client -> a command, or ProtocolError with a stable code.

    Nothing else escapes: whatever the input, the only exception is ProtocolError, with one of the
    codes of docs/protocol.md.
    """
    msg = _loads(text)
    if not isinstance(msg, dict):
        raise ProtocolError(ErrorCode.INVALID_MESSAGE, "a message is a JSON object with a 'type'")
    kind = msg.get("type")
    if not isinstance(kind, str):
        raise ProtocolError(ErrorCode.MISSING_FIELD, "'type' is required")
    if kind == "synthesize":
        body = _field(msg, "text", str)
        if not _encodable(body):
            raise ProtocolError(ErrorCode.INVALID_TEXT, "the text holds a lone surrogate (not valid Unicode)")
        voice = _field(msg, "voice", str, False)
        if voice is not None and (len(voice) > MAX_VOICE_CHARS or not _VOICE.fullmatch(voice)):
            raise ProtocolError(
                ErrorCode.INVALID_FIELD,
                f"'voice' must be 1 to {MAX_VOICE_CHARS} characters of A-Z a-z 0-9 _ . + / -",
            )
        return Synthesize(body, voice, _string(msg, "request_id", MAX_REQUEST_ID_CHARS, False))
    if kind in ("control", "flow_control"):
        action = _field(msg, "action", str)
        if action not in ("pause", "resume"):
            raise ProtocolError(ErrorCode.INVALID_FIELD, "'action' must be 'pause' or 'resume'")
        return Control(action)
    if kind == "cancel":
        return Cancel()
    if kind == "ack":
        seq = _field(msg, "sequence", int)
        if not 0 <= seq <= MAX_SEQUENCE:
            raise ProtocolError(ErrorCode.INVALID_FIELD, f"'sequence' must be 0 to 2**63-1 ({MAX_SEQUENCE})")
        buffered = _field(msg, "buffered_ms", (int, float), False)
        if buffered is not None:
            buffered = float(buffered)  # at most MAX_INT_DIGITS digits: never overflows
            if not 0.0 <= buffered <= MAX_BUFFERED_MS:  # also False for NaN
                raise ProtocolError(ErrorCode.INVALID_FIELD, f"'buffered_ms' must be 0 to {MAX_BUFFERED_MS:.0f}")
        underruns = _field(msg, "underruns", int, False)
        if underruns is not None and not 0 <= underruns <= MAX_UNDERRUNS:
            raise ProtocolError(ErrorCode.INVALID_FIELD, f"'underruns' must be 0 to {MAX_UNDERRUNS}")
        return Ack(seq, buffered, underruns)
    if kind == "format":
        encoding = _field(msg, "encoding", str, False)
        if encoding is not None and encoding not in WIRE_ENCODINGS:
            raise ProtocolError(ErrorCode.INVALID_FIELD, f"'encoding' must be one of {', '.join(WIRE_ENCODINGS)}")
        rate, frame_ms = _field(msg, "sample_rate", int, False), _field(msg, "frame_ms", int, False)
        if (rate is None) != (frame_ms is None):
            raise ProtocolError(ErrorCode.MISSING_FIELD, "a level is 'sample_rate' and 'frame_ms' together")
        if encoding is None and rate is None:
            raise ProtocolError(ErrorCode.MISSING_FIELD, "'format' needs 'encoding', or 'sample_rate' and 'frame_ms'")
        return Format(encoding, None if rate is None else (rate, frame_ms))
    if kind == "listen":
        return Listen(_string(msg, "session_id", MAX_LISTEN_CHARS), _string(msg, "key", MAX_LISTEN_CHARS))
    raise ProtocolError(ErrorCode.UNKNOWN_TYPE, f"unknown message type {kind[:64]!r}")


def event(kind: str, **fields: Any) -> str:
    return json.dumps({"type": kind, **fields}, separators=(",", ":"))
