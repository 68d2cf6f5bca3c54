"""FrameRing, RingReader and RingArena in one process: semantics, errors, life cycle."""

from __future__ import annotations

import os
import pickle
import time
from multiprocessing import shared_memory

import numpy as np
import pytest

from ringaudio import (
    ArenaFull,
    ConfigError,
    FrameFormatError,
    FrameNotReady,
    FrameOverrun,
    FrameRing,
    ReaderSlotsFull,
    RingArena,
    RingAudioError,
    RingClosed,
    RingTimeout,
    SegmentError,
    WatermarkError,
    wire,
)
from ringaudio.errors import ForeignSegment, LayoutMismatch, SegmentExists, SegmentNotFound
from ringaudio.ring import layout, reclaim_stale

from .patterns import bad, frame


def test_write_then_read_by_sequence() -> None:
    with FrameRing.create(capacity=8) as ring:
        assert ring.name.startswith("ringaudio")
        for seq in range(5):
            assert ring.write(frame(seq)) == seq
        out = np.empty(960, np.int16)
        for seq in (3, 0, 4):  # any order, by sequence number
            assert ring.read(seq, out) is out
            assert bad(out, seq) == 0
        assert bad(ring.read(1), 1) == 0  # allocates when no out is given
        with pytest.raises(FrameNotReady) as info:
            ring.read(5)
        assert info.value.seq == 5
        assert isinstance(info.value, LookupError)


def test_segments_are_private_to_their_user() -> None:
    with FrameRing.create(capacity=4) as ring:
        assert os.stat(f"/dev/shm/{ring.name}").st_mode & 0o777 == 0o600


def test_default_reader_position_drives_fill() -> None:
    with FrameRing.create(capacity=10) as ring:
        for seq in range(6):
            ring.write(frame(seq))
        assert ring.fill == 6
        ring.read(0)
        ring.read(1)
        assert ring.fill == 4  # reading seq publishes the position past it, no extra call
        ring.read(0)  # re-reading an old frame never moves the position back
        assert ring.fill == 4


def test_block_writer_waits_at_high_and_resumes_at_low() -> None:
    with FrameRing.create(capacity=10, high_watermark=0.8, low_watermark=0.5) as ring:
        assert ring.watermarks == (8, 5)
        for seq in range(8):
            ring.write(frame(seq), timeout=0)
        t0 = time.monotonic()
        with pytest.raises(RingTimeout):
            ring.write(frame(8), timeout=0.05)
        assert time.monotonic() - t0 >= 0.04  # it waited (slept) for the timeout
        assert ring.writer_paused and ring.full_count == 1
        for seq in range(2):  # fill 6: still above the low watermark
            ring.read(seq)
        with pytest.raises(RingTimeout):
            ring.write(frame(8), timeout=0.01)
        ring.read(2)  # fill 5 == low: the writer may go on
        assert ring.write(frame(8), timeout=0) == 8
        assert not ring.writer_paused
        assert ring.write_seq == 9


def test_block_never_loses_a_frame_with_a_prompt_reader() -> None:
    with FrameRing.create(capacity=4) as ring:
        out = np.empty(960, np.int16)
        for seq in range(1000):
            ring.write(frame(seq), timeout=1)
            ring.read(seq, out)
            assert bad(out, seq) == 0
        assert ring.dropped == 0


def test_drop_oldest_never_waits_and_counts_exactly() -> None:
    with FrameRing.create(capacity=8, overflow="drop_oldest") as ring:
        for seq in range(30):
            assert ring.write(frame(seq), timeout=0) == seq
        assert ring.dropped == 30 - 8
        assert ring.full_count == 1
        with pytest.raises(FrameOverrun) as info:
            ring.read(3)
        err = info.value
        assert (err.expected, err.oldest, err.lost) == (3, 30 - 8 + 1, 30 - 8 + 1 - 3)
        out = ring.read(err.oldest)
        assert bad(out, err.oldest) == 0


def test_non_gating_reader_is_told_exactly_what_it_lost() -> None:
    with FrameRing.create(capacity=8, overflow="block") as ring:
        listener = ring.reader(gating=False, start=0)
        out = np.empty(960, np.int16)
        got = []
        for seq in range(100):
            ring.write(frame(seq))
            ring.read(seq, out)  # the session's own reader keeps up: block never holds the writer
            if seq % 20 == 19:  # the listener reads only now and then: it is lapped
                while listener.position <= seq:
                    try:
                        pos = listener.position
                        listener.read(out)
                        assert bad(out, pos) == 0
                        got.append(pos)
                    except FrameOverrun:
                        pass
        assert got == sorted(set(got))
        assert len(got) + listener.lost == 100
        assert listener.lost > 0


def test_gating_reader_holds_the_writer_and_releases_it() -> None:
    with FrameRing.create(capacity=10) as ring:
        extra = ring.reader(gating=True, start=0)
        for seq in range(8):
            ring.write(frame(seq))
        for seq in range(8):
            ring.read(seq)  # the default reader is done; the extra one holds the ring full
        with pytest.raises(RingTimeout):
            ring.write(frame(8), timeout=0.02)
        for _ in range(3):
            extra.read()
        assert ring.write(frame(8), timeout=0) == 8
        extra.close()
        extra.close()  # idempotent
        with pytest.raises(RingClosed):
            extra.read()


def test_gating_reader_slots_are_bounded() -> None:
    with FrameRing.create(capacity=4) as ring:
        readers = [ring.reader(gating=True) for _ in range(layout.MAX_GATING_READERS - 1)]
        with pytest.raises(ReaderSlotsFull):
            ring.reader(gating=True)
        readers[0].close()
        ring.reader(gating=True).close()
        for r in readers[1:]:
            r.close()


def test_read_many_and_write_many() -> None:
    with FrameRing.create(capacity=16, high_watermark=1.0) as ring:
        block = np.stack([frame(s) for s in range(10)])
        assert ring.write_many(block) == 0
        assert ring.write_many(block[:3]) == 10
        got = ring.read_many(0, np.empty((4, 960), np.int16))
        assert len(got) == 4 and all(bad(got[i], i) == 0 for i in range(4))
        got = ring.read_many(4, count=100)  # only what is ready
        assert len(got) == 9
        with pytest.raises(FrameNotReady):
            ring.read_many(13)
        reader = ring.reader(start=0)
        assert len(reader.read_many(count=5)) == 5 and reader.position == 5


def test_write_many_blocks_until_the_reader_makes_room() -> None:
    with FrameRing.create(capacity=8) as ring:
        block = np.stack([frame(s) for s in range(20)])
        with pytest.raises(RingTimeout, match="6 of 20 frames written"):
            ring.write_many(block, timeout=0.02)


def test_multichannel_float32() -> None:
    with FrameRing.create(capacity=4, frame_samples=480, channels=2, dtype="float32") as ring:
        f = np.random.default_rng(1).standard_normal((480, 2)).astype(np.float32)
        ring.write(f)
        assert np.array_equal(ring.read(0), f)
        out = np.empty((480, 2), np.float32)
        ring.read(0, out)
        assert np.array_equal(out, f)
        ring.write_many(np.stack([f, f]))
        assert np.array_equal(ring.read_many(1, count=2)[1], f)
        with pytest.raises(FrameFormatError, match="C-contiguous"):
            ring.read(0, np.empty((2, 480), np.float32).T)
        # a non-contiguous frame is still written correctly
        ring.write(np.asfortranarray(f))
        assert np.array_equal(ring.read(3), f)


@pytest.mark.parametrize(
    "bad_frame",
    [
        np.zeros(959, np.int16),
        np.zeros(961, np.int16),
        np.zeros((960, 1), np.int16),
        np.zeros(960, np.float32),
        np.zeros(960, np.int32),
        [0] * 960,
        b"\0" * 1920,
        None,
    ],
    ids=["short", "long", "2d", "float32", "int32", "list", "bytes", "none"],
)
def test_wrong_frames_are_refused_and_lose_nothing(bad_frame: object) -> None:
    with FrameRing.create(capacity=4) as ring:
        ring.write(frame(0))
        with pytest.raises(FrameFormatError) as info:
            ring.write(bad_frame)  # type: ignore[arg-type]
        assert isinstance(info.value, ValueError) and isinstance(info.value, RingAudioError)
        assert ring.write_seq == 1
        assert bad(ring.read(0), 0) == 0
        with pytest.raises(FrameFormatError):
            ring.write_many(np.zeros((2, 959), np.int16))
        with pytest.raises(FrameFormatError):
            ring.read(0, np.zeros(10, np.int16))
        with pytest.raises(FrameFormatError):
            ring.read(0, np.zeros(960, np.float64))
        ro = np.zeros(960, np.int16)
        ro.flags.writeable = False
        with pytest.raises(FrameFormatError, match="read-only"):
            ring.read(0, ro)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"capacity": 1}, ConfigError),
        ({"capacity": 0}, ConfigError),
        ({"high_watermark": 0.5, "low_watermark": 0.6}, WatermarkError),
        ({"high_watermark": 1.5}, WatermarkError),
        ({"overflow": "sometimes"}, ConfigError),
        ({"dtype": "complex64"}, ConfigError),
        ({"name": "has/slash"}, SegmentError),
    ],
)
def test_bad_ring_parameters(kwargs: dict[str, object], error: type[Exception]) -> None:
    with pytest.raises(error):
        FrameRing.create(**kwargs)  # type: ignore[arg-type]


def test_attach_by_name_and_handle_and_pickle() -> None:
    with FrameRing.create(capacity=4) as owner:
        owner.write(frame(0))
        with FrameRing.attach(owner.name) as other:
            assert bad(other.read(0), 0) == 0
            other.write(frame(1))
        assert bad(owner.read(1), 1) == 0
        clone = pickle.loads(pickle.dumps(owner))
        assert clone.handle == owner.handle and bad(clone.read(1), 1) == 0
        clone.close()
        assert owner.write_seq == 2  # the attached side closing does not end the ring


def test_attach_errors() -> None:
    with pytest.raises(SegmentNotFound) as missing:
        FrameRing.attach("ringaudio-does-not-exist")
    assert isinstance(missing.value, FileNotFoundError)
    foreign = shared_memory.SharedMemory(name=f"ringaudio-foreign-{os.getpid()}", create=True, size=4096)
    try:
        with pytest.raises(ForeignSegment):
            FrameRing.attach(foreign.name)
    finally:
        foreign.close()
        foreign.unlink()
    tiny = shared_memory.SharedMemory(name=f"ringaudio-tiny-{os.getpid()}", create=True, size=16)
    try:
        with pytest.raises(ForeignSegment):
            FrameRing.attach(tiny.name)
    finally:
        tiny.close()
        tiny.unlink()


def refused_with_version(version: int, match: str) -> None:
    """Rewrite a live segment's layout version and check that attaching it is refused."""
    with FrameRing.create(capacity=4) as ring:
        raw = shared_memory.SharedMemory(name=ring.name)
        words = np.frombuffer(raw.buf, np.uint64, count=layout.HEADER_BYTES // 8)
        words[layout.H_VERSION] = version
        try:
            with pytest.raises(LayoutMismatch, match=match):
                FrameRing.attach(ring.name)
        finally:
            words[layout.H_VERSION] = layout.LAYOUT_VERSION
            del words
            raw.close()
            from multiprocessing import resource_tracker

            resource_tracker.unregister(raw._name, "shared_memory")  # type: ignore[attr-defined]


def test_layout_version_mismatch_is_refused() -> None:
    refused_with_version(layout.LAYOUT_VERSION + 1, "layout version")


def test_a_version_1_segment_is_refused_with_layout_mismatch() -> None:
    """Version 2 moved each frame's label beside its stamp: a reader of version 2 must not take a
    segment written by version 1 (its frames have no labels), and says so."""
    assert layout.LAYOUT_VERSION == 2
    refused_with_version(1, "layout version 1, this build reads 2")


def test_a_frame_and_its_label_are_read_together() -> None:
    fmt = layout.encode_format(48_000, 20_000, "s16le")
    assert layout.decode_format(fmt) == layout.FrameFormat(48_000, 20_000, "s16le")
    assert layout.decode_format(0) is None
    with FrameRing.create(capacity=8) as ring:
        ring.write(frame(0), utterance=5, flags=wire.FLAG_FIRST, fmt=fmt)
        ring.write(frame(1))  # unlabelled: zeros
        out = np.empty(960, np.int16)
        label = np.zeros(layout.LABEL_WORDS, np.int64)
        assert ring.read_labelled(0, out, label) == 0 and not bad(out, 0)
        assert label.tolist() == [5, wire.FLAG_FIRST, fmt, 1920]
        assert ring.read_labelled(1, out, label, slot=-1) == 0 and label.tolist() == [0, 0, 0, 1920]
        assert ring.read_labelled(2, out, label) == FrameRing.NOT_READY
        with pytest.raises(FrameFormatError):
            ring.read_labelled(0, out, np.zeros(3, np.int64))
        with pytest.raises(FrameFormatError):
            ring.write(frame(2), utterance=-1)


def test_close_is_idempotent_and_closed_rings_refuse_work() -> None:
    ring = FrameRing.create(capacity=4)
    name = ring.name
    ring.close()
    ring.close()
    with pytest.raises(RingClosed):
        ring.write(frame(0))
    with pytest.raises(RingClosed):
        ring.read(0)
    ring.unlink()
    ring.unlink()
    with pytest.raises(SegmentNotFound):
        FrameRing.attach(name)


def test_a_live_segment_name_is_not_taken_over() -> None:
    with FrameRing.create(capacity=4) as ring, pytest.raises(SegmentExists):
        FrameRing.create(capacity=4, name=ring.name)


def test_stale_segment_of_a_dead_owner_is_reclaimed() -> None:
    ring = FrameRing.create(capacity=4)
    name = ring.name
    raw = shared_memory.SharedMemory(name=name)
    words = np.frombuffer(raw.buf, np.uint64, count=layout.HEADER_BYTES // 8)
    words[layout.H_OWNER_PID] = 2**22 + 12345  # beyond pid_max: a dead owner
    del words
    raw.close()
    from multiprocessing import resource_tracker

    resource_tracker.unregister(raw._name, "shared_memory")  # type: ignore[attr-defined]
    ring.close()
    # the creator's mapping is gone; its name stays until someone reclaims it
    assert name in reclaim_stale()
    with pytest.raises(SegmentNotFound):
        FrameRing.attach(name)
    ring.unlink()  # already gone: still fine


def test_create_by_name_reclaims_a_stale_segment() -> None:
    ring = FrameRing.create(capacity=4)
    name = ring.name
    raw = shared_memory.SharedMemory(name=name)
    words = np.frombuffer(raw.buf, np.uint64, count=layout.HEADER_BYTES // 8)
    words[layout.H_OWNER_START] = 1  # same pid, another process start: the owner is gone
    del words
    raw.close()
    from multiprocessing import resource_tracker

    resource_tracker.unregister(raw._name, "shared_memory")  # type: ignore[attr-defined]
    with FrameRing.create(capacity=6, name=name) as again:
        assert again.capacity == 6
    ring.close()


def test_arena_leases_without_allocating_and_recycles() -> None:
    with RingArena.create(rings=3, capacity=4) as arena:
        assert (arena.free, arena.leased) == (3, 0)
        a, b, c = arena.lease(), arena.lease(), arena.lease(overflow="drop_oldest")
        assert {a.index, b.index, c.index} == {0, 1, 2}
        assert c.overflow == "drop_oldest" and a.overflow == "block"
        with pytest.raises(ArenaFull):
            arena.lease()
        a.write(frame(0))
        b.write(frame(100))
        assert bad(a.read(0), 0) == 0 and bad(b.read(0), 100) == 0
        handle = a.handle
        a.close()
        assert arena.free == 1
        d = arena.lease()
        assert d.index == handle.ring_index and d.generation != handle.generation
        assert d.write_seq == 0  # a new lease starts at sequence 0, with nothing readable
        with pytest.raises(FrameNotReady):
            d.read(0)
        # a writer still holding the old lease's handle cannot write into the new session
        with pytest.raises(RingClosed):
            FrameRing.attach(handle)
        stale = arena.ring(handle.ring_index)
        stale.generation = handle.generation  # what an old attached writer would hold
        with pytest.raises(RingClosed):
            stale.write(frame(1))
        stale.close()
        for ring in (b, c, d):
            ring.close()
        assert arena.free == 3


def test_arena_serves_hundreds_of_sessions_from_one_segment() -> None:
    with RingArena.create(rings=500, capacity=50) as arena:
        assert arena.format.segment_bytes < 500 * 50 * 1920 * 1.05  # control data is small beside the audio
        for _cycle in range(2):
            rings = [arena.lease() for _ in range(500)]
            assert arena.free == 0
            for i, ring in enumerate(rings):
                ring.write(frame(i))
            assert all(bad(ring.read(0), i) == 0 for i, ring in enumerate(rings))
            for ring in rings:
                ring.close()
            assert arena.free == 500


def test_arena_attach_from_another_handle_and_owner_rules() -> None:
    with RingArena.create(rings=2, capacity=4) as arena:
        ring = arena.lease()
        with RingArena.attach(arena.name) as other:
            assert not other.owner
            with pytest.raises(SegmentError):
                other.lease()
            view = other.ring(ring.index, ring.generation)
            view.write(frame(5))
            assert bad(ring.read(0), 5) == 0
        ring.close()


def test_released_ring_wakes_a_blocked_writer_with_ring_closed() -> None:
    import threading

    with RingArena.create(rings=1, capacity=4) as arena:
        ring = arena.lease()
        writer = arena.ring(ring.index, ring.generation)
        for seq in range(3):
            writer.write(frame(seq))
        errors: list[BaseException] = []

        def blocked() -> None:
            try:
                writer.write(frame(3), timeout=10)
            except BaseException as exc:
                errors.append(exc)

        t = threading.Thread(target=blocked)
        t.start()
        time.sleep(0.05)
        t0 = time.monotonic()
        ring.close()  # the session ends: its writer must stop waiting now, not at its timeout
        t.join(5)
        assert not t.is_alive()
        assert time.monotonic() - t0 < 1.0
        assert errors and isinstance(errors[0], RingClosed)
        writer.close()


def test_reader_wait_wakes_on_write_and_times_out() -> None:
    import threading

    with FrameRing.create(capacity=4) as ring:
        assert ring.wait(0, timeout=0.02) is False
        threading.Timer(0.05, lambda: ring.write(frame(0))).start()
        assert ring.wait(0, timeout=5) is True
        assert bad(ring.read(0), 0) == 0
