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
        if self.inbox:
            self._apply()
        st = self.state
        if st.blocked or st.due():
            return None
        held = self._held_label
        if held is not None:
            seq, uid, flags = held
            if seq == st.cursor and st.frame(seq, uid, flags, now, self._held_payload[0] >> 32):
                self._held_label = None
                np.copyto(out, self._held)
                self.format_word, self.payload_bytes = self._held_payload
                return held
            if seq != st.cursor:  # the cursor moved on (a cancel cut past it): it is not to be heard
                self._held_label = None
            return None
        seq = st.cursor
        r = self.ring.read_labelled(seq, out, self._label, self._slot)
        if r == 0:
            label = self._label
            uid, flags = int(label[0]), int(label[1])
            if st.frame(seq, uid, flags, now, int(label[2]) >> 32):
                self.format_word, self.payload_bytes = int(label[2]), int(label[3])
                return (seq, uid, flags)
            np.copyto(self._held, out)
            self._held_label = (seq, uid, flags)
            self._held_payload = (int(label[2]), int(label[3]))
            return None
        if r == NOT_READY:
            return None
        oldest = self.ring.oldest(seq)
        st.gap(seq, oldest)
        self._skipped(oldest)
        return None

    def read_message(self, now: float, now_us: int) -> tuple[bytes, int, int, int] | None:
        """:meth:`read_into`, for a server sending frames as they are: the next frame as the whole
        WebSocket message that carries it (``ring.read_message``: one copy, header stamped with
        ``now_us``), and its sequence, utterance id and flags; None as for read_into. A frame whose
        events must go first is held the same way (read_into or this hands it out next)."""
        if self.inbox:
            self._apply()
        st = self.state
        if st.blocked or st.due():
            return None
        if self._held_label is not None:
            seq, uid, flags = self._held_label
            if seq == st.cursor and st.frame(seq, uid, flags, now, self._held_payload[0] >> 32):
                self._held_label = None
                self.format_word, self.payload_bytes = self._held_payload
                payload = self._held.view(np.uint8)[: self.payload_bytes or self._held.nbytes]
                return wire.audio_message(flags, uid, seq, now_us, payload), seq, uid, flags
            if seq != st.cursor:
                self._held_label = None
            return None
        seq = st.cursor
        r = self.ring.read_message(seq, now_us, self._slot)
        if r.__class__ is tuple:
            msg, uid, flags, fmt = r  # type: ignore[misc]
            nbytes = len(msg) - wire.HEADER_SIZE - _WS_PREFIX[msg[1]]
            if st.frame(seq, uid, flags, now, fmt >> 32):
                self.format_word, self.payload_bytes = fmt, nbytes
                return msg, seq, uid, flags
            self._held.view(np.uint8)[:nbytes] = np.frombuffer(msg, np.uint8, nbytes, len(msg) - nbytes)
            self._held_label = (seq, uid, flags)
            self._held_payload = (fmt, nbytes)
            return None
        if r == NOT_READY:
            return None
        oldest = self.ring.oldest(seq)
        st.gap(seq, oldest)
        self._skipped(oldest)
        return None
