"""Pacing and backpressure through the real server, as the runbook's operator sees them: a healthy
client loses nothing under either policy, the runbook's 25 ms client is reported within seconds
and, under ``block``, still loses nothing; queue depth, its log lines and the frame log mean what
they say."""

from __future__ import annotations

import asyncio
import itertools
import json
import statistics
import time
from typing import Any

import pytest
from websockets.asyncio.client import connect

from bench.netsim import Impairment, NetSim
from ringaudio.client import Stats, speak

from ..conftest import long_runs
from .conftest import ServerProcess, start
from .test_server import run

SENTENCE = "This is a sentence that keeps the voice busy for a while. "  # about 3.9 s of synthetic speech


def text_of(seconds: float) -> str:
    return SENTENCE * max(1, round(seconds / 3.9))


def server(overflow: str, **env: str) -> ServerProcess:
    # a model 50× faster than real time: without pacing it laps any real-time reader of a 1 s ring
    return start({"RINGAUDIO__WORKER__OVERFLOW": overflow, "RINGAUDIO__WORKER__SYNTHETIC_RTF": "0.02", **env})


def since_open(srv: ServerProcess, message: str) -> list[tuple[float, dict[str, Any]]]:
    t0 = srv.logged("session opened")[0]["timestamp"]
    return [(e["timestamp"] - t0, e) for e in srv.logged(message)]


@pytest.mark.parametrize("overflow", ["drop_oldest", "block"])
def test_a_healthy_client_loses_nothing_and_raises_no_alarm(overflow: str) -> None:
    seconds = 60 if long_runs() else 8  # many laps of the 1 s ring, and over twice the 3 s a slow client takes
    srv = server(overflow)
    try:
        stats: Stats = run(speak(srv.url, [text_of(seconds)], timeout=seconds * 3))
        assert stats.frames >= seconds * 40 and stats.lost == 0 and stats.gaps == 0 and stats.reported_lost == 0
        assert stats.sequences == list(range(stats.frames))
        assert not srv.logged("Client not consuming frames fast enough")
        assert not srv.logged("Frame queue depth")  # never near the high watermark: the ring holds the lead
        assert not srv.logged("Frame queue full, dropping frames")
    finally:
        assert srv.stop() == 0


def test_the_runbooks_slow_client_is_reported_within_5_s_and_loses_nothing_under_block() -> None:
    """25 ms per 20 ms frame, a plain WebSocket client that sends no ``ack``: the server sees from
    TCP what it has not read, reports it within 5 s, holds the audio back so the queue fills to the
    high watermark (a backpressure episode an operator can see) and, under ``block``, loses nothing."""
    srv = server("block")
    try:
        stats: Stats = run(speak(srv.url, [text_of(14)], slow_ms=25, timeout=120))
        assert stats.lost == 0 and stats.gaps == 0 and stats.sequences == list(range(stats.frames))
        slow = since_open(srv, "Client not consuming frames fast enough")
        assert slow and slow[0][0] < 5.0, slow
        assert slow[0][1]["unconsumed_frames"] >= 25
        depth = since_open(srv, "Frame queue depth")
        assert any(e["high"] and e["queue_size"] >= 40 and e["capacity"] == 50 for _, e in depth), depth
        assert len(slow) <= 3  # one line per episode, not one per frame held back
    finally:
        assert srv.stop() == 0


def test_the_slow_client_under_drop_oldest_loses_exactly_what_is_reported() -> None:
    srv = server("drop_oldest")
    try:
        stats: Stats = run(speak(srv.url, [text_of(14)], slow_ms=25, timeout=120))
        assert stats.lost > 0 and stats.lost == stats.reported_lost
        gaps = srv.logged("Frame sequence gap detected")
        assert gaps and sum(e["received"] - e["expected"] for e in gaps) == stats.lost
        assert all(e["queue_size"] >= 40 for e in srv.logged("Frame queue full, dropping frames"))
        assert since_open(srv, "Client not consuming frames fast enough")[0][0] < 5.0
    finally:
        assert srv.stop() == 0


def test_a_healthy_client_100_ms_away_is_not_flagged() -> None:
    """A 100 ms round trip holds about 5 frames in flight: not a client that does not read."""
    srv = server("drop_oldest")
    try:
        link = Impairment(delay_ms=50, jitter_ms=5)
        with NetSim.running(srv.port, both=link) as sim:
            stats: Stats = run(speak(f"ws://127.0.0.1:{sim.port}/ws", [text_of(9)], timeout=90))
        assert stats.lost == 0 and stats.frames > 100
        assert not srv.logged("Client not consuming frames fast enough")
    finally:
        assert srv.stop() == 0


def test_debug_logs_one_frame_sent_line_per_frame() -> None:
    srv = start({"LOG_LEVEL": "DEBUG"})
    try:
        stats: Stats = run(speak(srv.url, ["Hello there, a short sentence."]))
        sent = srv.logged("frame sent")
        assert [e["sequence"] for e in sent] == stats.sequences
        assert all(e["frame_sequence"] == e["sequence"] and e["session_id"] for e in sent)
        # the runbook's inter-frame awk: after the first burst, about 20 ms apart
        stamps = [e["timestamp"] for e in sent[12:]]
        intervals = [(b - a) * 1000 for a, b in itertools.pairwise(stamps)]
        assert 15 < statistics.median(intervals) < 25
    finally:
        assert srv.stop() == 0
    quiet = start()
    try:
        run(speak(quiet.url, ["Hello there."]))
        assert not quiet.logged("frame sent")  # at INFO, none
    finally:
        assert quiet.stop() == 0


def test_the_runbooks_slow_client_script_connects_on_the_root_path(server: ServerProcess) -> None:
    """``test-slow-client.py`` connects to ``ws://localhost:8080`` with no path."""

    async def go() -> tuple[dict[str, Any], int]:
        async with connect(f"ws://localhost:{server.port}") as ws:
            hello = json.loads(await ws.recv())
            await ws.send(json.dumps({"type": "synthesize", "text": "Hello from the runbook."}))
            frames = 0
            while True:
                msg = await asyncio.wait_for(ws.recv(), 10)
                if isinstance(msg, bytes):
                    frames += 1
                    await asyncio.sleep(0.025)  # the runbook's slow processing
                elif json.loads(msg)["type"] == "utterance.end":
                    return hello, frames

    t0 = time.monotonic()
    hello, frames = run(go())
    assert hello["type"] == "session" and frames > 0 and time.monotonic() - t0 < 30
