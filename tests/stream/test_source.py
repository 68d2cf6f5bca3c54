"""A stream's reader on a real ring (no worker, no engine): the edge between the ring, the pure
state and the threads that deliver events."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from ringaudio import FrameRing
from ringaudio import wire as P
from ringaudio.stream import FLAG_FIRST, FLAG_LAST, Source, StreamState

from ..ring.patterns import bad, frame


def test_a_frame_whose_start_goes_first_is_not_lost_to_a_writer_that_fills_the_ring() -> None:
    """The read that finds an utterance's first frame publishes the reader's position past it; the
    frame is kept by the reader (not re-read) while utterance.start goes out, so a block writer
    allowed to fill the whole ring (high watermark 1.0) cannot take it away."""
    with FrameRing.create(capacity=4, overflow="block", high_watermark=1.0, low_watermark=0.5) as ring:
        source = Source(ring, StreamState(frame_ms=20), 0, 960)
        source.state.said(1, "r", time.monotonic())
        ring.write(frame(0), utterance=1, flags=FLAG_FIRST)
        out = np.empty(960, np.int16)
        assert source.read_into(out, time.monotonic()) is None  # utterance.start goes first
        assert [e.type for e in source.pop_events()] == ["utterance.start"]
        for seq in range(1, 5):  # the writer may now write into frame 0's slot
            assert ring.offer(frame(seq), utterance=1, flags=FLAG_LAST if seq == 4 else 0) == seq
        got = []
        while (label := source.read_into(out, time.monotonic())) is not None:
            assert not bad(out, label[0])
            got.append(label[0])
        assert got == [0, 1, 2, 3, 4]
        assert [e.type for e in source.pop_events()] == ["utterance.end"]


def test_a_reader_waiting_for_a_cancels_answer_sleeps_instead_of_spinning() -> None:
    with FrameRing.create(capacity=8) as ring:
        source = Source(ring, StreamState(frame_ms=20), 0, 960)
        source.state.said(1, None, time.monotonic())
        ring.write(frame(0), utterance=1, flags=FLAG_FIRST)  # a frame is there, but not to be read
        source.state.cancel(ring.write_seq)
        calls = 0
        answered = threading.Timer(0.3, source.deliver, ({"type": "cancelled", "last_sequence": 0},))
        answered.start()
        t0 = time.monotonic()
        while source.state.cancelling or source.inbox:
            calls += 1
            source.wait(0.1)
            source.pop_events()
            assert time.monotonic() - t0 < 5
        answered.join()
        assert calls < 20  # woken by the answer, not returning at once because frame 0 is written
        assert source.position == 1


@pytest.mark.parametrize(
    ("hold_with", "release_with"), [("message", "message"), ("message", "into"), ("into", "message")]
)
def test_a_held_frame_goes_out_once_whichever_read_holds_and_releases_it(hold_with: str, release_with: str) -> None:
    """The server reads frames as whole messages (read_message) or into a buffer (read_into, when it
    converts them); a format change can switch it from one to the other between the read that
    holds a frame (its utterance.start first) and the one that hands it out."""
    with FrameRing.create(capacity=4, overflow="block", high_watermark=1.0, low_watermark=0.5) as ring:
        source = Source(ring, StreamState(frame_ms=20), 0, 960)
        source.state.said(1, "r", time.monotonic())
        ring.write(frame(0), utterance=1, flags=FLAG_FIRST)
        out = np.empty(960, np.int16)

        def read(how: str) -> tuple[int, np.ndarray, int] | None:
            if how == "into":
                label = source.read_into(out, time.monotonic())
                return None if label is None else (label[0], out.copy(), label[2])
            got = source.read_message(time.monotonic(), 42)
            if got is None:
                return None
            msg, seq, uid, flags = got
            assert msg == P.audio_message(flags, uid, seq, 42, msg[-1920:])  # header, prefix, payload
            assert source.payload_bytes == 1920
            return seq, np.frombuffer(msg, np.int16, offset=4 + P.HEADER_SIZE), flags

        assert read(hold_with) is None  # utterance.start goes first
        assert [e.type for e in source.pop_events()] == ["utterance.start"]
        for seq in range(1, 5):  # the writer may now write into frame 0's slot
            assert ring.offer(frame(seq), utterance=1, flags=FLAG_LAST if seq == 4 else 0) == seq
        got = []
        while (r := read(release_with)) is not None:
            seq, samples, flags = r
            assert not bad(samples, seq)
            got.append((seq, flags))
        assert got == [(0, FLAG_FIRST), (1, 0), (2, 0), (3, 0), (4, FLAG_LAST)]
        assert [e.type for e in source.pop_events()] == ["utterance.end"]
