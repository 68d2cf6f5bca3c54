"""Real worker processes writing into real rings: frames, pacing, cancel, SIGKILL, espeak, memory."""

from __future__ import annotations

import math
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import psutil
import pytest

from ringaudio import FrameNotReady, FrameRing, RingArena, config
from ringaudio.errors import TextError
from ringaudio.tts import EspeakBackend, SyntheticBackend, WorkerPool

from ..conftest import long_runs

Event = dict[str, Any]


class Events:
    """Collects the pool's events (they arrive on its supervisor thread) and waits for them."""

    def __init__(self) -> None:
        self.items: list[tuple[float, Event]] = []
        self._cond = threading.Condition()

    def __call__(self, event: Event) -> None:
        with self._cond:
            self.items.append((time.monotonic(), event))
            self._cond.notify_all()

    def wait(self, pred: Callable[[Event], bool], timeout: float = 30.0) -> tuple[float, Event]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for item in self.items:
                    if pred(item[1]):
                        return item
                left = deadline - time.monotonic()
                assert left > 0, f"no such event; got {[e for _, e in self.items]}"
                self._cond.wait(left)

    def of(self, session: str, kind: str) -> list[Event]:
        with self._cond:
            return [e for _, e in self.items if e.get("session_id") == session and e["type"] == kind]


def make_pool(
    events: Events, *, workers: int = 1, rtf: float = 0.0, backend: str = "synthetic", lead_ms: int | None = None
) -> WorkerPool:
    env = {"RINGAUDIO__WORKER__WORKERS": str(workers), "RINGAUDIO__WORKER__SYNTHETIC_RTF": str(rtf)}
    if lead_ms is not None:
        env["RINGAUDIO__WORKER__LEAD_MS"] = str(lead_ms)
    return WorkerPool(config.load(None, environ=env), events, backend=backend)


@pytest.fixture
def arena() -> Iterator[RingArena]:
    with RingArena.create(rings=4, capacity=50) as a:
        yield a


def expected_frames(text: str, rtf: float = 0.0) -> int:
    """Frames the synthetic backend's audio for ``text`` becomes at 48 kHz, 20 ms."""
    b = SyntheticBackend(rtf=rtf)
    native = sum(round(b.duration(piece) * b.native_rate) for piece in __import__("ringaudio").tts.split_text(text))
    out = math.ceil(native * 48_000 / b.native_rate)
    return math.ceil(out / 960)


def drain(ring: Any, start: int, stop: Callable[[int], bool], pace: float = 0.0) -> list[int]:
    """Read frames by sequence from ``start`` until ``stop(next_seq)``; returns the sequences read."""
    out = np.empty(960, np.int16)
    seqs = []
    seq = start
    deadline = time.monotonic() + 60
    while not stop(seq):
        assert time.monotonic() < deadline, "reader stalled"
        try:
            ring.read(seq, out, timeout=0.05)
        except FrameNotReady:
            continue
        seqs.append(seq)
        seq += 1
        if pace:
            time.sleep(pace)
    return seqs


def test_text_in_frames_out_with_continuous_sequences(arena: RingArena) -> None:
    events = Events()
    text = "Hello there. This is the first utterance, spoken by a synthetic voice."
    with make_pool(events) as pool:
        assert pool.alive() == 1 and pool.model_id.startswith("synthetic")
        ring = arena.lease()
        first = pool.submit("s1", ring.handle, text)
        second = pool.submit("s1", ring.handle, "And a second one, back to back.")

        def finished(uid: int) -> Event | None:
            return next((e for e in events.of("s1", "finished") if e["utterance_id"] == uid), None)

        # read while they speak (block policy: the worker waits for this reader at the watermark)
        seqs = drain(ring, 0, lambda s: (done := finished(second)) is not None and s > done["last_sequence"])
        done1, done2 = finished(first), finished(second)
        assert done1 is not None and done2 is not None
        assert seqs == list(range(done2["last_sequence"] + 1))  # one continuous sequence
        assert done1["first_sequence"] == 0 and done2["first_sequence"] == done1["last_sequence"] + 1
        assert done1["frames"] == expected_frames(text)
        assert done1["model_id"] == pool.model_id and "rtf" in done1 and "synthesis_duration_ms" in done1
        kinds = [e["type"] for e in events.of("s1", "started") + events.of("s1", "first_frame")]
        assert kinds.count("started") == 2 and kinds.count("first_frame") == 2
        ring.close()


def read_at_real_time(ring: Any, events: Events, session: str) -> list[tuple[int, bool]]:
    """Read the session's frames as a real-time listener would; (fill, writer paused) after each."""
    out = np.empty(960, np.int16)
    seen: list[tuple[int, bool]] = []
    seq = 0
    t0 = time.monotonic()
    while not events.of(session, "finished") or seq <= events.of(session, "finished")[0]["last_sequence"]:
        assert time.monotonic() - t0 < 30
        try:
            ring.read(seq, out, timeout=0.5)
        except FrameNotReady:
            continue
        seq += 1
        seen.append((ring.fill, ring.writer_paused))
        time.sleep(max(0.0, t0 + seq * 0.02 - time.monotonic()))
    return seen


@pytest.mark.parametrize("overflow", ["block", "drop_oldest"])
def test_a_fast_model_is_paced_to_its_lead_ahead_of_a_real_time_reader(arena: RingArena, overflow: str) -> None:
    """Pacing, not backpressure: a model 20× faster than real time writes about ``lead_ms`` (400 ms,
    20 frames) ahead of a real-time reader, 8 frames at a look (the most: spec.pace_frames), and
    never reaches the high watermark; under drop_oldest nothing is lost."""
    events = Events()
    with make_pool(events, rtf=0.05) as pool:
        ring = arena.lease(overflow=overflow)
        _, low = ring.watermarks
        uid = pool.submit("s1", ring.handle, "A fast model speaking for a few seconds, well ahead of real time.")
        seen = read_at_real_time(ring, events, "s1")
        done = events.of("s1", "finished")[0]
        assert done["utterance_id"] == uid and len(seen) == done["frames"]  # every frame, in sequence
        fills = [fill for fill, _ in seen]
        assert (pool.spec.lead_frames, pool.spec.prebuffer_ms) == (20, 200)  # 8 frames a look (pace_frames)
        assert max(fills) <= 20 + 1 < low  # the lead (+ the frame being written), not the watermarks
        assert not any(paused for _, paused in seen) and ring.full_count == 0
        steady = fills[5:-20]
        assert steady and min(steady) >= 20 - 8 - 1  # about the lead less a look's frames: nothing starves
        ring.close()


def test_without_pacing_a_fast_model_waits_between_the_watermarks(arena: RingArena) -> None:
    """``worker.lead_ms: 0``: the watermarks alone hold the writer (rendering, benchmarks)."""
    events = Events()
    with make_pool(events, rtf=0.05, lead_ms=0) as pool:
        ring = arena.lease()
        high, low = ring.watermarks
        uid = pool.submit("s1", ring.handle, "A fast model speaking for a few seconds, well ahead of real time.")
        seen = read_at_real_time(ring, events, "s1")
        done = events.of("s1", "finished")[0]
        assert done["utterance_id"] == uid and len(seen) == done["frames"]
        fills = [fill for fill, _ in seen]
        assert max(fills) <= high  # never flooded past the high watermark
        assert any(paused for _, paused in seen)  # the worker really waited there
        steady = fills[high:-high]  # once full and before the end: between the watermarks
        assert steady and min(steady) >= low - 1
        ring.close()


def test_cancel_stops_within_a_frame_period_and_leaves_no_stale_frames(arena: RingArena) -> None:
    events = Events()
    with make_pool(events, rtf=0.2) as pool:
        ring = arena.lease(overflow="drop_oldest")  # nothing holds the writer: it writes as it synthesizes
        pool.submit("s1", ring.handle, "A long utterance that will be interrupted. " * 20)
        events.wait(lambda e: e["type"] == "first_frame")
        time.sleep(0.3)
        t0 = time.monotonic()
        pool.cancel("s1")
        t1, ev = events.wait(lambda e: e["type"] == "cancelled")
        assert t1 - t0 < 0.2  # measured at the pool (pipe, worker, pipe, thread): stopped and answered
        written = ring.write_seq
        assert ev["last_sequence"] == written - 1  # the worker's account is exact
        time.sleep(0.2)
        assert ring.write_seq == written  # nothing more is written after the answer
        assert not events.of("s1", "finished")
        # the next utterance starts cleanly after the cancelled one
        uid = pool.submit("s1", ring.handle, "Again.")
        _, done = events.wait(lambda e: e["type"] == "finished" and e["utterance_id"] == uid)
        assert done["first_sequence"] == written
        ring.close()


def test_submit_with_the_callers_utterance_id(arena: RingArena) -> None:
    """The engine allocates ids itself (its stream records the utterance before the pool can emit an
    event for it): the job and its events carry the id given, and the pool's own counter stays put."""
    events = Events()
    with make_pool(events, lead_ms=0) as pool:
        ring = arena.lease(overflow="drop_oldest")  # nobody reads: the worker never waits
        assert pool.submit("s1", ring.handle, "Mine.", utterance_id=1000) == 1000
        _, done = events.wait(lambda e: e["type"] == "finished" and e["utterance_id"] == 1000)
        assert [e["utterance_id"] for e in events.of("s1", "started")] == [1000]
        own = pool.submit("s1", ring.handle, "The pool's own.")
        assert own == 1
        _, after = events.wait(lambda e: e["type"] == "finished" and e["utterance_id"] == own)
        assert after["first_sequence"] == done["last_sequence"] + 1  # the same stream goes on
        ring.close()


def test_bad_text_is_refused_at_submit(arena: RingArena) -> None:
    events = Events()
    with make_pool(events) as pool:
        ring = arena.lease()
        for bad in ["", "   ", "x" * 5001, "bell\x07", 42]:
            with pytest.raises(TextError):
                pool.submit("s1", ring.handle, bad)  # type: ignore[arg-type]
        assert pool.pending("s1") == 0
        ring.close()


def test_a_worker_killed_mid_utterance_is_replaced_and_others_go_on(arena: RingArena) -> None:
    events = Events()
    with make_pool(events, workers=2, rtf=0.5) as pool:
        a, b = arena.lease(overflow="drop_oldest"), arena.lease(overflow="drop_oldest")
        text = "Speaking for a while so that there is time to kill a worker. " * 3
        pool.submit("a", a.handle, text)
        pool.submit("b", b.handle, text)
        _, started_a = events.wait(lambda e: e["type"] == "first_frame" and e["session_id"] == "a")
        _, started_b = events.wait(lambda e: e["type"] == "first_frame" and e["session_id"] == "b")
        assert started_a["pid"] != started_b["pid"]  # one per worker
        before_b = b.write_seq
        t0 = time.monotonic()
        os.kill(started_a["pid"], signal.SIGKILL)
        t1, failed = events.wait(lambda e: e["type"] == "failed" and e["session_id"] == "a")
        assert t1 - t0 < 1.0 and failed["code"] == "worker_died"
        deadline = time.monotonic() + 60
        while pool.alive() < 2:
            assert time.monotonic() < deadline, "no replacement worker"
            time.sleep(0.05)
        assert started_a["pid"] not in pool.pids()
        # b's worker never stopped: its frames kept coming, in one sequence
        time.sleep(0.3)
        assert b.write_seq > before_b
        assert not events.of("b", "failed")
        pool.cancel("b")
        events.wait(lambda e: e["type"] == "cancelled" and e["session_id"] == "b")
        # the session that lost its worker can speak again, on the new one
        uid = pool.submit("a", a.handle, "Back again.")
        events.wait(lambda e: e["type"] == "finished" and e["utterance_id"] == uid)
        a.close()
        b.close()


@pytest.mark.skipif(not EspeakBackend.available(), reason="espeak-ng is not installed")
def test_espeak_end_to_end_speech_length_and_not_silent() -> None:
    events = Events()
    # room for the whole utterance, so it can be read after it is done
    with make_pool(events, backend="espeak") as pool, FrameRing.create(capacity=500) as ring:
        assert pool.model_id.startswith("espeak-ng")
        uid = pool.submit("s1", ring.handle, "Hello there. This sentence is spoken by espeak.")
        _, done = events.wait(lambda e: e["type"] == "finished" and e["utterance_id"] == uid)
        out = np.empty((done["frames"], 960), np.int16)
        for seq in range(done["frames"]):
            ring.read(seq, out[seq])
        seconds = done["frames"] * 0.02
        assert 1.5 < seconds < 6.0  # speech length for two short sentences
        rms = np.sqrt(np.mean(out.astype(np.float64) ** 2)) / 32768
        assert rms > 0.01  # not silence
        assert done["rtf"] < 1.0
        # a voice espeak does not have fails that job, and the worker goes on
        bad = pool.submit("s1", ring.handle, "Hello.", voice="xx-nonexistent")
        _, failed = events.wait(lambda e: e["type"] == "failed" and e["utterance_id"] == bad)
        assert failed["code"] == "backend_error" and "voice" in failed["message"]
        ok = pool.submit("s1", ring.handle, "Still here.")
        events.wait(lambda e: e["type"] == "finished" and e["utterance_id"] == ok)
        assert pool.alive() == 1


def test_worker_memory_stays_flat_over_1000_utterances(arena: RingArena) -> None:
    """1 000 utterances in the long form (RINGAUDIO_LONG=1), 400 in CI's: RSS after the 100th and the last."""
    total = 1000 if long_runs() else 400
    events = Events()
    with make_pool(events, lead_ms=0) as pool:
        ring = arena.lease(overflow="drop_oldest")  # nobody reads and no pacing: the worker never waits
        worker = psutil.Process(pool.pids()[0])
        rss: dict[int, int] = {}
        for i in range(1, total + 1):
            uid = pool.submit("s1", ring.handle, f"Utterance number {i}.")
            if i in (100, total):
                events.wait(lambda e, uid=uid: e["type"] == "finished" and e["utterance_id"] == uid, timeout=120)
                rss[i] = worker.memory_info().rss
        assert len(events.of("s1", "finished")) == total
        growth = rss[total] - rss[100]
        assert growth < 4 * 2**20, f"worker grew {growth / 2**20:.1f} MiB over {total - 100} utterances"
        ring.close()


def test_submit_never_blocks_on_a_worker_that_does_not_read() -> None:
    """The pool's callers (the server's event loop) never write to a pipe: with the worker stopped,
    200 sessions' jobs of the largest text allowed (well over what a socket pair buffers) are
    queued at once; the worker is reported stale; once it runs again every cancel is answered."""
    events = Events()
    with RingArena.create(rings=200, capacity=50) as many, make_pool(events) as pool:
        rings = [many.lease() for _ in range(200)]
        (pid,) = pool.pids()
        text = ("Many words to say, and then some more of them. " * 110)[:5000]
        os.kill(pid, signal.SIGSTOP)
        try:
            done = threading.Event()

            def submit_all() -> None:
                for i, ring in enumerate(rings):
                    pool.submit(f"s{i}", ring.handle, text, request_id="q" * 128)
                done.set()

            threading.Thread(target=submit_all, daemon=True).start()
            assert done.wait(10), "submit blocked on a worker that does not read"
            wait_until_stale = time.monotonic() + 10
            while pid not in pool.stale():
                assert time.monotonic() < wait_until_stale, "a stopped worker was never reported stale"
                time.sleep(0.1)
            for i in range(200):
                pool.cancel(f"s{i}")
        finally:
            os.kill(pid, signal.SIGCONT)
        for i in range(200):
            events.wait(lambda e, sid=f"s{i}": e["type"] == "cancelled" and e["session_id"] == sid, timeout=60)
        assert pool.stale() == [] and pool.alive() == 1
        for ring in rings:
            ring.close()
