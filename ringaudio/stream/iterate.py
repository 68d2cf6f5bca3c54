"""Iterating a stream or a listener: frames and events in order, sleeping on the ring between them.

A waiting iterator sleeps on the ring's futex (the worker's next write wakes it, and so does the
engine when an event arrives for the stream); a paused one on its resume. Nothing polls. The async
form sleeps the same way in an executor thread (at most ``WAIT_MAX`` at a time), so the event loop
is never blocked.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING

import numpy as np

from ..ring.layout import ENCODINGS
from .core import Event, Frame

if TYPE_CHECKING:
    from .source import Source

OPUS_CODE = ENCODINGS["opus"]
WAIT_MAX = 0.1  # the longest one sleep lasts (s): a wake-up that was missed costs at most this


def _step(source: Source, buf: np.ndarray) -> Frame | Event | bool:
    """The next frame or event; True when the caller should wait, False when the stream is done."""
    event = source.next_event()
    if event is not None:
        return event
    if source.state.ended:
        return False
    got = source.read_into(buf, time.monotonic())
    if got is not None:
        if (source.format_word >> 24) & 0xFF == OPUS_CODE:
            return Frame(got[0], buf[:0].copy(), got[1], got[2], buf.view(np.uint8)[: source.payload_bytes].tobytes())
        n = source.payload_bytes // 2
        return Frame(got[0], (buf[:n] if 0 < n < len(buf) else buf).copy(), got[1], got[2])  # a lower level: fewer
    if source.events:
        return source.events.popleft()
    return source.busy or source.paused


def frames_and_events(source: Source) -> Iterator[Frame | Event]:
    buf = np.empty(source.frame_samples, np.int16)
    while True:
        item = _step(source, buf)
        if item is False:
            return
        if item is True:
            source.wait(WAIT_MAX)
            continue
        yield item  # type: ignore[misc]


async def frames_and_events_async(source: Source) -> AsyncIterator[Frame | Event]:
    buf = np.empty(source.frame_samples, np.int16)
    loop = asyncio.get_running_loop()
    while True:
        item = _step(source, buf)
        if item is False:
            return
        if item is True:
            await loop.run_in_executor(None, source.wait, WAIT_MAX)
            continue
        yield item  # type: ignore[misc]
