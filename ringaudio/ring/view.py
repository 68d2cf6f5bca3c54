"""What every kind of access to one ring shares: its mapping, its state words, argument checks.

:class:`RingView` is the base of :class:`~ringaudio.ring.arena.FrameRing`; the writing and reading
halves (:mod:`.writer`, :mod:`.reader`) build on it and touch the shared memory only through the
kernels. The mapping is the arena's: a view stops working (``RingClosed``) when the ring is closed
in this process, its lease ends or the arena is unmapped.
"""

from __future__ import annotations

import operator
import time
from typing import Any, NamedTuple

import numpy as np

from ..errors import ConfigError, FrameFormatError, InvalidSequence, RingClosed
from ..kernels.backend import hot as k
from ..kernels.backend import slow as ks
from . import futex, layout

SPIN_LOADS = 300  # stamp checks (with a pause hint) a reader spins before it sleeps (~10 µs)
SPIN_ROUNDS = 1000  # rounds over the gating positions a writer spins before it sleeps (~30 µs)
WAIT_TICK = 0.1  # a sleeper re-checks the ring's state at least this often (s)


class RingHandle(NamedTuple):
    """What another process needs to attach to one leased ring."""

    name: str
    ring_index: int = 0
    generation: int | None = None


def check_seq(seq: object) -> int:
    try:
        value = operator.index(seq)  # type: ignore[arg-type]
    except TypeError:
        raise InvalidSequence(seq) from None
    if not 0 <= value < layout.SEQ_LIMIT:
        raise InvalidSequence(seq)
    return value


def deadline(timeout: float | None) -> float:
    return float("inf") if timeout is None else time.monotonic() + timeout


def policy_code(overflow: str) -> int:
    try:
        return layout.POLICIES[overflow]
    except (KeyError, TypeError):
        raise ConfigError(f"overflow must be one of {sorted(layout.POLICIES)}, got {overflow!r}") from None


class RingView:
    """One ring's words and slots in this process, and what can be read off them."""

    _ctrl: Any = None  # control, reader and stamp lines (uint64), a view of the arena's mapping
    _slots: Any = None  # (capacity, samples * channels)

    def __init__(
        self, ctrl: np.ndarray, slots: np.ndarray, fmt: layout.RingFormat, index: int, generation: int
    ) -> None:
        self.index = index
        self.generation = generation
        self.format = fmt
        self.capacity = fmt.capacity
        self.frame_shape = fmt.frame_shape
        self.dtype = fmt.np_dtype
        self._mono = fmt.channels == 1
        self._frame_size = fmt.frame_samples * fmt.channels
        ks.warm(self.dtype)
        self._ctrl = ctrl
        self._slots = slots
        self._space_addr = ctrl.ctypes.data + layout.C_SPACE_EVENT * 8
        self._data_addr = ctrl.ctypes.data + layout.C_WRITE_SEQ * 8

    @property
    def name(self) -> str:
        raise NotImplementedError

    @property
    def handle(self) -> RingHandle:
        return RingHandle(self.name, self.index, self.generation)

    @property
    def closed(self) -> bool:
        return self._ctrl is None

    def _unmap(self) -> None:
        """Drop this view's references to the mapping (the arena may unmap it after this)."""
        self._ctrl = None
        self._slots = None

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

    def oldest(self, expected: int) -> int:
        """Where a reader lapped at ``expected`` resumes (the oldest frame safe to read now)."""
        return int(layout.oldest_readable(self.write_seq, self.capacity, expected))

    # -- checks and wake-ups --------------------------------------------------------------------------
    def _check_frames(self, frames: Any, ndim: int, what: str) -> None:
        if not isinstance(frames, np.ndarray):
            raise FrameFormatError(f"{what} must be a numpy array, got {type(frames).__name__}")
        if frames.dtype != self.dtype:
            raise FrameFormatError(f"{what} has dtype {frames.dtype}, the ring holds {self.dtype}")
        shape = frames.shape[1:] if ndim > len(self.frame_shape) else frames.shape
        if frames.ndim != ndim or shape != self.frame_shape:
            want = ("k", *self.frame_shape) if ndim > len(self.frame_shape) else self.frame_shape
            raise FrameFormatError(f"{what} has shape {frames.shape}, the ring wants {want}")

    def _wake_writer(self) -> None:
        futex.wake(self._space_addr)

    def _kick_writer(self) -> None:
        """Make a sleeping writer re-check (a gating reader left)."""
        ks.bump(self._live_ctrl(), layout.C_SPACE_EVENT)
        futex.wake(self._space_addr)

    def wake_readers(self) -> None:
        """Wake every reader asleep on this ring (in any process), e.g. because something other than
        a frame happened that they should look at; they go back to sleep if it does not concern them."""
        if self._ctrl is not None:
            futex.wake(self._data_addr)
