"""The sans-I/O pieces of the server: header codec, message parsing, pacer, schedule, batch histogram."""

from __future__ import annotations

import numpy as np
import pytest

from ringaudio.server import protocol as P
from ringaudio.server.metrics import BatchHistogram
from ringaudio.server.schedule import Schedule


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


def test_pacer_early_take_gets_its_frame_and_keeps_the_cadence() -> None:
    """A session taken up to `early` before its due time sends then, and the cadence does not drift."""
    period, early = 0.02, 0.001
    pacer = P.Pacer(period=period, prebuffer=1, now=0.0)
    assert pacer.allowance(0.0, early) == 1
    pacer.spend(1)
    sends = []
    now = 0.0
    for _ in range(500):
        due = pacer.next_due(now)
        now = due - early * 0.9  # always taken 0.9 ms early
        n = pacer.allowance(now, early)
        assert n == 1, (now, pacer.tokens)
        pacer.spend(n)
        sends.append(now)
    intervals = np.diff(sends)
    assert np.allclose(intervals, period, atol=1e-9)  # early every time: no drift, no double takes


def test_schedule_takes_only_what_is_due_each_once() -> None:
    sched: Schedule[str] = Schedule()
    sched.add("a", 3.0)
    sched.add("b", 1.0)
    sched.add("a", 2.0)  # earlier wins
    sched.add("b", 5.0)  # later is ignored while it is scheduled earlier
    assert len(sched) == 2 and "a" in sched
    assert sched.next_due() == 1.0
    assert sched.pop_due(0.5) == []
    assert sched.pop_due(2.0) == ["b", "a"]
    assert sched.pop_due(10.0) == []  # the stale entries (a at 3.0, b at 5.0) are skipped
    assert sched.next_due() is None and len(sched) == 0
    sched.add("c", 1.0)
    sched.discard("c")
    assert sched.next_due() is None and sched.pop_due(10.0) == []


def test_ws_binary_prefix_lengths() -> None:
    assert P.ws_binary_prefix(5) == b"\x82\x05"
    assert P.ws_binary_prefix(1944) == b"\x82\x7e\x07\x98"
    assert P.ws_binary_prefix(70_000) == b"\x82\x7f" + (70_000).to_bytes(8, "big")
    with pytest.raises(ValueError):
        P.ws_binary_prefix(-1)
