"""The stream's bookkeeping as a pure state machine: every interleaving, driven by tables.

No ring, no worker, no clock: a "ring" here is a dict of labelled frames, and the driver reads it
the way a consumer reads a real one (read, send the frame, send the events, read again), so each
case says exactly what a client sees, in order.
"""

from __future__ import annotations

from typing import Any

import pytest

from ringaudio.errors import StreamError
from ringaudio.stream import FLAG_FIRST, FLAG_LAST, StreamState

F, L, FL = FLAG_FIRST, FLAG_LAST, FLAG_FIRST | FLAG_LAST


def utterance(uid: int, first: int, n: int) -> dict[int, tuple[int, int]]:
    """The labels a worker writes for utterance ``uid``: ``n`` frames from ``first``."""
    if n == 1:
        return {first: (uid, FL)}
    frames = {seq: (uid, 0) for seq in range(first, first + n)}
    frames[first] = (uid, F)
    frames[first + n - 1] = (uid, L)
    return frames


def unfinished(uid: int, first: int, n: int) -> dict[int, tuple[int, int]]:
    """What a worker wrote of an utterance that then failed: no frame is labelled last."""
    frames = utterance(uid, first, n + 1)
    del frames[first + n]
    return frames


def show(ev: Any) -> str:
    d = ev.data
    if ev.type == "utterance.start":
        return f"start:{d['utterance_id']}:{d['request_id']}"
    if ev.type == "utterance.end":
        return f"end:{d['utterance_id']}:{d['frames']}:{d['last_sequence']}"
    if ev.type == "error":
        return f"error:{d['code']}:{d.get('utterance_id')}"
    if ev.type == "cancelled":
        return f"cancelled:{d['last_sequence']}:{d['next_sequence']}"
    if ev.type == "overrun":
        return f"overrun:{d['expected']}:{d['received']}"
    return ev.type  # type: ignore[no-any-return]


class Driver:
    """A consumer of one StreamState over a fake ring (what the real shell does, minus the ring)."""

    def __init__(self, state: StreamState | None = None) -> None:
        self.st = state or StreamState(frame_ms=20)
        self.ring: dict[int, tuple[int, int]] = {}
        self.now = 100.0

    @property
    def written(self) -> int:
        return max(self.ring, default=-1) + 1

    def write(self, frames: dict[int, tuple[int, int]]) -> None:
        self.ring.update(frames)

    def read(self, limit: int | None = None) -> list[str]:
        """Read until nothing more comes (or ``limit`` frames): frames as F<seq>, then events."""
        trace: list[str] = []
        frames = 0
        for _ in range(10_000):
            got = None
            st = self.st
            if not (st.blocked or st.due()) and st.cursor in self.ring and (limit is None or frames < limit):
                seq = st.cursor
                uid, flags = self.ring[seq]
                if st.frame(seq, uid, flags, self.now):
                    got = seq
                    frames += 1
                    trace.append(f"F{seq}")
            events = st.pop_events()
            trace += [show(e) for e in events]
            if got is None and not events:
                return trace
        raise AssertionError("the reader never settled")


def op(d: Driver, step: tuple[Any, ...]) -> list[str]:
    """Apply one step of a case; returns what the reader saw because of it."""
    kind, *args = step
    st = d.st
    if kind == "said":
        st.said(args[0], args[1] if len(args) > 1 else None, d.now)
    elif kind == "write":
        d.write(utterance(*args))
    elif kind == "write_unfinished":
        d.write(unfinished(*args))
    elif kind == "read":
        return d.read(*args)
    elif kind == "finished":
        uid, first, last = args
        st.finished(uid, first, last, d.written)
    elif kind == "failed":
        uid, code, last = args
        st.failed(uid, code, "boom", last, d.written)
    elif kind == "cancel":
        st.cancel(d.written)
    elif kind == "cancelled":
        st.cancelled(args[0])
    elif kind == "pause":
        st.pause()
    elif kind == "resume":
        st.resume()
    elif kind == "lap":  # drop_oldest: the reader finds its next frame overwritten
        expected, oldest = args
        assert st.cursor == expected
        st.gap(expected, oldest)
    else:
        raise AssertionError(kind)
    return [show(e) for e in st.pop_events()]


CASES: dict[str, tuple[list[tuple[Any, ...]], list[str]]] = {
    "one utterance: start before its first frame, end after its last": (
        [("said", 1, "r1"), ("write", 1, 0, 3), ("read",), ("finished", 1, 0, 2)],
        ["start:1:r1", "F0", "F1", "F2", "end:1:3:2"],
    ),
    "the reader may see the last frame before the worker says finished": (
        [("said", 1), ("write", 1, 0, 2), ("finished", 1, 0, 1), ("read",)],
        ["start:1:None", "F0", "F1", "end:1:2:1"],
    ),
    "back-to-back utterances: end, then the next start, in sequence": (
        [("said", 1, "a"), ("said", 2, "b"), ("write", 1, 0, 2), ("write", 2, 2, 2), ("read",)],
        ["start:1:a", "F0", "F1", "end:1:2:1", "start:2:b", "F2", "F3", "end:2:2:3"],
    ),
    "a one-frame utterance is first and last": (
        [("said", 1), ("write", 1, 0, 1), ("read",)],
        ["start:1:None", "F0", "end:1:1:0"],
    ),
    "an utterance with no audio starts and ends where the stream is": (
        [
            ("said", 1),
            ("said", 2),
            ("said", 3),
            ("write", 1, 0, 2),
            ("finished", 1, 0, 1),
            ("finished", 2, -1, -1),
            ("write", 3, 2, 1),
            ("read",),
        ],
        ["start:1:None", "F0", "F1", "end:1:2:1", "start:2:None", "end:2:0:None", "start:3:None", "F2", "end:3:1:2"],
    ),
    "cancel before the first frame: nothing of it is heard": (
        [("said", 1), ("cancel",), ("write", 1, 0, 3), ("read",), ("cancelled", 2), ("read",)],
        ["cancelled:None:3"],
    ),
    "cancel mid-way: the rest is dropped and the gap is announced": (
        [("said", 1), ("write", 1, 0, 6), ("read", 2), ("cancel",), ("read",), ("cancelled", 5), ("read",)],
        ["start:1:None", "F0", "F1", "cancelled:1:6"],
    ),
    "cancel after the last frame: only the answer": (
        [("said", 1), ("write", 1, 0, 2), ("read",), ("cancel",), ("cancelled", None), ("read",)],
        ["start:1:None", "F0", "F1", "end:1:2:1", "cancelled:1:2"],
    ),
    "cancel after synthesis finished but before the frames were read: they are dropped": (
        [
            ("said", 1),
            ("write", 1, 0, 4),
            ("finished", 1, 0, 3),
            ("read", 1),
            ("cancel",),
            ("cancelled", None),
            ("read",),
        ],
        ["start:1:None", "F0", "cancelled:0:4"],
    ),
    "an utterance said after the cancel survives it": (
        [
            ("said", 1),
            ("write", 1, 0, 3),
            ("read", 1),
            ("cancel",),
            ("said", 2),
            ("cancelled", 2),
            ("write", 2, 3, 2),
            ("read",),
        ],
        ["start:1:None", "F0", "cancelled:0:3", "start:2:None", "F3", "F4", "end:2:2:4"],
    ),
    "a failure mid-way: its frames play out, then the error, no end": (
        [("said", 1), ("write_unfinished", 1, 0, 3), ("read", 1), ("failed", 1, "backend_error", 2), ("read",)],
        ["start:1:None", "F0", "F1", "F2", "error:backend_error:1"],
    ),
    "a worker death: the error follows everything written so far": (
        [
            ("said", 1),
            ("said", 2),
            ("write_unfinished", 1, 0, 3),
            ("failed", 1, "worker_died", None),
            ("read",),
            ("write", 2, 3, 1),
            ("read",),
        ],
        ["start:1:None", "F0", "F1", "F2", "error:worker_died:1", "start:2:None", "F3", "end:2:1:3"],
    ),
    "a failure of an utterance whose frames were all read: the error at once": (
        [("said", 1), ("write_unfinished", 1, 0, 2), ("read",), ("failed", 1, "backend_error", 1), ("read",)],
        ["start:1:None", "F0", "F1", "error:backend_error:1"],
    ),
    "a failure before any frame: the error where the stream is": (
        [("said", 1), ("failed", 1, "backend_error", -1), ("read",)],
        ["error:backend_error:1"],
    ),
    "pause across an utterance end: the end is not held back, the next frames are": (
        [
            ("said", 1),
            ("said", 2),
            ("write", 1, 0, 2),
            ("write", 2, 2, 2),
            ("read", 2),
            ("pause",),
            ("read",),
            ("resume",),
            ("read",),
        ],
        ["start:1:None", "F0", "F1", "end:1:2:1", "start:2:None", "F2", "F3", "end:2:2:3"],
    ),
    "an overrun across a boundary: the lost end is closed, then the next start": (
        [
            ("said", 1),
            ("said", 2),
            ("write", 1, 0, 4),
            ("write", 2, 4, 4),
            ("finished", 1, 0, 3),
            ("read", 2),
            ("lap", 2, 6),
            ("read",),
        ],
        # utterance 2's first frames were lost and the worker has not said finished: it counts what it heard
        ["start:1:None", "F0", "F1", "overrun:2:6", "end:1:4:3", "start:2:None", "F6", "F7", "end:2:2:7"],
    ),
}


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_interleavings(case: str) -> None:
    steps, expect = CASES[case]
    d = Driver()
    seen: list[str] = []
    for step in steps:
        seen += op(d, step)
    assert seen == expect


def test_pause_holds_frames_back_and_resume_releases_them() -> None:
    d = Driver()
    d.st.said(1, None, d.now)
    d.write(utterance(1, 0, 3))
    d.st.pause()
    assert d.st.blocked and d.read() == []
    with pytest.raises(StreamError) as twice:
        d.st.pause()
    assert twice.value.code == "already_paused"
    d.st.resume()
    assert d.read() == ["start:1:None", "F0", "F1", "F2", "end:1:3:2"]
    with pytest.raises(StreamError) as again:
        d.st.resume()
    assert again.value.code == "not_paused"


def test_a_listener_knows_the_request_ids_said_before_it_joined() -> None:
    owner = StreamState(frame_ms=20)
    owner.said(7, "announcement", 0.0)
    listener = Driver(StreamState.following(owner, cursor=0))
    listener.write(utterance(7, 0, 2))
    assert listener.read() == ["start:7:announcement", "F0", "F1", "end:7:2:1"]


def test_a_listener_joining_mid_utterance_gets_its_start_and_end() -> None:
    owner = StreamState(frame_ms=20)
    owner.said(3, "x", 0.0)
    d = Driver(StreamState.following(owner, cursor=5))
    d.write(utterance(3, 0, 8))
    d.st.finished(3, 0, 7, d.written)
    assert d.read() == ["start:3:x", "F5", "F6", "F7", "end:3:8:7"]  # frames: the whole utterance's


def test_first_audio_is_measured_from_said_to_the_first_frame_read() -> None:
    d = Driver()
    d.st.said(1, None, 10.0)
    d.write(utterance(1, 0, 2))
    d.now = 10.25
    d.read()
    assert d.st.first_audio_ms == pytest.approx(250.0)


def test_a_worker_death_answers_a_cancel_that_was_in_flight() -> None:
    d = Driver()
    d.st.said(1, None, d.now)
    d.write(utterance(1, 0, 4))
    assert d.read(1) == ["start:1:None", "F0"]
    d.st.cancel(d.written)
    d.st.failed(1, "worker_died", "gone", None, d.written)
    assert not d.st.cancelling
    assert d.read() == ["cancelled:0:4", "error:worker_died:1"]  # the jump is announced first, as for an overrun
    assert not d.st.busy


def test_busy_until_everything_said_has_been_read_and_ended() -> None:
    d = Driver()
    assert not d.st.busy
    d.st.said(1, None, d.now)
    assert d.st.busy
    d.write(utterance(1, 0, 2))
    d.read()
    assert not d.st.busy


def test_end_stops_reading_and_tells_a_listener_why() -> None:
    d = Driver()
    d.st.said(1, None, d.now)
    d.write(utterance(1, 0, 3))
    d.st.end("the stream ended")
    assert d.st.blocked
    assert d.read() == ["error:session_ended:None"]
    assert d.read() == [] and not d.st.busy


def test_an_utterance_lost_whole_to_an_overrun_still_starts_and_ends_and_nothing_stays_busy() -> None:
    d = Driver()
    for uid in (1, 2, 3):
        d.st.said(uid, None, d.now)
    d.write(utterance(1, 0, 4))
    d.write(utterance(2, 4, 4))
    d.write(utterance(3, 8, 4))
    assert d.read(2) == ["start:1:None", "F0", "F1"]
    d.st.gap(2, 9)  # the jump goes over all of utterance 2
    seen = ["overrun:2:9", "end:1:2:1", "start:2:None", "end:2:0:None", "start:3:None", "F9", "F10", "F11"]
    assert d.read() == [*seen, "end:3:3:11"]
    assert not d.st.busy and not d.st.utterances


def test_a_failure_that_crosses_a_cancel_is_cut_where_it_stopped() -> None:
    """The backend failed at frame 7 just as a cancel (at 3) reached the worker, which then had no job
    to cancel and answered without a sequence: the cut still covers what the failed job wrote."""
    d = Driver()
    d.st.said(1, None, d.now)
    d.write(unfinished(1, 0, 3))
    assert d.read() == ["start:1:None", "F0", "F1", "F2"]
    d.st.cancel(3)
    d.write(unfinished(1, 0, 8))
    d.st.failed(1, "backend_error", "boom", 7, d.written)
    d.st.cancelled(None)
    assert d.read() == ["cancelled:2:8", "error:backend_error:1"]
    assert d.st.cursor == 8 and not d.st.busy


def test_a_worker_death_during_a_cancel_cuts_everything_it_wrote() -> None:
    d = Driver()
    d.st.said(1, None, d.now)
    d.write(unfinished(1, 0, 3))
    d.read(1)
    d.st.cancel(3)
    d.write(unfinished(1, 0, 8))  # it went on writing until it died
    d.st.failed(1, "worker_died", "gone", None, d.written)
    assert d.st.cursor == 8
    assert d.read() == ["cancelled:0:8", "error:worker_died:1"]


def test_a_listener_that_joins_during_a_cancel_is_cut_like_the_owner() -> None:
    owner = StreamState(frame_ms=20)
    for uid in (1, 2):
        owner.said(uid, None, 0.0)
    owner.cancel(4)
    d = Driver(StreamState.following(owner, cursor=0))
    d.write(utterance(1, 0, 4))
    assert d.read() == []  # nothing is heard while the cancel is out
    d.st.cancelled(5)
    d.write(utterance(3, 6, 1))
    d.st.said(3, "after", 0.0)
    assert d.read() == ["cancelled:None:6", "start:3:after", "F6", "end:3:1:6"]
    assert not d.st.busy


def test_a_listener_that_joins_before_a_pending_failure_gets_its_error() -> None:
    owner = StreamState(frame_ms=20)
    owner.said(1, None, 0.0)
    owner.failed(1, "backend_error", "boom", 2, 3)  # the owner has not read its frames yet
    d = Driver(StreamState.following(owner, cursor=0))
    d.write(unfinished(1, 0, 3))
    assert d.read() == ["start:1:None", "F0", "F1", "F2", "error:backend_error:1"]
    assert not d.st.busy
