"""RingArena and FrameRing: the shared-memory frame ring's segments and leases.

One :class:`RingArena` is one shared-memory segment holding ``n_rings`` rings of
one format. A server creates the arena once and leases a ring per session
(:meth:`RingArena.lease`, returned by :meth:`FrameRing.close`) without
allocating. :meth:`FrameRing.create` is the one-ring case: an arena of one,
leased to the caller, which owns and unlinks it.

Other processes attach by name or by :class:`RingHandle` (name, index, lease
generation): a writer holding the handle of a lease that has ended gets
:class:`~ringaudio.errors.RingClosed`, never a write into the next session.

A :class:`FrameRing` is written by one writer (:mod:`.writer`) and read by
sequence number (:mod:`.reader`); what both share is in :mod:`.view`.
"""

from __future__ import annotations

from collections import deque
from types import TracebackType
from typing import Any

import numpy as np
import psutil

from ..errors import ArenaFull, RingClosed, SegmentError
from ..kernels.backend import hot as k
from ..kernels.backend import slow as ks
from . import futex, layout
from .reader import RingReader, RingReading
from .segment import Segment, process_start_ms
from .view import RingHandle, policy_code
from .writer import RingWriting


class RingArena:
    """Many rings of one format in one shared-memory segment."""

    _segment: Segment | None = None

    def __init__(self, segment: Segment, fmt: layout.RingFormat) -> None:
        self._segment = segment
        self.format = fmt
        self.name = segment.name
        self.views: list[FrameRing] = []  # the rings mapped through this arena in this process
        self._free: deque[int] = deque()
        self._leased: set[int] = set()
        assert segment.words is not None
        self._defaults = (
            int(segment.words[layout.H_POLICY]),
            int(segment.words[layout.H_HIGH]),
            int(segment.words[layout.H_LOW]),
        )

    # -- life cycle -------------------------------------------------------------
    @classmethod
    def create(
        cls,
        *,
        rings: int,
        capacity: int = 50,
        frame_samples: int = 960,
        channels: int = 1,
        dtype: str = "int16",
        overflow: str = "block",
        high_watermark: float = 0.8,
        low_watermark: float = 0.5,
        name: str | None = None,
    ) -> RingArena:
        """Create a new arena segment (this process owns it and must :meth:`unlink` it)."""
        fmt = layout.RingFormat(capacity, frame_samples, channels, dtype, n_rings=rings)
        policy = policy_code(overflow)
        high, low = layout.watermark_frames(capacity, high_watermark, low_watermark)
        segment = Segment.create(name, fmt.segment_bytes)
        try:
            assert segment.words is not None
            pid = psutil.Process().pid
            header = layout.encode_header(
                fmt, owner_pid=pid, owner_start_ms=process_start_ms(pid), policy=policy, high=high, low=low
            )
            segment.words[: len(header)] = header
            ks.warm(fmt.np_dtype)
            arena = cls(segment, fmt)
            for index in range(rings):
                ctrl = arena.ctrl_words(index)
                ks.store(ctrl, layout.C_STATE, layout.FREE)
                del ctrl
            ks.store(segment.words, layout.H_READY, 1)
        except BaseException:
            segment.close()
            segment.unlink()
            raise
        arena._free.extend(range(rings))
        return arena

    @classmethod
    def attach(cls, name: str) -> RingArena:
        """Map an existing arena created by another process (or this one)."""
        segment = Segment.attach(name)
        try:
            fmt = segment.header_format()
        except SegmentError:
            segment.close()
            raise
        return cls(segment, fmt)

    @property
    def owner(self) -> bool:
        return self._segment is not None and self._segment.owner

    @property
    def closed(self) -> bool:
        return self._segment is None or self._segment.words is None

    def close(self) -> None:
        """Unmap the arena in this process (idempotent). Rings built on it stop working."""
        for ring in list(self.views):
            ring._detach()
        self.views.clear()
        if self._segment is not None:
            self._segment.close()

    def unlink(self) -> None:
        """Remove the segment's name (owner, once). Processes that mapped it keep their mapping."""
        if self._segment is None:
            return
        if self._segment.owner and self._segment.words is not None:
            for index in range(self.format.n_rings):  # wake anybody asleep on a ring that is going away
                self._shut(index)
        self._segment.unlink()

    def __enter__(self) -> RingArena:
        return self

    def __exit__(self, *exc: object) -> None:
        owner = self.owner
        if owner:
            self.unlink()
        self.close()

    # -- leases ---------------------------------------------------------------
    @property
    def n_rings(self) -> int:
        return self.format.n_rings

    @property
    def free(self) -> int:
        return len(self._free)

    @property
    def leased(self) -> int:
        return len(self._leased)

    def lease(
        self,
        *,
        overflow: str | None = None,
        high_watermark: float | None = None,
        low_watermark: float | None = None,
    ) -> FrameRing:
        """Take a free ring for one session, reset to sequence 0 (owner only).

        Rings are handed out least-recently-released first, so a ring just
        returned rests while the others are used.
        """
        self._require_owner("lease")
        if not self._free:
            raise ArenaFull(f"all {self.n_rings} rings of arena {self.name!r} are leased")
        policy, high, low = self._defaults
        if overflow is not None:
            policy = policy_code(overflow)
        if high_watermark is not None or low_watermark is not None:
            cap = self.format.capacity
            high, low = layout.watermark_frames(
                cap,
                high_watermark if high_watermark is not None else high / cap,
                low_watermark if low_watermark is not None else low / cap,
            )
        ks.warm(self.format.np_dtype)
        index = self._free.popleft()
        ctrl = self.ctrl_words(index)
        generation = int(ctrl[layout.C_GENERATION]) % layout.GEN_MASK + 1  # 1..GEN_MASK, never 0
        ks.reset(ctrl, generation, policy, high, low)
        self._leased.add(index)
        return FrameRing(self, index, generation, leased=True)

    def release(self, ring: FrameRing) -> None:
        """Return a leased ring (what :meth:`FrameRing.close` does for a lease)."""
        self._require_owner("release")
        if ring._arena is not self or ring.index not in self._leased:
            return
        self._leased.discard(ring.index)
        self._shut(ring.index)
        ring._detach()
        self._free.append(ring.index)

    def ring(self, index: int = 0, generation: int | None = None) -> FrameRing:
        """A view of ring ``index`` (no lease), e.g. for a worker writing into a session's ring."""
        self.format.ring_offset(index)  # range check
        ctrl = self.ctrl_words(index)
        current = int(k.ld(ctrl, layout.C_GENERATION))
        state = int(k.ld(ctrl, layout.C_STATE))
        del ctrl
        if generation is None:
            generation = current
        if state != layout.LEASED or generation != current:
            raise RingClosed(f"ring {index} of {self.name!r} is not leased at generation {generation}")
        return FrameRing(self, index, generation, leased=False)

    # -- internals ------------------------------------------------------------
    def _require_owner(self, what: str) -> None:
        if self.closed:
            raise RingClosed(f"arena {self.name!r} is closed")
        if not self.owner:
            raise SegmentError(self.name, f"only the arena's owner may {what} rings")

    def ctrl_words(self, index: int) -> np.ndarray:
        """Ring ``index``'s control, reader and stamp lines (a view of the mapping)."""
        assert self._segment is not None and self._segment.words is not None
        start = self.format.ring_offset(index) // 8
        return self._segment.words[start : start + self.format.ctrl_words]

    def slot_array(self, index: int) -> np.ndarray:
        """Ring ``index``'s slots, ``(capacity, samples * channels)`` (a view of the mapping)."""
        assert self._segment is not None and self._segment.mem is not None
        fmt = self.format
        start = fmt.ring_offset(index) + fmt.data_offset
        raw = self._segment.mem[start : start + fmt.capacity * fmt.frame_bytes]
        return raw.view(fmt.np_dtype).reshape((fmt.capacity, fmt.frame_samples * fmt.channels))

    def _shut(self, index: int) -> None:
        """Mark a ring closed and wake its sleepers so they notice."""
        ctrl = self.ctrl_words(index)
        ks.store(ctrl, layout.C_STATE, layout.CLOSED)
        ks.bump(ctrl, layout.C_SPACE_EVENT)
        futex.wake(ctrl.ctypes.data + layout.C_SPACE_EVENT * 8)
        futex.wake(ctrl.ctypes.data + layout.C_WRITE_SEQ * 8)


class FrameRing(RingWriting, RingReading):
    """One ring of frames, written by one writer and read by sequence number."""

    _arena: RingArena | None = None
    _home: RingArena | None = None  # the arena this ring's creator owns, kept for unlink()

    def __init__(
        self, arena: RingArena, index: int, generation: int, *, leased: bool, owns_arena: bool = False
    ) -> None:
        super().__init__(arena.ctrl_words(index), arena.slot_array(index), arena.format, index, generation)
        self._arena = arena
        self._leased = leased
        self._owns_arena = owns_arena
        self._default = RingReader(self, 0, 0, default=True)
        arena.views.append(self)

    # -- life cycle -------------------------------------------------------------
    @classmethod
    def create(
        cls,
        *,
        capacity: int = 50,
        frame_samples: int = 960,
        channels: int = 1,
        dtype: str = "int16",
        overflow: str = "block",
        high_watermark: float = 0.8,
        low_watermark: float = 0.5,
        name: str | None = None,
    ) -> FrameRing:
        """Create a ring in a segment of its own; this process owns it (``unlink()`` once)."""
        arena = RingArena.create(
            rings=1,
            capacity=capacity,
            frame_samples=frame_samples,
            channels=channels,
            dtype=dtype,
            overflow=overflow,
            high_watermark=high_watermark,
            low_watermark=low_watermark,
            name=name,
        )
        ring = arena.lease()
        ring._owns_arena = True
        ring._home = arena
        return ring

    @classmethod
    def attach(cls, name: str | RingHandle, index: int = 0, generation: int | None = None) -> FrameRing:
        """Map a ring created elsewhere, by segment name or by handle."""
        if isinstance(name, RingHandle):
            name, index, generation = name
        arena = RingArena.attach(name)
        try:
            ring = arena.ring(index, generation)
        except BaseException:
            arena.close()
            raise
        ring._owns_arena = True
        return ring

    @property
    def name(self) -> str:
        return self._arena.name if self._arena is not None else ""

    def close(self) -> None:
        """Stop using the ring in this process (idempotent). A lease goes back to its arena."""
        arena = self._arena
        if arena is None:
            return
        if self._leased and arena.owner and not arena.closed:
            arena.release(self)
        self._detach()
        if self._owns_arena:
            arena.close()

    def unlink(self) -> None:
        """Remove the segment of a ring made by :meth:`create` (its creator, once; also after close)."""
        if self._home is not None:
            self._home.unlink()

    def __enter__(self) -> FrameRing:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
        if self._home is not None and self._home.owner:
            self.unlink()

    def __reduce__(self) -> tuple[Any, ...]:
        return (FrameRing.attach, (self.handle,))

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"write_seq={self.write_seq}"
        return f"<FrameRing {self.name!r}#{self.index} gen={self.generation} capacity={self.capacity} {state}>"

    def _detach(self) -> None:
        arena, self._arena = self._arena, None
        self._unmap()
        if arena is not None and self in arena.views:
            arena.views.remove(self)
