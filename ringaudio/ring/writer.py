"""The writing half of a ring: one writer per lease, sleeping (never spinning long) at the watermark.

Real-time rules: ``write``/``offer`` allocate nothing and cost one numba call; they sleep (futex)
only when the writer is held at the high watermark (``block``). Each frame carries its label
(utterance id, flags, format word), published with its samples.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import psutil

from ..errors import FrameFormatError, RingClosed, RingTimeout
from ..kernels.backend import hot as k
from ..kernels.backend import slow as ks
from . import futex, layout
from .view import SPIN_ROUNDS, WAIT_TICK, RingView, deadline

_write_frame = k.write_frame
_wake = futex.wake


class RingWriting(RingView):
    # No method below keeps a view of the segment in a local variable of a frame
    # that can raise: a caller holding the exception (and so its traceback)
    # would otherwise keep the mapping alive past close().

    def write(
        self,
        frame: np.ndarray,
        timeout: float | None = None,
        *,
        utterance: int = 0,
        flags: int = 0,
        fmt: int = 0,
        nbytes: int = 0,
    ) -> int:
        """Copy one frame (and its label) into the ring and return its sequence number.

        ``nbytes`` is the payload's size when it is less than the slot (an Opus packet in the
        frame's first bytes); 0: the whole slot. Under ``block`` the call sleeps while the ring is at its high watermark
        (until the slowest gating reader brings it to the low one); ``timeout``
        bounds that wait (:class:`RingTimeout`). ``drop_oldest`` never waits.
        """
        # Hot path: one kernel call. The kernels accept only the argument types
        # they were compiled for (TypeError otherwise) and check the frame's
        # length themselves, so every unusual case lands in _write_slow.
        try:
            r = _write_frame(self._ctrl, self._slots, frame, self.generation, utterance, flags, fmt, nbytes)
        except TypeError:
            return self._write_slow(frame, timeout, utterance, flags, fmt, nbytes)
        if r >= 0:
            if r & 1:
                _wake(self._data_addr)
            return r >> 1  # type: ignore[no-any-return]
        return self._write_slow(frame, timeout, utterance, flags, fmt, nbytes)

    def offer(self, frame: np.ndarray, *, utterance: int = 0, flags: int = 0, fmt: int = 0, nbytes: int = 0) -> int:
        """Write one frame if the ring takes it now: its sequence, or -1 if the writer must wait.

        For a writer that serves several rings from one loop: it never sleeps here; under ``block``
        it gets -1 from the high watermark until the readers bring the ring to the low one.
        """
        try:
            r = _write_frame(self._ctrl, self._slots, frame, self.generation, utterance, flags, fmt, nbytes)
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
                return self._write_slow(frame, 0.0, utterance, flags, fmt, nbytes)
            except RingTimeout:
                return -1
        raise RingClosed(f"ring {self.handle} is closed or its lease has ended")

    def offer_block(self, block: np.ndarray, *, utterance: int = 0, first: int = 0, last: int = 0, fmt: int = 0) -> int:
        """Write the frames of ``block`` (``(k,) + frame_shape``, whole slots) that the ring takes now:
        how many (0: the writer must wait, as :meth:`offer`'s -1). Each is labelled ``utterance`` and
        ``fmt``; the first gets flags ``first``, the block's last ``last`` (if written: a block cut
        short by the watermark ends before it). One kernel call for them all."""
        try:
            r = k.write_labelled_block(self._ctrl, self._slots, block, self.generation, utterance, first, last, fmt)
        except TypeError:
            r = k.BAD_ARGUMENT
        if r >= 0:
            if r & 1:
                _wake(self._data_addr)
            return r >> 1  # type: ignore[no-any-return]
        if r == k.WAIT:
            return 0
        if r == k.BAD_ARGUMENT:
            return self._offer_block_slow(block, utterance, first, last, fmt)
        raise RingClosed(f"ring {self.handle} is closed or its lease has ended")

    def _offer_block_slow(self, block: Any, utterance: int, first: int, last: int, fmt: int) -> int:
        """A multi-channel or non-contiguous block (flattened to rows), or a wrong one (told which)."""
        if self._ctrl is None:
            raise RingClosed("ring is closed in this process")
        self._check_frames(block, len(self.frame_shape) + 1, "block")
        rows = np.ascontiguousarray(block).reshape(len(block), self._frame_size)
        try:
            r = k.write_labelled_block(self._ctrl, self._slots, rows, self.generation, utterance, first, last, fmt)
        except (TypeError, OverflowError):
            r = k.BAD_ARGUMENT
        if r == k.BAD_ARGUMENT:
            raise FrameFormatError(f"a block's label is four ints >= 0, got {(utterance, first, last, fmt)!r}")
        if r == k.WAIT:
            return 0
        if r < 0:
            raise RingClosed(f"ring {self.handle} is closed or its lease has ended")
        if r & 1:
            _wake(self._data_addr)
        return int(r >> 1)

    def _write_slow(
        self, frame: Any, timeout: float | None, utterance: int, flags: int, fmt: int, nbytes: int = 0
    ) -> int:
        if self._ctrl is None:
            raise RingClosed("ring is closed in this process")
        self._check_frames(frame, len(self.frame_shape), "frame")
        frame = np.ascontiguousarray(frame).reshape(self._frame_size)
        until = None
        while True:
            if self._ctrl is None:
                raise RingClosed("ring is closed in this process")
            try:
                r = _write_frame(self._ctrl, self._slots, frame, self.generation, utterance, flags, fmt, nbytes)
            except (TypeError, OverflowError):
                r = k.BAD_ARGUMENT
            if r == k.BAD_ARGUMENT:  # the frame is right (checked above): the label is not
                room = self._slots.nbytes // len(self._slots)
                raise FrameFormatError(
                    f"a frame's label is three ints >= 0 and a payload size of 0..{room} bytes, "
                    f"got {(utterance, flags, fmt, nbytes)!r}"
                )
            if r >= 0:
                if r & 1:
                    _wake(self._data_addr)
                return int(r >> 1)
            if r == k.CLOSED:
                raise RingClosed(f"ring {self.handle} is closed or its lease has ended")
            if until is None:
                until = deadline(timeout)
            self._wait_for_space(until)

    def write_many(self, block: np.ndarray, timeout: float | None = None) -> int:
        """Copy ``block`` (``(k,) + frame_shape``) frame by frame, unlabelled; return the first
        frame's sequence.

        Waits like :meth:`write` where the watermark says so. On a timeout the
        frames already written stay written (:class:`RingTimeout` says how many).
        """
        self._check_frames(block, len(self.frame_shape) + 1, "block")
        block = np.ascontiguousarray(block).reshape(len(block), self._frame_size)
        first = self.write_seq
        done = 0
        until = None
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
            if until is None:
                until = deadline(timeout)
            try:
                self._wait_for_space(until)
            except RingTimeout as exc:
                raise RingTimeout(f"{exc} ({done} of {len(block)} frames written)") from None
        return first

    def _wait_for_space(self, until: float) -> None:
        if ks.space_after_spin(self._live_ctrl(), SPIN_ROUNDS):
            return  # a reader right behind: no sleep, no wake-up syscall
        now = time.monotonic()
        if now >= until:
            raise RingTimeout(f"ring {self.handle} stayed above its low watermark")
        word = ks.begin_writer_wait(self._live_ctrl())
        if word < 0:
            return
        try:
            futex.wait(self._space_addr, word, min(until - now, WAIT_TICK))
        finally:
            if self._ctrl is not None:
                ks.end_writer_wait(self._ctrl)
        if self._ctrl is not None and time.monotonic() - now >= WAIT_TICK * 0.9:
            self._reap_dead_readers()  # a whole tick without progress: is a gating reader dead?

    def _reap_dead_readers(self) -> None:
        """A gating reader whose process died must not hold the writer forever."""
        ctrl = self._live_ctrl()
        for g in range(1, layout.MAX_GATING_READERS):
            base = layout.READER0 + g * layout.LINE_WORDS
            pid = int(ctrl[base + layout.R_PID])
            if int(ctrl[base + layout.R_ACTIVE]) == 1 and pid and not psutil.pid_exists(pid):
                ks.store(ctrl, base + layout.R_ACTIVE, 0)
