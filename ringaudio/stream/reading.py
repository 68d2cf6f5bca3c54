"""A stream reader's reads by sequence: a frame into a buffer, or as the WebSocket message that
carries it, with the frame held back when the events about it must go first.

The mixin of :class:`~ringaudio.stream.source.Source` (which owns the state these use).
"""

from __future__ import annotations

from collections import deque
from typing import Any

import numpy as np

from .. import wire
from ..ring import FrameRing
from ..ring.reader import NOT_READY
from .core import StreamState

Label = tuple[int, int, int]  # (sequence, utterance_id, flags)

# the RFC 6455 header's size of a server's binary frame, by its second byte (the length code)
_WS_PREFIX = tuple(2 if code < 126 else 4 if code == 126 else 10 for code in range(128))
_HEADERS = tuple(wire.HEADER_SIZE + n for n in _WS_PREFIX)  # ... and with the audio header


class Reading:
    ring: FrameRing
    state: StreamState
    inbox: deque[dict[str, Any]]
    format_word: int  # the format word and payload size of the frame read last (its label's)
    payload_bytes: int
    _slot: int
    _label: np.ndarray
    # A frame copied out of the ring whose events had to go first: kept here and handed out by the
    # next read (not re-read: the gating position already said it was read, so a writer may
    # overwrite its slot). Copied only at utterance boundaries.
    _held: np.ndarray
    _held_label: Label | None
    _held_payload: tuple[int, int]

    def _apply(self) -> None:
        raise NotImplementedError

    def _skipped(self, seq: int) -> None:
        """The reader jumped to ``seq`` without reading what is before it."""

    def read_into(self, out: np.ndarray, now: float) -> Label | None:
        """Read the next frame (by sequence) into ``out``: its label, or None — when paused,
        cancelling, not written yet, or when events must go first (they are in :attr:`events`:
        send them, then read again). An overrun (``drop_oldest``, or a lapped listener) queues an
        ``overrun`` event with exactly what was lost; reading goes on from the oldest frame left."""
        if not self._may_read():
            return None
        if self._held_label is not None:
            held = self._release_held(now)
            if held is not None:
                np.copyto(out, self._held)
            return held
        st = self.state
        seq = st.cursor
        r = self.ring.read_labelled(seq, out, self._label, self._slot)
        if r != 0:
            self._missed(seq, r)
            return None
        label = self._label
        uid, flags, fmt, nbytes = int(label[0]), int(label[1]), int(label[2]), int(label[3])
        if st.frame(seq, uid, flags, now, fmt >> 32):
            self.format_word, self.payload_bytes = fmt, nbytes
            return (seq, uid, flags)
        np.copyto(self._held, out)
        self._hold(seq, uid, flags, fmt, nbytes)
        return None

    def read_message(self, now: float, now_us: int) -> tuple[bytes, int, int, int] | None:
        """:meth:`read_into`, for a server sending frames as they are: the next frame as the whole
        WebSocket message that carries it (``ring.read_message``: one copy, header stamped with
        ``now_us``), and its sequence, utterance id and flags; None as for read_into. A frame whose
        events must go first is held the same way (read_into or this hands it out next)."""
        # the server's per-frame path: _may_read, inline
        if self.inbox:
            self._apply()
        st = self.state
        if st.paused or st.cancelling or st.ended or (st.marks and st.due()):
            return None
        if self._held_label is not None:
            held = self._release_held(now)
            if held is None:
                return None
            seq, uid, flags = held
            payload = self._held.view(np.uint8)[: self.payload_bytes or self._held.nbytes]
            return wire.audio_message(flags, uid, seq, now_us, payload), seq, uid, flags
        seq = st.cursor
        r = self.ring.read_message(seq, now_us, self._slot)
        if r.__class__ is not tuple:
            self._missed(seq, r)  # type: ignore[arg-type]
            return None
        msg, uid, flags, fmt = r  # type: ignore[misc]
        if st.frame(seq, uid, flags, now, fmt >> 32):
            self.format_word = fmt
            self.payload_bytes = len(msg) - _HEADERS[msg[1]]
            return msg, seq, uid, flags
        nbytes = len(msg) - _HEADERS[msg[1]]
        self._held.view(np.uint8)[:nbytes] = np.frombuffer(msg, np.uint8, nbytes, len(msg) - nbytes)
        self._hold(seq, uid, flags, fmt, nbytes)
        return None

    def send_frames(self, fd: int, now_us: int, budget: int) -> tuple[int, bytes | None, bool]:
        """The server's steady state: up to ``budget`` frames of the utterance being read, each
        like the frame read last, sent as their WebSocket messages straight to the socket ``fd``
        (``ring.send_frames``: one kernel call, one send) — only when nothing needs a look between
        them (:meth:`StreamState.steady`, nothing in the inbox, no frame held).

        Returns ``(frames, rest, waiting)``: how many were sent, what of them the socket did not
        take (queue it before anything else to that socket) and whether the next frame is not
        written yet. Whatever it stopped at (a new utterance, a flag, an event due, an overrun) is
        for :meth:`read_message` to read next."""
        steady = self._steady()
        if steady is None:
            return 0, None, False
        st = self.state
        uid, limit = steady
        fmt = self.format_word
        n, code, rest = self.ring.send_frames(
            st.cursor, now_us, self._slot, fd, uid, fmt, self.payload_bytes, limit, budget
        )
        if n:
            st.taken(n, fmt >> 32)
        return n, rest, code == NOT_READY

    def lane(self) -> tuple[Any, ...] | None:
        """What a lane of the C kernels needs to carry on :meth:`send_frames` from here, pass after
        pass: ``(ctrl, slots, cursor, generation, reader slot, utterance id, format word, payload
        bytes, limit)``; None when the next frames need a look (as send_frames would send none)."""
        steady = self._steady()
        if steady is None:
            return None
        buffers = self.ring.lane_buffers()
        if buffers is None:
            return None
        ctrl, slots, gen = buffers
        uid, limit = steady
        return ctrl, slots, self.state.cursor, gen, self._slot, uid, self.format_word, self.payload_bytes, limit

    def lane_taken(self, n: int) -> None:
        """A lane sent ``n`` frames from the cursor on (each like the frame read last)."""
        if n:
            self.state.taken(n, self.format_word >> 32)

    def _steady(self) -> tuple[int, int] | None:
        """:meth:`StreamState.steady`, when nothing else needs a look first (the inbox, a held frame)."""
        if self.inbox or self._held_label is not None or not self.payload_bytes:
            return None
        return self.state.steady()

    # -- what both reads share ------------------------------------------------------------------------
    def _may_read(self) -> bool:
        """Apply what the worker sent; False when nothing is read now (paused, cancelling, ended, or
        events that must go first)."""
        if self.inbox:
            self._apply()
        st = self.state
        return not (st.blocked or st.due())

    def _release_held(self, now: float) -> Label | None:
        """The held frame's label if it goes out now (its payload is in ``_held``), else None; a held
        frame the cursor moved past (a cancel cut past it) is dropped, not to be heard."""
        assert self._held_label is not None
        seq, uid, flags = held = self._held_label
        st = self.state
        if seq == st.cursor and st.frame(seq, uid, flags, now, self._held_payload[0] >> 32):
            self._held_label = None
            self.format_word, self.payload_bytes = self._held_payload
            return held
        if seq != st.cursor:
            self._held_label = None
        return None

    def _hold(self, seq: int, uid: int, flags: int, fmt: int, nbytes: int) -> None:
        """Frame ``seq`` (its payload already in ``_held``) waits for the events that go first."""
        self._held_label = (seq, uid, flags)
        self._held_payload = (fmt, nbytes)

    def _missed(self, seq: int, r: int) -> None:
        """A read of ``seq`` that got no frame: not written yet (nothing to do) or overrun (the gap is
        queued as an event and reading goes on from the oldest frame left)."""
        if r == NOT_READY:
            return
        oldest = self.ring.oldest(seq)
        self.state.gap(seq, oldest)
        self._skipped(oldest)
