"""FrameRing, RingReader and RingArena: the Python face of the shared-memory frame ring.

One :class:`RingArena` is one shared-memory segment holding ``n_rings`` rings of
one format. A server creates the arena once and leases a ring per session
(:meth:`RingArena.lease`, returned by :meth:`FrameRing.close`) without
allocating. :meth:`FrameRing.create` is the one-ring case: an arena of one,
leased to the caller, which owns and unlinks it.

Other processes attach by name or by :class:`RingHandle` (name, index, lease
generation): a writer holding the handle of a lease that has ended gets
:class:`~ringaudio.errors.RingClosed`, never a write into the next session.

Real-time rules: ``write``/``read`` with an ``out=`` buffer allocate nothing and
cost one numba call; they sleep (futex, never a busy loop beyond a short spin)
only when the writer is held at the high watermark or a reader waits for data.
"""

from __future__ import annotations

import operator
import time
from collections import deque
from types import TracebackType
from typing import Any, NamedTuple, NoReturn

import numpy as np
import psutil

from ..errors import (
    ArenaFull,
    ConfigError,
    FrameFormatError,
    FrameNotReady,
    FrameOverrun,
    InvalidSequence,
    ReaderSlotsFull,
    RingClosed,
    RingTimeout,
    SegmentError,
)
from ..kernels import ring as k
from . import futex, layout
from .segment import Segment, process_start_ms

_write_frame = k.write_frame
_read_frame = k.read_frame
_wake = futex.wake

SPIN_LOADS = 300  # stamp checks (with a pause hint) a reader spins before it sleeps (~10 µs)
SPIN_ROUNDS = 1000  # rounds over the gating positions a writer spins before it sleeps (~30 µs)
WAIT_TICK = 0.1  # a sleeper re-checks the ring's state at least this often (s)


def _fast_read(ring: Any, seq: int, out: Any, slot: int) -> int:
    """The one-kernel-call read every hot path shares: 0 when the frame was copied (and the reader
    in ``slot`` moved past it, the writer woken if it waits), else the kernel's verdict — NOT_READY,
    OVERRUN, or BAD_ARGUMENT for whatever the kernel cannot take (no ``out``, a closed ring, ...)
    — for the caller's slow path to act on or explain."""
    try:
        r = _read_frame(ring._ctrl, ring._slots, seq, out, ring.generation, slot)
    except (TypeError, AttributeError, OverflowError):
        return int(k.BAD_ARGUMENT)
    if r > 0:
        _wake(ring._space_addr)
    return 0 if r >= 0 else int(r)


class RingHandle(NamedTuple):
    """What another process needs to attach to one leased ring."""

    name: str
    ring_index: int = 0
    generation: int | None = None


def _check_seq(seq: object) -> int:
    try:
        value = operator.index(seq)  # type: ignore[arg-type]
    except TypeError:
        raise InvalidSequence(seq) from None
    if not 0 <= value < layout.SEQ_LIMIT:
        raise InvalidSequence(seq)
    return value


def _deadline(timeout: float | None) -> float:
    return float("inf") if timeout is None else time.monotonic() + timeout


def _policy_code(overflow: str) -> int:
    try:
        return layout.POLICIES[overflow]
    except (KeyError, TypeError):
        raise ConfigError(f"overflow must be one of {sorted(layout.POLICIES)}, got {overflow!r}") from None


class RingArena:
    """Many rings of one format in one shared-memory segment."""

    _segment: Segment | None = None

    def __init__(self, segment: Segment, fmt: layout.RingFormat) -> None:
        self._segment = segment
        self.format = fmt
        self.name = segment.name
        self._rings: list[FrameRing] = []
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
        policy = _policy_code(overflow)
        high, low = layout.watermark_frames(capacity, high_watermark, low_watermark)
        segment = Segment.create(name, fmt.segment_bytes)
        try:
            assert segment.words is not None
            pid = psutil.Process().pid
            header = layout.encode_header(
                fmt, owner_pid=pid, owner_start_ms=process_start_ms(pid), policy=policy, high=high, low=low
            )
            segment.words[: len(header)] = header
            k.warm(fmt.np_dtype)
            arena = cls(segment, fmt)
            for index in range(rings):
                ctrl = arena._ctrl(index)
                k.store(ctrl, layout.C_STATE, layout.FREE)
                del ctrl
            k.store(segment.words, layout.H_READY, 1)
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
        for ring in list(self._rings):
            ring._detach()
        self._rings.clear()
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
            policy = _policy_code(overflow)
        if high_watermark is not None or low_watermark is not None:
            cap = self.format.capacity
            high, low = layout.watermark_frames(
                cap,
                high_watermark if high_watermark is not None else high / cap,
                low_watermark if low_watermark is not None else low / cap,
            )
        k.warm(self.format.np_dtype)
        index = self._free.popleft()
        ctrl = self._ctrl(index)
        generation = int(ctrl[layout.C_GENERATION]) % layout.GEN_MASK + 1  # 1..GEN_MASK, never 0
        k.reset(ctrl, generation, policy, high, low)
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
        ctrl = self._ctrl(index)
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

    def _ctrl(self, index: int) -> np.ndarray:
        assert self._segment is not None and self._segment.words is not None
        start = self.format.ring_offset(index) // 8
        return self._segment.words[start : start + self.format.ctrl_words]

    def _slots(self, index: int) -> np.ndarray:
        assert self._segment is not None and self._segment.mem is not None
        fmt = self.format
        start = fmt.ring_offset(index) + fmt.data_offset
        raw = self._segment.mem[start : start + fmt.capacity * fmt.frame_bytes]
        return raw.view(fmt.np_dtype).reshape((fmt.capacity, fmt.frame_samples * fmt.channels))

    def _shut(self, index: int) -> None:
        """Mark a ring closed and wake its sleepers so they notice."""
        ctrl = self._ctrl(index)
        k.store(ctrl, layout.C_STATE, layout.CLOSED)
        k.bump(ctrl, layout.C_SPACE_EVENT)
        futex.wake(ctrl.ctypes.data + layout.C_SPACE_EVENT * 8)
        futex.wake(ctrl.ctypes.data + layout.C_WRITE_SEQ * 8)


class FrameRing:
    """One ring of frames, written by one writer and read by sequence number."""

    _arena: RingArena | None = None
    _home: RingArena | None = None  # the arena this ring's creator owns, kept for unlink()
    _ctrl: Any = None
    _slots: Any = None

    def __init__(
        self, arena: RingArena, index: int, generation: int, *, leased: bool, owns_arena: bool = False
    ) -> None:
        self._arena = arena
        self.index = index
        self.generation = generation
        self._leased = leased
        self._owns_arena = owns_arena
        fmt = arena.format
        self.format = fmt
        self.capacity = fmt.capacity
        self.frame_shape = fmt.frame_shape
        self.dtype = fmt.np_dtype
        self._mono = fmt.channels == 1
        self._frame_size = fmt.frame_samples * fmt.channels
        k.warm(self.dtype)
        self._ctrl = arena._ctrl(index)
        self._slots = arena._slots(index)
        self._space_addr = self._ctrl.ctypes.data + layout.C_SPACE_EVENT * 8
        self._data_addr = self._ctrl.ctypes.data + layout.C_WRITE_SEQ * 8
        self._default = RingReader(self, 0, 0, _default=True)
        arena._rings.append(self)

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

    @property
    def handle(self) -> RingHandle:
        return RingHandle(self.name, self.index, self.generation)

    @property
    def closed(self) -> bool:
        return self._ctrl is None

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
        self._ctrl = None
        self._slots = None
        if arena is not None and self in arena._rings:
            arena._rings.remove(self)

    def _live_ctrl(self) -> np.ndarray:
        if self._ctrl is None:
            raise RingClosed("ring is closed in this process")
        ctrl: np.ndarray = self._ctrl
        return ctrl

    # -- state ----------------------------------------------------------------
    def _word(self, i: int) -> int:
        return int(k.ld(self._live_ctrl(), i))

    @property
    def write_seq(self) -> int:
        """Next sequence the writer will write (frames written so far in this lease)."""
        return self._word(layout.C_WRITE_SEQ)

    @property
    def fill(self) -> int:
        """Frames written but not yet read by the slowest gating reader (at most ``capacity``)."""
        return min(self.capacity, self.write_seq - int(k.min_gating_position(self._live_ctrl())))

    @property
    def overflow(self) -> str:
        return layout.POLICY_NAMES[self._word(layout.C_POLICY)]

    @property
    def watermarks(self) -> tuple[int, int]:
        """(high, low) in frames."""
        return self._word(layout.C_HIGH), self._word(layout.C_LOW)

    @property
    def dropped(self) -> int:
        """Frames overwritten (drop_oldest) before the default reader published it had read them.

        The writer's view, for metrics: a frame being copied at the instant it
        was overwritten may count here and still reach the reader intact. The
        reader's :class:`FrameOverrun` reports are the exact account.
        """
        return self._word(layout.C_DROPPED)

    @property
    def full_count(self) -> int:
        """Times the writer hit the high watermark (block) or began dropping (drop_oldest)."""
        return self._word(layout.C_FULL_COUNT)

    @property
    def writer_paused(self) -> bool:
        return self._word(layout.C_PAUSED) != 0

    @property
    def state(self) -> str:
        return {layout.FREE: "free", layout.LEASED: "leased", layout.CLOSED: "closed"}[self._word(layout.C_STATE)]

    # -- writing --------------------------------------------------------------
    def _check_frames(self, frames: Any, ndim: int, what: str) -> None:
        if not isinstance(frames, np.ndarray):
            raise FrameFormatError(f"{what} must be a numpy array, got {type(frames).__name__}")
        if frames.dtype != self.dtype:
            raise FrameFormatError(f"{what} has dtype {frames.dtype}, the ring holds {self.dtype}")
        shape = frames.shape[1:] if ndim > len(self.frame_shape) else frames.shape
        if frames.ndim != ndim or shape != self.frame_shape:
            want = ("k", *self.frame_shape) if ndim > len(self.frame_shape) else self.frame_shape
            raise FrameFormatError(f"{what} has shape {frames.shape}, the ring wants {want}")

    # No method below keeps a view of the segment in a local variable of a frame
    # that can raise: a caller holding the exception (and so its traceback)
    # would otherwise keep the mapping alive past close().

    def write(self, frame: np.ndarray, timeout: float | None = None) -> int:
        """Copy one frame into the ring and return its sequence number.

        Under ``block`` the call sleeps while the ring is at its high watermark
        (until the slowest gating reader brings it to the low one); ``timeout``
        bounds that wait (:class:`RingTimeout`). ``drop_oldest`` never waits.
        """
        # Hot path: one kernel call. The kernels accept only the argument types
        # they were compiled for (TypeError otherwise) and check the frame's
        # length themselves, so every unusual case lands in _write_slow.
        try:
            r = _write_frame(self._ctrl, self._slots, frame, self.generation)
        except TypeError:
            return self._write_slow(frame, timeout)
        if r >= 0:
            if r & 1:
                _wake(self._data_addr)
            return r >> 1  # type: ignore[no-any-return]
        return self._write_slow(frame, timeout)

    def offer(self, frame: np.ndarray) -> int:
        """Write one frame if the ring takes it now: its sequence, or -1 if the writer must wait.

        For a writer that serves several rings from one loop: it never sleeps here; under ``block``
        it gets -1 from the high watermark until the readers bring the ring to the low one.
        """
        try:
            r = _write_frame(self._ctrl, self._slots, frame, self.generation)
        except TypeError:
            r = k.BAD_ARGUMENT
        if r >= 0:
            if r & 1:
                _wake(self._data_addr)
            return r >> 1  # type: ignore[no-any-return]
        if r == k.WAIT:
            return -1
        if r == k.BAD_ARGUMENT:  # a multi-channel frame, or a wrong one: the slow path tells which
            try:
                return self._write_slow(frame, 0.0)
            except RingTimeout:
                return -1
        raise RingClosed(f"ring {self.handle} is closed or its lease has ended")

    def _write_slow(self, frame: Any, timeout: float | None) -> int:
        if self._ctrl is None:
            raise RingClosed("ring is closed in this process")
        self._check_frames(frame, len(self.frame_shape), "frame")
        frame = np.ascontiguousarray(frame).reshape(self._frame_size)
        deadline = None
        while True:
            if self._ctrl is None:
                raise RingClosed("ring is closed in this process")
            r = _write_frame(self._ctrl, self._slots, frame, self.generation)
            if r >= 0:
                if r & 1:
                    _wake(self._data_addr)
                return int(r >> 1)
            if r == k.CLOSED:
                raise RingClosed(f"ring {self.handle} is closed or its lease has ended")
            if deadline is None:
                deadline = _deadline(timeout)
            self._wait_for_space(deadline)

    def write_many(self, block: np.ndarray, timeout: float | None = None) -> int:
        """Copy ``block`` (``(k,) + frame_shape``) frame by frame; return the first frame's sequence.

        Waits like :meth:`write` where the watermark says so. On a timeout the
        frames already written stay written (:class:`RingTimeout` says how many).
        """
        self._check_frames(block, len(self.frame_shape) + 1, "block")
        block = np.ascontiguousarray(block).reshape(len(block), self._frame_size)
        first = self.write_seq
        done = 0
        deadline = None
        while done < len(block):
            if self._ctrl is None:
                raise RingClosed(f"ring is closed in this process ({done} of {len(block)} frames written)")
            r = k.write_block(self._ctrl, self._slots, block[done:], self.generation)
            if r >= 0:
                if r & 1:
                    _wake(self._data_addr)
                done += r >> 1
                continue
            if r == k.CLOSED:
                raise RingClosed(f"ring {self.handle} is closed or its lease has ended ({done} frames written)")
            if deadline is None:
                deadline = _deadline(timeout)
            try:
                self._wait_for_space(deadline)
            except RingTimeout as exc:
                raise RingTimeout(f"{exc} ({done} of {len(block)} frames written)") from None
        return first

    def _wait_for_space(self, deadline: float) -> None:
        if k.space_after_spin(self._live_ctrl(), SPIN_ROUNDS):
            return  # a reader right behind: no sleep, no wake-up syscall
        now = time.monotonic()
        if now >= deadline:
            raise RingTimeout(f"ring {self.handle} stayed above its low watermark")
        word = k.begin_writer_wait(self._live_ctrl())
        if word < 0:
            return
        try:
            futex.wait(self._space_addr, word, min(deadline - now, WAIT_TICK))
        finally:
            if self._ctrl is not None:
                k.end_writer_wait(self._ctrl)
        if self._ctrl is not None and time.monotonic() - now >= WAIT_TICK * 0.9:
            self._reap_dead_readers()  # a whole tick without progress: is a gating reader dead?

    def _reap_dead_readers(self) -> None:
        """A gating reader whose process died must not hold the writer forever."""
        ctrl = self._live_ctrl()
        for g in range(1, layout.MAX_GATING_READERS):
            base = layout.READER0 + g * layout.LINE_WORDS
            pid = int(ctrl[base + layout.R_PID])
            if int(ctrl[base + layout.R_ACTIVE]) == 1 and pid and not psutil.pid_exists(pid):
                k.store(ctrl, base + layout.R_ACTIVE, 0)

    # -- reading --------------------------------------------------------------
    def read(self, seq: int, out: np.ndarray | None = None, timeout: float | None = 0.0) -> np.ndarray:
        """Copy frame ``seq`` (into ``out`` if given) through the default reader.

        Reading publishes the default reader's position past ``seq``, which is
        what the writer's watermark follows. Raises :class:`FrameNotReady` if
        the frame is not written within ``timeout`` seconds (0: do not wait,
        None: wait as long as it takes) and :class:`FrameOverrun` (``expected``,
        ``oldest``, ``lost``) if it was overwritten.
        """
        if seq.__class__ is int and _fast_read(self, seq, out, 0) == 0:
            return out  # type: ignore[return-value]
        # no out (allocate), a multi-channel ring, bad arguments, not ready: checked and waited below
        return self._default.read_at(seq, out, timeout)

    def try_read(self, seq: int, out: np.ndarray) -> int:
        """The scheduler's read: copy frame ``seq`` into ``out`` without raising on the common misses.

        Returns 0 when the frame was copied (and the default reader moved past it), ``NOT_READY``
        (< 0) when it is not written yet. Anything else (an overrun, bad arguments, a closed ring)
        is handed to :meth:`read`, which raises the typed error.
        """
        r = _fast_read(self, seq, out, 0)
        if r == 0 or r == k.NOT_READY:
            return r
        self.read(seq, out)  # raises FrameOverrun, FrameFormatError, RingClosed, ...
        return 0

    def skip_to(self, seq: int) -> None:
        """Tell the writer the default reader is done with everything before ``seq`` (read or not).

        A reader that discards frames (after a cancel, or jumping over a gap) calls this so the
        watermark follows it; otherwise a ``block`` writer would wait for frames nobody will read.
        """
        if k.advance(self._live_ctrl(), 0, _check_seq(seq)):
            self._wake_writer()

    def read_many(
        self, seq: int, out: np.ndarray | None = None, count: int | None = None, timeout: float | None = 0.0
    ) -> np.ndarray:
        """Copy the frames from ``seq`` that are ready (at least one, at most ``len(out)``/``count``).

        ``timeout`` is how long to wait for the first of them, as in :meth:`read`.
        """
        return self._default.read_many_at(seq, out, count, timeout)

    def wait(self, seq: int, timeout: float | None = None) -> bool:
        """Sleep until frame ``seq`` can be read (or was overrun); False on timeout.

        Spins briefly on the slot's stamp, then sleeps on the write cursor's
        futex; raises :class:`RingClosed` if the ring is closed meanwhile.
        """
        if k.readable(self._live_ctrl(), self.capacity, seq, self.generation, SPIN_LOADS) != k.NOT_READY:
            return True
        deadline = _deadline(timeout)
        while True:
            word = k.begin_reader_wait(self._live_ctrl(), self.capacity, seq, self.generation)
            if word < 0:
                if self._word(layout.C_STATE) != layout.LEASED and not self._readable(seq):
                    raise RingClosed(f"ring {self.handle} was closed while waiting for frame {seq}")
                return True
            try:
                now = time.monotonic()
                if now >= deadline:
                    return False
                futex.wait(self._data_addr, word, min(deadline - now, WAIT_TICK))
            finally:
                if self._ctrl is not None:
                    k.end_reader_wait(self._ctrl)

    def _readable(self, seq: int) -> bool:
        return bool(k.readable(self._live_ctrl(), self.capacity, seq, self.generation, 0) != k.NOT_READY)

    def reader(self, *, gating: bool = False, start: int | None = None) -> RingReader:
        """A reader with its own cursor (from ``start``, default the oldest readable frame).

        A gating reader holds the writer at the watermark like the default one
        (at most three per ring); a non-gating reader never holds it back and,
        when lapped, learns exactly how many frames it lost.
        """
        if start is None:
            start = max(0, self.write_seq - self.capacity + 1)
        if not gating:
            return RingReader(self, -1, start)
        # The writer may be up to `high` frames past the positions it last saw
        # (its cached limit), so a gating reader cannot join further back than
        # capacity - high behind the writer without risking an overrun.
        start = max(start, self.write_seq + self.watermarks[0] - self.capacity)
        slot = self._claim_gating_slot(start)
        if slot is None:
            raise ReaderSlotsFull(f"ring {self.handle} already has {layout.MAX_GATING_READERS} gating readers")
        return RingReader(self, slot, start)

    def _claim_gating_slot(self, start: int) -> int | None:
        slot = int(k.claim_gating(self._live_ctrl(), start, psutil.Process().pid))
        return None if slot < 0 else slot

    def _oldest(self, expected: int) -> int:
        return layout.oldest_readable(self.write_seq, self.capacity, expected)

    def _wake_writer(self) -> None:
        futex.wake(self._space_addr)

    def _kick_writer(self) -> None:
        """Make a sleeping writer re-check (a gating reader left)."""
        k.bump(self._live_ctrl(), layout.C_SPACE_EVENT)
        futex.wake(self._space_addr)


class RingReader:
    """A cursor over a ring. ``read()`` takes the frame at ``position`` and moves on."""

    def __init__(self, ring: FrameRing, slot: int, position: int, *, _default: bool = False) -> None:
        self._ring: FrameRing | None = ring
        self.slot = slot  # gating slot index, -1 for a non-gating reader
        self.position = position
        self.lost = 0  # frames skipped over all overruns so far
        self._default = _default

    @property
    def gating(self) -> bool:
        return self.slot >= 0

    def _live(self) -> FrameRing:
        ring = self._ring
        if ring is None or ring._ctrl is None:
            raise RingClosed("reader or ring is closed")
        return ring

    def _out(self, ring: FrameRing, out: np.ndarray | None, batch: int | None) -> np.ndarray:
        if out is None:
            shape = ring.frame_shape if batch is None else (batch, *ring.frame_shape)
            return np.empty(shape, dtype=ring.dtype)
        if (
            out.__class__ is not np.ndarray
            or out.dtype is not ring.dtype
            or out.shape[-len(ring.frame_shape) :] != ring.frame_shape
        ):
            ring._check_frames(out, len(ring.frame_shape) + (0 if batch is None else 1), "out")
        if not out.flags.writeable:
            raise FrameFormatError("out is read-only")
        if not out.flags.c_contiguous:
            raise FrameFormatError("out must be C-contiguous")
        return out

    def read_at(self, seq: int, out: np.ndarray | None = None, timeout: float | None = 0.0) -> np.ndarray:
        """Copy frame ``seq``, waiting up to ``timeout`` for it; a gating reader publishes its position past it."""
        ring = self._live()
        seq = _check_seq(seq)
        out = self._out(ring, out, None)
        if out.ndim != len(ring.frame_shape):
            ring._check_frames(out, len(ring.frame_shape), "out")
        flat = out if ring._mono else out.reshape(ring._frame_size)
        deadline = None
        while True:
            r = _read_frame(self._live()._ctrl, ring._slots, seq, flat, ring.generation, self.slot)
            if r >= 0:
                if r:
                    ring._wake_writer()
                return out
            if r != k.NOT_READY or timeout == 0:
                self._raise(r, seq)
            deadline = deadline or _deadline(timeout)
            if not ring.wait(seq, max(0.0, deadline - time.monotonic())):
                self._raise(r, seq)

    def _raise(self, r: int, seq: int) -> NoReturn:
        if r == k.NOT_READY:
            raise FrameNotReady(seq)
        raise FrameOverrun(seq, self._live()._oldest(seq))

    def read_many_at(
        self, seq: int, out: np.ndarray | None = None, count: int | None = None, timeout: float | None = 0.0
    ) -> np.ndarray:
        """Copy up to ``len(out)`` (or ``count``, default ``capacity``) ready frames from ``seq``; returns them."""
        ring = self._live()
        seq = _check_seq(seq)
        if timeout != 0 and not ring._readable(seq) and not ring.wait(seq, timeout):
            raise FrameNotReady(seq)
        out = self._out(ring, out, count if count is not None else ring.capacity)
        if out.ndim != len(ring.frame_shape) + 1:
            ring._check_frames(out, len(ring.frame_shape) + 1, "out")
        flat = out if ring._mono else out.reshape(len(out), ring._frame_size)
        r = k.read_block(ring._ctrl, ring._slots, seq, flat, ring.generation, self.slot)
        if r >= 0:
            if r & 1:
                ring._wake_writer()
            return out[: r >> 1]
        self._raise(r, seq)

    def read(self, out: np.ndarray | None = None, timeout: float | None = 0.0) -> np.ndarray:
        """Copy the frame at ``position`` and advance (waiting up to ``timeout`` for it).

        On :class:`FrameOverrun` the cursor moves to ``oldest`` (``lost`` is
        added to :attr:`lost`), so the next call continues there.
        """
        if _fast_read(self._ring, self.position, out, self.slot) == 0:  # hot path, as in FrameRing.read
            self.position += 1
            return out  # type: ignore[return-value]
        try:
            frame = self.read_at(self.position, out, timeout)
        except FrameOverrun as exc:
            self._skip(exc)
            raise
        self.position += 1
        return frame

    def try_read(self, out: np.ndarray) -> int:
        """Like :meth:`read` into ``out``, but returns ``NOT_READY`` (< 0) instead of raising when the
        frame is not written yet; 0 when it was copied. Overruns still raise :class:`FrameOverrun`."""
        r = _fast_read(self._ring, self.position, out, self.slot)
        if r == 0:
            self.position += 1
            return 0
        if r == k.NOT_READY:
            return r
        self.read(out)
        return 0

    def read_many(
        self, out: np.ndarray | None = None, count: int | None = None, timeout: float | None = 0.0
    ) -> np.ndarray:
        """Copy the ready frames at ``position`` (at least one) and advance past them."""
        try:
            frames = self.read_many_at(self.position, out, count, timeout)
        except FrameOverrun as exc:
            self._skip(exc)
            raise
        self.position += len(frames)
        return frames

    def _skip(self, exc: FrameOverrun) -> None:
        self.position = exc.oldest
        self.lost += exc.lost

    def wait(self, timeout: float | None = None) -> bool:
        """Sleep until the frame at ``position`` is readable (or overrun); False on timeout."""
        return self._live().wait(self.position, timeout)

    def close(self) -> None:
        """Give back a gating slot (idempotent). The default reader is the ring's and stays."""
        ring, self._ring = self._ring, None
        if ring is None or self._default or self.slot < 0 or ring._ctrl is None:
            return
        base = layout.READER0 + self.slot * layout.LINE_WORDS
        k.store(ring._ctrl, base + layout.R_ACTIVE, 0)
        ring._kick_writer()

    def __enter__(self) -> RingReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
