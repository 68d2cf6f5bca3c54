"""The wire contract, sans I/O: header codec, message parsing and its bounds, error codes."""

from __future__ import annotations

import json
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest

import ringaudio
from ringaudio import errors
from ringaudio import wire as P
from ringaudio.errors import ArenaFull, FrameFormatError, RingAudioError, RingClosed, SegmentNotFound, TextError

ROOT = Path(__file__).parents[1]


def test_header_round_trip_and_layout() -> None:
    raw = P.encode_header(sequence=2**40 + 5, timestamp_us=1_795_000_000_000_000, utterance_id=7, flags=P.FLAG_FIRST)
    assert len(raw) == P.HEADER_SIZE == 24
    assert raw[:2] == b"\x41\x52" and raw[2] == 1 and raw[3] == P.FLAG_FIRST
    assert int.from_bytes(raw[8:16], "little") == 2**40 + 5
    h = P.decode_header(raw + b"\0" * 1920)
    assert (h.sequence, h.utterance_id, h.flags, h.timestamp_us) == (2**40 + 5, 7, 1, 1_795_000_000_000_000)
    with pytest.raises(P.ProtocolError):
        P.decode_header(raw[:10])
    with pytest.raises(P.ProtocolError):
        P.decode_header(b"XX" + raw[2:])


def test_parse_every_command() -> None:
    assert P.parse('{"type":"synthesize","text":"hi","voice":"en","request_id":"r1"}') == P.Synthesize("hi", "en", "r1")
    assert P.parse('{"type":"flow_control","action":"pause"}') == P.Control("pause")
    assert P.parse('{"type":"cancel"}') == P.Cancel()
    assert P.parse('{"type":"ack","sequence":3,"buffered_ms":40}') == P.Ack(3, 40.0)
    assert P.parse('{"type":"listen","session_id":"a","key":"k"}') == P.Listen("a", "k")
    for bad, code in [
        ("nope", "invalid_json"),
        ('{"type":"ack","sequence":-1}', "invalid_field"),
        ('{"type":true}', "missing_field"),
    ]:
        with pytest.raises(P.ProtocolError) as info:
            P.parse(bad)
        assert info.value.code == code


def documented_codes() -> set[str]:
    """The ``error.code`` values of docs/protocol.md's "Errors" table."""
    doc = (ROOT / "docs" / "protocol.md").read_text()
    table = doc.split("## Errors", 1)[1].split("\n## ", 1)[0]
    return {
        code
        for line in table.splitlines()
        if line.startswith("| `")
        for code in re.findall(r"`([a-z_]+)`", line.split("|")[1])
    }


def ack(**fields: object) -> str:
    return json.dumps({"type": "ack", "sequence": 1, **fields})


def synth(**fields: object) -> str:
    return json.dumps({"type": "synthesize", "text": "hi", **fields})


def listen(**fields: object) -> str:
    return json.dumps({"type": "listen", "session_id": "s", "key": "k", **fields})


HUGE = "9" * 5000  # json.loads alone: ValueError "Exceeds the limit (4300 digits)"

HOSTILE = [
    # not JSON, or JSON nothing can be built from
    ("nope", "invalid_json"),
    ("", "invalid_json"),
    ("{", "invalid_json"),
    ('{"type":"cancel"} x', "invalid_json"),
    ("[" * 100_000 + "]" * 100_000, "invalid_json"),  # RecursionError
    ('{"a":' * 100_000 + "1" + "}" * 100_000, "invalid_json"),
    ("\ud800", "invalid_json"),  # a lone surrogate outside a string
    ("[]", "invalid_message"),
    ('"synthesize"', "invalid_message"),
    ("null", "invalid_message"),
    ('{"type":"rewind"}', "unknown_type"),
    ('{"type":"' + "x" * 100_000 + '"}', "unknown_type"),
    ('{"type":true}', "missing_field"),
    ("{}", "missing_field"),
    # numbers json.loads accepts that no field can carry, anywhere in the message
    ('{"type":"ack","sequence":' + HUGE + "}", "invalid_field"),
    ('{"type":"ack","sequence":-' + HUGE + "}", "invalid_field"),
    ('{"type":"cancel","extra":[' + HUGE + "]}", "invalid_field"),
    ('{"type":"ack","sequence":1,"buffered_ms":' + HUGE + "}", "invalid_field"),  # float() would overflow
    ('{"type":"ack","sequence":1,"buffered_ms":' + HUGE + ".0}", "invalid_field"),  # inf
    ('{"type":"ack","sequence":1,"buffered_ms":1e400}', "invalid_field"),
    ('{"type":"ack","sequence":1,"buffered_ms":-1e400}', "invalid_field"),
    ('{"type":"ack","sequence":1,"buffered_ms":NaN}', "invalid_field"),
    ('{"type":"ack","sequence":1,"buffered_ms":Infinity}', "invalid_field"),
    ('{"type":"ack","sequence":1,"buffered_ms":-Infinity}', "invalid_field"),
    ('{"type":"cancel","x":NaN}', "invalid_field"),
    ('{"type":NaN}', "invalid_field"),
    ('{"type":"ack","sequence":123456789012345678901}', "invalid_field"),  # 21 digits
    # ranges
    (ack(sequence=-1), "invalid_field"),
    (ack(sequence=2**63), "invalid_field"),
    (ack(sequence=2**64 - 1), "invalid_field"),
    (ack(sequence=1.0), "invalid_field"),
    (ack(sequence=True), "invalid_field"),
    (ack(sequence="1"), "invalid_field"),
    (json.dumps({"type": "ack"}), "missing_field"),
    (ack(buffered_ms=-1), "invalid_field"),
    (ack(buffered_ms=-0.001), "invalid_field"),
    (ack(buffered_ms=3_600_000.5), "invalid_field"),
    (ack(buffered_ms=10**19), "invalid_field"),
    (ack(buffered_ms=True), "invalid_field"),
    (ack(buffered_ms="40"), "invalid_field"),
    # bounds and charsets
    (synth(request_id="r" * 129), "invalid_field"),
    (synth(request_id=7), "invalid_field"),
    (synth(voice="v" * 65), "invalid_field"),
    (synth(voice=""), "invalid_field"),
    (synth(voice="en us"), "invalid_field"),
    (synth(voice="../../etc/passwd\n"), "invalid_field"),
    (synth(voice="en\u00e9"), "invalid_field"),
    (synth(voice="en\x00"), "invalid_field"),
    (synth(voice=["en"]), "invalid_field"),
    (synth(text=5), "invalid_field"),
    (json.dumps({"type": "synthesize"}), "missing_field"),
    (listen(session_id="s" * 129), "invalid_field"),
    (listen(key="k" * 129), "invalid_field"),
    (json.dumps({"type": "listen", "key": "k"}), "missing_field"),
    (json.dumps({"type": "control", "action": "rewind"}), "invalid_field"),
    (json.dumps({"type": "control"}), "missing_field"),
    # lone surrogates: the text at the door, every other string field as a bad value
    (synth(text="\ud800"), "invalid_text"),
    (synth(text="hi \udfff there"), "invalid_text"),
    ('{"type":"synthesize","text":"\\ud800"}', "invalid_text"),
    ('{"type":"synthesize","text":"hi","request_id":"\\ud800"}', "invalid_field"),
    ('{"type":"synthesize","text":"hi","voice":"\\udc00"}', "invalid_field"),
    ('{"type":"listen","session_id":"\\ud800","key":"k"}', "invalid_field"),
    ('{"type":"listen","session_id":"s","key":"\\udbff"}', "invalid_field"),
]


@pytest.mark.parametrize(("raw", "code"), HOSTILE, ids=[f"{i}-{c}" for i, (_, c) in enumerate(HOSTILE)])
def test_parse_hostile_input_gets_its_documented_code(raw: str, code: str) -> None:
    with pytest.raises(P.ProtocolError) as info:
        P.parse(raw)
    assert info.value.code == code, info.value


def test_every_code_parse_raises_is_documented() -> None:
    documented = documented_codes()
    assert {"invalid_json", "invalid_field", "invalid_text", "missing_field"} <= documented  # the table was read
    assert {code for _, code in HOSTILE} <= documented


def test_parse_bounds_are_inclusive_and_named() -> None:
    assert P.parse(ack(sequence=0)) == P.Ack(0)
    assert P.parse(ack(sequence=2**63 - 1)) == P.Ack(2**63 - 1)
    assert P.parse(ack(buffered_ms=0)) == P.Ack(1, 0.0)
    assert P.parse(ack(buffered_ms=3_600_000)) == P.Ack(1, 3_600_000.0)
    assert P.parse(ack(buffered_ms=12.5)) == P.Ack(1, 12.5)
    assert P.parse('{"type":"ack","sequence":1,"buffered_ms":1e-400}') == P.Ack(1, 0.0)  # underflow is harmless
    assert P.parse(ack(buffered_ms=None)) == P.Ack(1, None)
    assert P.parse(synth(request_id="r" * 128, voice="v" * 64)) == P.Synthesize("hi", "v" * 64, "r" * 128)
    assert P.parse(synth(voice="en_US-lessac.medium+x/2")) == P.Synthesize("hi", "en_US-lessac.medium+x/2")
    assert P.parse(synth(request_id="")) == P.Synthesize("hi", None, "")
    assert P.parse(synth(request_id="caf\u00e9 \u2603")) == P.Synthesize("hi", None, "caf\u00e9 \u2603")  # any text
    assert P.parse(listen(session_id="s" * 128, key="k" * 128)) == P.Listen("s" * 128, "k" * 128)
    assert P.parse('{"type":"cancel","n":' + "9" * 20 + "}") == P.Cancel()  # 20 digits: still an integer
    for raw, field, bound in [
        (synth(request_id="r" * 129), "request_id", "128"),
        (synth(voice="v" * 65), "voice", "64"),
        (listen(session_id="s" * 129), "session_id", "128"),
        (listen(key="k" * 129), "key", "128"),
        (ack(sequence=2**63), "sequence", str(2**63 - 1)),
        (ack(buffered_ms=4e6), "buffered_ms", "3600000"),
    ]:
        with pytest.raises(P.ProtocolError) as info:
            P.parse(raw)
        assert info.value.code == "invalid_field"
        assert f"'{field}'" in info.value.message and bound in info.value.message, info.value.message


def test_parse_never_raises_anything_but_protocol_error() -> None:
    """Random mutations of valid messages: a command or a ProtocolError with a documented code, nothing else."""
    documented = documented_codes()
    seeds = [
        '{"type":"synthesize","text":"hi","voice":"en","request_id":"r1"}',
        '{"type":"ack","sequence":3,"buffered_ms":40.5}',
        '{"type":"listen","session_id":"a","key":"k"}',
        '{"type":"control","action":"pause"}',
        '{"type":"cancel"}',
    ]
    pieces = [
        "9" * 30,
        "1e999",
        "NaN",
        "-Infinity",
        "\\ud800",
        "\\udfff",
        "\ud800",
        "[",
        "{",
        '"',
        "\\",
        ",",
        ":",
        "null",
        "true",
        "-",
        ".",
        "e",
        "0",
        "\x00",
        "\u2603",
        '"type"',
        '"sequence"',
        '"buffered_ms"',
    ]
    rng = random.Random(1234)
    seen = set()
    for _ in range(20_000):
        msg = list(rng.choice(seeds))
        for _ in range(rng.randint(1, 4)):
            at = rng.randrange(len(msg) + 1)
            op = rng.random()
            if op < 0.4:
                msg.insert(at, rng.choice(pieces))
            elif op < 0.7 and at < len(msg):
                del msg[at]
            elif at < len(msg):
                msg[at] = chr(rng.choice([rng.randrange(128), rng.randrange(0xD800, 0xE000), rng.randrange(0x110000)]))
        try:
            cmd = P.parse("".join(msg))
        except P.ProtocolError as exc:
            assert exc.code in documented, exc
            seen.add(exc.code)
            continue
        if isinstance(cmd, P.Synthesize):
            cmd.text.encode("utf-8")
            assert cmd.voice is None or P._VOICE.fullmatch(cmd.voice)
        elif isinstance(cmd, P.Ack):
            assert 0 <= cmd.sequence < 2**63
            assert cmd.buffered_ms is None or 0.0 <= cmd.buffered_ms <= 3_600_000.0
    assert {"invalid_json", "invalid_field"} <= seen


def test_ws_binary_prefix_lengths() -> None:
    assert P.ws_binary_prefix(5) == b"\x82\x05"
    assert P.ws_binary_prefix(1944) == b"\x82\x7e\x07\x98"
    assert P.ws_binary_prefix(70_000) == b"\x82\x7f" + (70_000).to_bytes(8, "big")
    with pytest.raises(ValueError):
        P.ws_binary_prefix(-1)
    with pytest.raises(FrameFormatError):  # typed, and still a ValueError for callers who know only that
        P.ws_binary_prefix(-1)


def test_flags_and_header_constants() -> None:
    assert (P.FLAG_FIRST, P.FLAG_LAST) == (1, 2)
    assert not hasattr(P, "FLAG_F32")  # nothing produces f32le frames: bits 2-7 are reserved
    raw = P.encode_header(sequence=0x0123456789, timestamp_us=7, utterance_id=3, flags=P.FLAG_FIRST | P.FLAG_LAST)
    assert int.from_bytes(raw[P.SEQUENCE_OFFSET : P.SEQUENCE_OFFSET + 8], "little") == 0x0123456789
    assert P.decode_header(raw).flags == 3
    assert P.PROTOCOL == "ringaudio/1"


def test_a_frame_that_is_not_ours_is_a_bad_frame() -> None:
    for raw in (b"", b"\x41\x52", b"XX" + bytes(22), P.encode_header(0, 0)[:2] + b"\x02" + bytes(21)):
        with pytest.raises(P.ProtocolError) as info:
            P.decode_header(raw)
        assert info.value.code == P.ErrorCode.BAD_FRAME == "bad_frame"


def test_protocol_error_is_a_ringaudio_error_with_code_and_message() -> None:
    assert P.ProtocolError is errors.ProtocolError
    exc = P.ProtocolError(P.ErrorCode.INVALID_JSON, "the message is not valid JSON")
    assert isinstance(exc, RingAudioError)
    assert exc.code == "invalid_json" and exc.message == "the message is not valid JSON"
    assert str(exc) == "invalid_json: the message is not valid JSON"  # the enum formats as its value


def test_error_codes_are_the_documented_ones() -> None:
    """ErrorCode and the doc's Errors table list the same codes: neither can grow alone."""
    assert {code.value for code in P.ErrorCode} == documented_codes()
    assert all(code == code.value and json.dumps(code) == f'"{code.value}"' for code in P.ErrorCode)


def test_error_classes_name_only_wire_codes() -> None:
    """Every ``code`` a class of ringaudio.errors carries is one of the wire's."""
    classes = [c for c in vars(errors).values() if isinstance(c, type) and issubclass(c, RingAudioError)]
    named = {c: c.__dict__["code"] for c in classes if "code" in c.__dict__}
    expect = {errors.SegmentError, RingClosed, ArenaFull, errors.TextError, errors.PoolError, errors.BackendError}
    expect.add(errors.CodecError)
    assert set(named) == expect | {errors.EngineError}, named  # the class-level ones
    assert all(code in set(P.ErrorCode) for code in named.values())


class _Coded(Exception):
    def __init__(self, code: object) -> None:
        self.code = code


class _CodedRingAudioError(RingAudioError):
    code = "not_a_wire_code"


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (P.ProtocolError("invalid_field", "x"), "invalid_field"),
        (TextError("empty text"), "invalid_text"),
        (TextError("too long", code="text_too_long"), "text_too_long"),
        (ArenaFull("max_sessions"), "too_many_sessions"),
        (RingClosed("the lease ended"), "ring_closed"),
        (SegmentNotFound("ringaudio-x"), "ring_unavailable"),
        (_Coded("queue_full"), "queue_full"),  # any exception that names a wire code, e.g. StreamError
        (_Coded(P.ErrorCode.NOT_PAUSED), "not_paused"),
        (errors.RingTimeout("waited"), "unavailable"),  # a ringaudio error without a wire code
        (errors.ConfigError("bad"), "unavailable"),
        (_CodedRingAudioError(), "unavailable"),  # a code that is not a wire code is never sent
        (_Coded("bogus"), "internal_error"),
        (_Coded(404), "internal_error"),  # HTTPError.code, SystemExit.code: not ours
        (SystemExit(1), "internal_error"),
        (ValueError("bug"), "internal_error"),
        (KeyError("bug"), "internal_error"),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else str(v),
)
def test_error_code_picks_the_wire_code_from_the_exception(exc: BaseException, code: str) -> None:
    got = P.error_code(exc)
    assert isinstance(got, P.ErrorCode) and got == code


def test_error_code_of_every_code_parse_raises_is_that_code() -> None:
    for raw, code in HOSTILE:
        with pytest.raises(P.ProtocolError) as info:
            P.parse(raw)
        assert P.error_code(info.value) == code


HEAVY = ("numba", "numpy", "prometheus_client", "ringaudio.server", "ringaudio.engine", "ringaudio.tts")
HEAVY += ("ringaudio.ring", "ringaudio.stream")


@pytest.mark.parametrize("module", ["ringaudio.wire", "ringaudio.client", "ringaudio"])
def test_the_wire_and_the_client_load_no_server_engine_or_numba(module: str) -> None:
    """In a fresh interpreter, so that what other tests imported cannot hide an import."""
    code = f"import sys, {module}; print(' '.join(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.split() == [], f"import {module} loaded {out.stdout.split()}"


def test_package_names_stay_importable_lazily() -> None:
    from ringaudio.ring import FrameRing, RingArena, RingHandle, RingReader

    assert (ringaudio.FrameRing, ringaudio.RingArena, ringaudio.RingHandle, ringaudio.RingReader) == (
        FrameRing,
        RingArena,
        RingHandle,
        RingReader,
    )
    assert all(hasattr(ringaudio, name) for name in ringaudio.__all__)
    with pytest.raises(AttributeError):
        ringaudio.NoSuchThing  # noqa: B018
