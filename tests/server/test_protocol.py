"""The sans-I/O pieces of the server: header codec, message parsing, pacer, batch histogram."""

from __future__ import annotations

import pytest

from ringaudio.server import protocol as P
from ringaudio.server.metrics import BatchHistogram


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


def test_pacer_bursts_then_keeps_real_time() -> None:
    pacer = P.Pacer(period=0.02, prebuffer=10, now=0.0)
    assert pacer.allowance(0.0) == 10  # the prebuffer at once
    pacer.spend(10)
    assert pacer.allowance(0.01) == 0
    assert pacer.allowance(0.02) == 1  # then one per period
    pacer.spend(1)
    assert pacer.allowance(10.0) == 10  # idle time never banks more than the prebuffer


def test_batch_histogram_bins_like_prometheus() -> None:
    h = BatchHistogram("x_ms", "test", (1, 5, 20))
    for v in (0.5, 1.0, 3, 20, 25, 100):
        h.observe(v)
    family = next(iter(h.collect()))
    buckets = {s.labels["le"]: s.value for s in family.samples if s.name == "x_ms_bucket"}
    assert buckets == {"1": 2.0, "5": 3.0, "20": 4.0, "+Inf": 6.0}  # le: value <= bound
    total = next(s.value for s in family.samples if s.name == "x_ms_sum")
    assert total == pytest.approx(149.5)
