"""Frames per second from a producer process to a consumer process, side by side in one run.

Every transport moves the same frames (1920 B = 960 int16 samples, 20 ms mono at 48 kHz; 3840 B = 1920
samples) from a child process that produces them to this process, which consumes them: the ring
single-frame (``write``/``read`` by sequence) and batched (``write_many``/``read_many``), and the
peers ``multiprocessing.Queue`` (array copies and bytes), ``multiprocessing.Pipe`` and faster-fifo.
``np.copyto`` of the same frames inside one process is the physical ceiling.

The single-frame ring is the product's default (50 slots, watermarks 0.8/0.5); the batched one
moves 64 frames per call through a 512-slot ring. One round moves ``RINGAUDIO_BENCH_FRAMES``
frames (2 000 by default: a smoke run that keeps the
harness alive in CI; ``python -m bench.ring`` measures with 200 000). The child is started before
timing and told to go per round, so process start-up is never measured.

Each test also asserts what was moved, never how fast: its untimed warm-up round looks at every
frame (the size sent, every sample as written), each round takes exactly ``N`` frames, and nothing is
left over after the last; ``np.copyto`` puts each frame where it belongs.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

from ringaudio import FrameRing, RingHandle

N = int(os.environ.get("RINGAUDIO_BENCH_FRAMES", "2000"))
BATCH = 50  # np.copyto block: one default ring's worth (1 s of 20 ms frames)
RING_BATCH = 64  # frames per write_many/read_many in the batched ring benchmark
RING_BATCH_CAPACITY = 512  # a ring sized for bulk transfer (the single-frame benchmark uses the default 50)
SIZES = {1920: 960, 3840: 1920}  # frame bytes -> int16 samples
CTX = mp.get_context("spawn")

# -- producers (child processes) ----------------------------------------------------------------


def _ring_producer(handle: RingHandle, go: Any, n: int, batched: bool) -> None:
    with FrameRing.attach(handle) as ring:
        frame = np.ones(ring.frame_shape, ring.dtype)
        block = np.ones((RING_BATCH, *ring.frame_shape), ring.dtype)
        while go.get() is not None:
            if batched:
                for start in range(0, n, RING_BATCH):
                    ring.write_many(block[: min(RING_BATCH, n - start)])
            else:
                for _ in range(n):
                    ring.write(frame)


def _queue_producer(q: Any, go: Any, n: int, samples: int, as_bytes: bool) -> None:
    frame = np.ones(samples, np.int16)
    while go.get() is not None:
        for _ in range(n):
            q.put(frame.tobytes() if as_bytes else frame.copy())


def _pipe_producer(conn: Any, go: Any, n: int, samples: int) -> None:
    frame = np.ones(samples, np.int16)
    while go.get() is not None:
        for _ in range(n):
            conn.send_bytes(frame)


def _fifo_producer(q: Any, go: Any, n: int, samples: int) -> None:
    frame = np.ones(samples, np.int16).tobytes()
    while go.get() is not None:
        for _ in range(n):
            q.put(frame)


# -- harness -------------------------------------------------------------------------------------


class Producer:
    """A child process that produces ``N`` frames each time it is told to go."""

    def __init__(self, target: Callable[..., None], *args: Any) -> None:
        self.go: Any = CTX.SimpleQueue()
        self.proc = CTX.Process(target=target, args=(*args[:1], self.go, *args[1:]), daemon=True)
        self.proc.start()

    def round(self) -> None:
        self.go.put(True)

    def stop(self) -> None:
        self.go.put(None)
        self.proc.join(30)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join()


def run(benchmark: Any, producer: Producer, consume: Callable[[bool], int], frame_bytes: int, peer: str) -> None:
    """Time rounds of ``N`` frames. ``consume(check)`` returns the frames it took; with ``check`` (the
    untimed warm-up round) it also looks at every one: the size sent, every sample as written."""

    def one_round() -> int:
        producer.round()
        return consume(False)

    try:
        producer.round()
        assert consume(True) == N  # warm both sides (caches, first-touch of pages), and every frame whole
        benchmark.extra_info.update(frames=N, frame_bytes=frame_bytes, transport=peer)
        assert benchmark.pedantic(one_round, rounds=5, iterations=1) == N
    finally:
        producer.stop()


def intact(frame: Any, samples: int) -> bool:
    """A frame as the producers send it: ``samples`` int16 ones (bytes or an array)."""
    pcm = np.frombuffer(frame, np.int16) if isinstance(frame, bytes) else np.asarray(frame)
    return pcm.dtype == np.int16 and pcm.shape == (samples,) and bool((pcm == 1).all())


@pytest.fixture(params=sorted(SIZES), ids=lambda b: f"{b}B")
def frame_bytes(request: pytest.FixtureRequest) -> Iterator[int]:
    yield request.param


# -- the benchmarks ------------------------------------------------------------------------------


@pytest.mark.parametrize("batched", [False, True], ids=["single", "batched"])
def test_ringaudio(benchmark: Any, frame_bytes: int, batched: bool) -> None:
    samples = SIZES[frame_bytes]
    capacity = RING_BATCH_CAPACITY if batched else 50
    with FrameRing.create(capacity=capacity, frame_samples=samples) as ring:  # default watermarks 0.8/0.5
        producer = Producer(_ring_producer, ring.handle, N, batched)
        out = np.empty(samples, np.int16)
        block = np.empty((RING_BATCH, samples), np.int16)
        state = {"seq": 0}

        def consume(check: bool) -> int:
            start = seq = state["seq"]
            end = start + N
            if check:
                while seq < end:
                    got = ring.read_many(seq, block, timeout=30) if batched else ring.read(seq, out, timeout=30)
                    assert all(intact(frame, samples) for frame in got.reshape(-1, samples)), seq
                    seq += len(got) if batched else 1
            elif batched:
                while seq < end:
                    seq += len(ring.read_many(seq, block, timeout=30))
            else:
                while seq < end:
                    ring.read(seq, out, timeout=30)
                    seq += 1
            state["seq"] = seq
            return seq - start

        run(benchmark, producer, consume, frame_bytes, "ringaudio batched" if batched else "ringaudio")
        assert ring.write_seq == state["seq"]  # read exactly what was written: nothing lost, nothing left


@pytest.mark.parametrize("as_bytes", [False, True], ids=["ndarray", "bytes"])
def test_mp_queue(benchmark: Any, frame_bytes: int, as_bytes: bool) -> None:
    q: Any = CTX.Queue()
    samples = SIZES[frame_bytes]
    producer = Producer(_queue_producer, q, N, samples, as_bytes)

    def consume(check: bool) -> int:
        if check:
            assert all(intact(q.get(), samples) for _ in range(N))
        else:
            for _ in range(N):
                q.get()
        return N

    try:
        run(benchmark, producer, consume, frame_bytes, f"multiprocessing.Queue ({'bytes' if as_bytes else 'ndarray'})")
        with pytest.raises(queue.Empty):
            q.get(timeout=0.05)  # the producer sent no more than was taken
    finally:
        q.close()
        q.join_thread()


def test_mp_pipe(benchmark: Any, frame_bytes: int) -> None:
    reader, writer = CTX.Pipe(duplex=False)
    samples = SIZES[frame_bytes]
    producer = Producer(_pipe_producer, writer, N, samples)

    def consume(check: bool) -> int:
        if check:
            assert all(intact(reader.recv_bytes(), samples) for _ in range(N))
        else:
            for _ in range(N):
                reader.recv_bytes()
        return N

    try:
        run(benchmark, producer, consume, frame_bytes, "multiprocessing.Pipe")
        assert not reader.poll(0.05)  # the producer sent no more than was taken
    finally:
        reader.close()
        writer.close()


def test_faster_fifo(benchmark: Any, frame_bytes: int) -> None:
    faster_fifo = pytest.importorskip("faster_fifo")
    q = faster_fifo.Queue(max_size_bytes=64 * 1024 * 1024)
    samples = SIZES[frame_bytes]
    producer = Producer(_fifo_producer, q, N, samples)

    def consume(check: bool) -> int:
        if check:
            assert all(intact(q.get(timeout=30), samples) for _ in range(N))
        else:
            for _ in range(N):
                q.get(timeout=30)
        return N

    try:
        run(benchmark, producer, consume, frame_bytes, "faster-fifo")
        with pytest.raises(queue.Empty):
            q.get(timeout=0.05)  # the producer sent no more than was taken
    finally:
        q.close()


@pytest.mark.parametrize("resident", [False, True], ids=["streaming", "cached"])
def test_copyto_ceiling(benchmark: Any, frame_bytes: int, resident: bool) -> None:
    """Memory bandwidth in one process: frames copied by ``np.copyto``, 50 at a time.

    ``streaming`` walks 64 MiB buffers (memory bandwidth, the ceiling the targets use, as a frame
    crossing between processes leaves one core's cache for another's); ``cached`` recopies one
    96/192 KB block that stays in L2, an upper bound no cross-process transfer can reach.
    """
    samples = SIZES[frame_bytes]
    frames = BATCH if resident else (64 * 2**20) // frame_bytes // BATCH * BATCH
    # each frame numbered in its first sample, so a copy that went to the wrong place shows; both
    # buffers written here, so no page faults inside the timing
    src = np.empty((frames, samples), np.int16)
    src[:] = np.arange(samples, dtype=np.int16)
    src[:, 0] = np.arange(frames) % 32_749
    dst = np.ones((frames, samples), np.int16)

    def one_round() -> None:
        at = 0
        for _ in range(N // BATCH):
            np.copyto(dst[at : at + BATCH], src[at : at + BATCH])
            at = (at + BATCH) % frames

    one_round()
    kind = "cached" if resident else "streaming"
    benchmark.extra_info.update(frames=N, frame_bytes=frame_bytes, transport=f"np.copyto ({kind})")
    benchmark.pedantic(one_round, rounds=5, iterations=1)
    reached = min(frames, N // BATCH * BATCH)  # every round starts again at frame 0
    assert reached > 0 and np.array_equal(dst[:reached], src[:reached]) and (dst[reached:] == 1).all()
