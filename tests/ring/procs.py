"""Entry points of the child processes the cross-process tests start (importable by spawn)."""

from __future__ import annotations

import sys
import time
from typing import Any

import numpy as np

from ringaudio import FrameRing, RingHandle

from .patterns import fill


def write_sequence(handle: RingHandle, n: int, batch: int = 0) -> None:
    """Write frames 0..n-1, each derived from its sequence number."""
    with FrameRing.attach(handle) as ring:
        if batch:
            block = np.empty((batch, *ring.frame_shape), ring.dtype)
            for start in range(0, n, batch):
                k = min(batch, n - start)
                for j in range(k):
                    fill(block[j], start + j)
                ring.write_many(block[:k])
        else:
            frame = np.empty(ring.frame_shape, ring.dtype)
            for seq in range(n):
                fill(frame, seq)
                ring.write(frame)


def write_until_killed(handle: RingHandle) -> None:
    with FrameRing.attach(handle) as ring:
        frame = np.empty(ring.frame_shape, ring.dtype)
        seq = 0
        while True:
            fill(frame, seq)
            ring.write(frame)
            seq += 1


def gating_reader_then_hang(handle: RingHandle, ready: Any) -> None:
    """Join a ring as a gating reader, read nothing, and wait to be killed."""
    ring = FrameRing.attach(handle)
    ring.reader(gating=True, start=0)
    ready.set()
    time.sleep(3600)


def own_a_ring_and_hang() -> None:
    """Create a ring, print its name, and wait to be killed (a server that dies)."""
    ring = FrameRing.create(capacity=4)
    ring.write(np.zeros(960, np.int16))
    print(ring.name, flush=True)
    time.sleep(3600)


def attach_read_and_exit(name: str) -> None:
    """A separately started process that uses a ring and exits normally."""
    with FrameRing.attach(name) as ring:
        ring.read(0)
    print("ok", flush=True)


if __name__ == "__main__":
    {"own": lambda: own_a_ring_and_hang(), "attach": lambda: attach_read_and_exit(sys.argv[2])}[sys.argv[1]]()


def write_labelled(handle: RingHandle, n: int) -> None:
    """Write frames 0..n-1 labelled from their sequence: utterance seq // 7 + 1, flags seq % 4, format seq."""
    with FrameRing.attach(handle) as ring:
        frame = np.empty(ring.frame_shape, ring.dtype)
        for seq in range(n):
            fill(frame, seq)
            ring.write(frame, utterance=seq // 7 + 1, flags=seq % 4, fmt=seq)
