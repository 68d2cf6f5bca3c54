"""The reading half of a ring: reads by sequence number, the default gating reader, extra readers.

Real-time rules: ``read``/``read_labelled`` with an ``out=`` buffer allocate nothing and cost one
numba call; a reader sleeps (futex, after a short spin) only when it waits for data.
"""

from __future__ import annotations

import time
from typing import Any, NoReturn

import numpy as np
import psutil

from .. import wire
from ..errors import FrameFormatError, FrameNotReady, FrameOverrun, ReaderSlotsFull, RingClosed
from ..kernels.backend import hot as k
from ..kernels.backend import slow as ks
from . import futex, layout
from .view import SPIN_LOADS, WAIT_TICK, RingView, check_seq, deadline

_read_frame = k.read_frame
_read_labelled = k.read_labelled
_read_message = getattr(k, "read_message", None)  # the C kernels' (the numba set has none: see read_message)
# the C kernels' on a POSIX system where writers are woken by futex (see send_frames)
_send_frames = getattr(k, "send_frames", None) if futex.AVAILABLE else None
_wake = futex.wake
NOT_READY = k.NOT_READY
OVERRUN = k.OVERRUN
# why send_frames stopped short, beside NOT_READY and OVERRUN (the C kernels' values)
LONG_WAY, AT_LIMIT, BLOCKED = (
    getattr(k, name, value) for name, value in (("LONG_WAY", 1), ("AT_LIMIT", 2), ("BLOCKED", 3))
)


def _fast_read(ring: Any, seq: int, out: Any, slot: int) -> int:
    """The one-kernel-call read every hot path shares: 0 when the frame was copied (and the reader
    in ``slot`` moved past it, the writer woken if it waits), else the kernel's result — NOT_READY,
    OVERRUN, or BAD_ARGUMENT for whatever the kernel cannot take (no ``out``, a closed ring, ...)
    — for the caller's slow path to act on or explain."""
    try:
        r = _read_frame(ring._ctrl, ring._slots, seq, out, ring.generation, slot)
    except (TypeError, AttributeError, OverflowError):
        return int(k.BAD_ARGUMENT)
    if r > 0:
        _wake(ring._space_addr)
    return 0 if r >= 0 else int(r)


class RingReading(RingView):
    NOT_READY = NOT_READY  # what read_labelled returns for a frame not written yet ...
    OVERRUN = OVERRUN  # ... and for one overwritten before (or while) it was read
    _default: RingReader  # the ring's own gating reader (slot 0), made by the ring's constructor
    _scratch: tuple[np.ndarray, np.ndarray] | None = None  # read_message's buffers on the numba kernels

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

    def read_labelled(self, seq: int, out: np.ndarray, label: np.ndarray, slot: int = 0) -> int:
        """The streams' read: frame ``seq`` into ``out`` and its label into ``label`` (int64, 4
        words: utterance id, flags, format word, payload bytes), for the gating reader ``slot`` (0:
        the default one; -1: a reader that does not gate the writer). Never waits, never raises on
        the common misses: 0 when copied, ``NOT_READY`` or ``OVERRUN`` (both < 0; :meth:`oldest`
        says where a lapped reader resumes). Bad arguments and a closed ring raise."""
        try:
            r = _read_labelled(self._ctrl, self._slots, seq, out, label, self.generation, slot)
        except (TypeError, AttributeError, OverflowError):
            r = k.BAD_ARGUMENT
        if r >= 0:
            if r:
                _wake(self._space_addr)
            return 0
        if r == k.BAD_ARGUMENT:
            self._live_ctrl()
            check_seq(seq)
            if not isinstance(label, np.ndarray) or label.dtype != np.int64 or label.shape != (layout.LABEL_WORDS,):
                raise FrameFormatError(f"label must be an int64 array of {layout.LABEL_WORDS} words")
            self._check_frames(out, 1, "out")
            raise FrameFormatError("out must be a flat, writable, C-contiguous frame (mono rings only)")
        return int(r)

    def read_message(self, seq: int, now_us: int, slot: int = 0) -> tuple[bytes, int, int, int] | int:
        """The server's read: frame ``seq`` as the whole WebSocket message a client gets for it
        (RFC 6455 binary frame header, the audio header of :mod:`ringaudio.wire` stamped with
        ``now_us``, the label's payload bytes), with its utterance id, flags and format word; or,
        as :meth:`read_labelled`, ``NOT_READY`` or ``OVERRUN``. One kernel call and one copy on the
        C kernels; the numba set reads the label and packs in Python, to the same bytes."""
        if _read_message is not None:
            try:
                r = _read_message(self._ctrl, self._slots, seq, self.generation, slot, now_us)
            except (TypeError, AttributeError, OverflowError):
                r = k.BAD_ARGUMENT
            if r.__class__ is tuple:
                if r[4]:
                    _wake(self._space_addr)
                return r[:4]  # type: ignore[no-any-return]
            if r != k.BAD_ARGUMENT:
                return int(r)
        scratch = self._scratch
        if scratch is None:
            scratch = self._scratch = (np.empty(self._frame_size, self.dtype), np.zeros(layout.LABEL_WORDS, np.int64))
        out, label = scratch
        got = self.read_labelled(seq, out, label, slot)  # raises for bad arguments and a closed ring
        if got != 0:
            return got
        uid, flags, fmt, nbytes = (int(x) for x in label)
        return wire.audio_message(flags, uid, seq, now_us, out.view(np.uint8)[:nbytes]), uid, flags, fmt

    SENDS = _send_frames is not None  # can send_frames send?

    def send_frames(
        self, seq: int, now_us: int, slot: int, fd: int, uid: int, fmt: int, nbytes: int, limit: int, budget: int
    ) -> tuple[int, int, bytes | None]:
        """The server's steady state in one kernel call: frames ``seq``, ``seq + 1``, ... (at most
        ``budget``, none at or past ``limit``), each like the frame read before them (utterance id
        ``uid``, format word ``fmt``, ``nbytes`` of payload, no flags), read as their WebSocket
        messages (see :meth:`read_message`) and written to the non-blocking socket ``fd`` at once.

        Returns ``(frames, code, rest)``: how many were read (``slot``'s reader moved past them, a
        writer waiting for the space woken), why it stopped short (0: the budget; ``NOT_READY``;
        ``OVERRUN``; ``LONG_WAY``, the next frame is not like them; ``AT_LIMIT``) and what of them
        the socket did not take (bytes, code ``BLOCKED``: the caller queues them before anything
        else it sends there). The frame it stopped at is not read. Without the C kernels (or a
        futex to wake a writer with), or for arguments they refuse: (0, LONG_WAY, None)."""
        if _send_frames is None:
            return 0, LONG_WAY, None
        try:
            r = _send_frames(
                self._ctrl, self._slots, seq, self.generation, slot, now_us, fd, uid, fmt, nbytes, limit, budget
            )
        except (TypeError, AttributeError, OverflowError):
            return 0, LONG_WAY, None
        if r.__class__ is not tuple:
            return 0, LONG_WAY, None
        return r  # type: ignore[no-any-return]

    def lane_buffers(self) -> tuple[np.ndarray, np.ndarray, int] | None:
        """(control words, slots, generation) for a lane of the C kernels (``Lanes.admit``), or None
        where there is no send_frames."""
        if _send_frames is None:
            return None
        return self._ctrl, self._slots, self.generation

    def try_read(self, seq: int, out: np.ndarray) -> bool:
        """Copy frame ``seq`` into ``out`` through the default reader if it is written: True when
        copied, False when not written yet. Anything else (an overrun, bad arguments, a closed ring)
        raises the typed error, as :meth:`read` does."""
        r = _fast_read(self, seq, out, 0)
        if r == 0:
            return True
        if r == k.NOT_READY:
            return False
        self.read(seq, out)  # raises FrameOverrun, FrameFormatError, RingClosed, ...
        return True

    def skip_to(self, seq: int) -> None:
        """Tell the writer the default reader is done with everything before ``seq`` (read or not).

        A reader that discards frames (after a cancel, or jumping over a gap) calls this so the
        watermark follows it; otherwise a ``block`` writer would wait for frames nobody will read.
        """
        if k.advance(self._live_ctrl(), 0, check_seq(seq)):
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
        seq = check_seq(seq)  # (a negative one would read as "readable" on the C kernels: refused here)
        if k.readable(self._live_ctrl(), self.capacity, seq, self.generation, SPIN_LOADS) != k.NOT_READY:
            return True
        until = deadline(timeout)
        while not self.wait_once(seq, until):
            if time.monotonic() >= until:
                return False
        return True

    def wait_once(self, seq: int, until: float) -> bool:
        """One sleep on the write cursor's futex, until frame ``seq`` is readable (True), anybody
        wakes the ring's readers, a tick passes or ``until`` (monotonic) comes (False)."""
        word = ks.begin_reader_wait(self._live_ctrl(), self.capacity, seq, self.generation)
        if word < 0:
            if self._word(layout.C_STATE) != layout.LEASED and not self._readable(seq):
                raise RingClosed(f"ring {self.handle} was closed while waiting for frame {seq}")
            return True
        try:
            now = time.monotonic()
            if now < until:
                futex.wait(self._data_addr, word, min(until - now, WAIT_TICK))
        finally:
            if self._ctrl is not None:
                ks.end_reader_wait(self._ctrl)
        return self._ctrl is not None and self._readable(seq)

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
        slot = int(ks.claim_gating(self._live_ctrl(), start, psutil.Process().pid))
        if slot < 0:
            raise ReaderSlotsFull(f"ring {self.handle} already has {layout.MAX_GATING_READERS} gating readers")
        return RingReader(self, slot, start)


class RingReader:
    """A cursor over a ring. ``read()`` takes the frame at ``position`` and moves on."""

    def __init__(self, ring: RingReading, slot: int, position: int, *, default: bool = False) -> None:
        self._ring: RingReading | None = ring
        self.slot = slot  # gating slot index, -1 for a non-gating reader
        self.position = position
        self.lost = 0  # frames skipped over all overruns so far
        self._is_default = default

    @property
    def gating(self) -> bool:
        return self.slot >= 0

    def _live(self) -> RingReading:
        ring = self._ring
        if ring is None or ring._ctrl is None:
            raise RingClosed("reader or ring is closed")
        return ring

    def _out(self, ring: RingReading, out: np.ndarray | None, batch: int | None) -> np.ndarray:
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
        seq = check_seq(seq)
        out = self._out(ring, out, None)
        if out.ndim != len(ring.frame_shape):
            ring._check_frames(out, len(ring.frame_shape), "out")
        flat = out if ring._mono else out.reshape(ring._frame_size)
        until = None
        while True:
            r = _read_frame(self._live()._ctrl, ring._slots, seq, flat, ring.generation, self.slot)
            if r >= 0:
                if r:
                    ring._wake_writer()
                return out
            if r != k.NOT_READY or timeout == 0:
                self._raise(r, seq)
            until = until or deadline(timeout)
            if not ring.wait(seq, max(0.0, until - time.monotonic())):
                self._raise(r, seq)

    def _raise(self, r: int, seq: int) -> NoReturn:
        if r == k.NOT_READY:
            raise FrameNotReady(seq)
        raise FrameOverrun(seq, self._live().oldest(seq))

    def read_many_at(
        self, seq: int, out: np.ndarray | None = None, count: int | None = None, timeout: float | None = 0.0
    ) -> np.ndarray:
        """Copy up to ``len(out)`` (or ``count``, default ``capacity``) ready frames from ``seq``; returns them."""
        ring = self._live()
        seq = check_seq(seq)
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

    def try_read(self, out: np.ndarray) -> bool:
        """Like :meth:`read` into ``out``, but returns False instead of raising when the frame is
        not written yet; True when it was copied. Overruns still raise :class:`FrameOverrun`."""
        r = _fast_read(self._ring, self.position, out, self.slot)
        if r == 0:
            self.position += 1
            return True
        if r == k.NOT_READY:
            return False
        self.read(out)
        return True

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
        if ring is None or self._is_default or self.slot < 0 or ring._ctrl is None:
            return
        base = layout.READER0 + self.slot * layout.LINE_WORDS
        ks.store(ring._ctrl, base + layout.R_ACTIVE, 0)
        ring._kick_writer()

    def __enter__(self) -> RingReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
