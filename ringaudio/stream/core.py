"""The bookkeeping of one reader of a stream, as a pure state machine: reads and events in, wire
events out.

Every reader of a stream (the session that owns it and any listener) has one :class:`StreamState`.
Its inputs are the frames the reader copied out of the ring (each with its label: utterance id and
first/last flags, written by the worker under the frame's seqlock stamp), overruns, the worker's
events (finished, failed, cancelled) and the owner's actions (said, cancel, pause). Its output is
one ordered queue of wire events (``utterance.start``, ``utterance.end``, ``error``,
``cancelled``, ``overrun``), in the order a client must see them between the frames:

- ``utterance.start`` comes right before an utterance's first frame, ``utterance.end`` right after
  its last one (the frame labelled last), for owner and listeners alike;
- an event about a position in the stream — a failure after the frames the failed utterance wrote,
  an utterance that produced no audio — waits in :attr:`StreamState.marks` until the reader has
  read everything before that position;
- :meth:`StreamState.frame` returns False (and queues what must come first) when events must
  precede the frame it was given: the caller sends them and reads the same sequence again.

Nothing here reads a clock, a ring or a pipe: the caller passes ``now`` (monotonic seconds) and
``written`` (the ring's write cursor when an event was applied).
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import StreamError
from ..wire import FLAG_FIRST, FLAG_LAST


@dataclass(frozen=True, slots=True)
class Event:
    """Something that happened to a stream, as sent on the wire: ``{"type": type, **data}``."""

    type: str
    data: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, **self.data}


@dataclass(frozen=True, slots=True)
class Frame:
    """One frame as an iterator yields it: its own copy of the PCM (``frame_samples`` int16), or,
    in a stream set to Opus, its packet (``opus``; ``pcm`` is then empty)."""

    sequence: int
    pcm: np.ndarray
    utterance_id: int
    flags: int
    opus: bytes | None = None

    @property
    def first(self) -> bool:
        return bool(self.flags & FLAG_FIRST)

    @property
    def last(self) -> bool:
        return bool(self.flags & FLAG_LAST)


@dataclass(slots=True)
class Utterance:
    utterance_id: int
    request_id: str | None
    said_at: float | None  # monotonic, for first-audio latency (None: not said through this stream)
    first_seq: int | None = None  # the first of its frames this reader read
    worker_first: int | None = None  # what the worker reports (finished, failed)
    worker_last: int | None = None
    started: bool = False  # its utterance.start was queued for this reader
    delivered: int = 0  # frames this reader delivered ...
    delivered_us: int = 0  # ... and how long they last (frames of a lower quality level last longer)


@dataclass(order=True, slots=True)
class _Mark:
    position: int  # due once the reader's cursor has reached it (everything before it was read)
    order: int
    events: list[Event] = field(compare=False)
    closes: int | None = field(compare=False, default=None)  # the utterance that ends with these events


class StreamState:
    """One reader's utterance, cancel, failure and end bookkeeping (pure: see the module)."""

    def __init__(self, frame_ms: int, cursor: int = 0) -> None:
        self.frame_ms = frame_ms
        self.cursor = cursor  # the next sequence this reader reads
        self.last_read: int | None = None
        self.lost = 0  # frames this reader never received (overruns)
        self.first_audio_ms = 0.0  # of the latest utterance said here, when its first frame was read
        self.paused = False
        self.cancelling = False  # a cancel is out and the worker has not answered
        self.ended = False
        self.events: deque[Event] = deque()
        self.marks: list[_Mark] = []  # a heap by position
        self.utterances: dict[int, Utterance] = {}  # said (or seen) and not ended yet
        self._current: Utterance | None = None  # the one whose frames are being read
        self._order = itertools.count()
        self._said_max = 0
        self._cover_uid = 0  # what the cancel in flight covers: utterances up to this id ...
        self._cover_seq = 0  # ... and frames written before this sequence

    @classmethod
    def following(cls, owner: StreamState, cursor: int) -> StreamState:
        """A listener's state: it knows the utterances said so far (for their request ids)."""
        state = cls(owner.frame_ms, cursor)
        for uid, u in owner.utterances.items():
            state.utterances[uid] = Utterance(uid, u.request_id, None, u.worker_first, u.worker_last)
        state._said_max = owner._said_max
        # a cancel in flight and the events waiting for a position concern the listener too
        state.cancelling = owner.cancelling
        state._cover_uid, state._cover_seq = owner._cover_uid, owner._cover_seq
        state.marks = [_Mark(m.position, m.order, list(m.events), m.closes) for m in owner.marks]
        state._order = itertools.count(max((m.order for m in owner.marks), default=0) + 1)
        return state

    # -- what the consumer asks --------------------------------------------------------------------
    @property
    def blocked(self) -> bool:
        """No frame is read now: paused, waiting for a cancel's answer, or ended."""
        return self.paused or self.cancelling or self.ended

    @property
    def busy(self) -> bool:
        """Is more to come (frames or events), now or once the worker writes or answers?"""
        return bool(self.utterances or self.cancelling or self.marks or self.events)

    def pop_events(self) -> list[Event]:
        self.due()
        out = list(self.events)
        self.events.clear()
        return out

    # -- reads ----------------------------------------------------------------------------------------
    def due(self) -> bool:
        """Queue the marks the cursor has reached; True if any were."""
        marks = self.marks
        if not marks or marks[0].position > self.cursor:
            return False
        while marks and marks[0].position <= self.cursor:
            mark = heapq.heappop(marks)
            self.events.extend(mark.events)
            if mark.closes is not None:
                self._close(mark.closes)
        return True

    def frame(self, seq: int, uid: int, flags: int, now: float, frame_us: int = 0) -> bool:
        """The reader copied frame ``seq`` (the cursor) labelled ``uid``/``flags``. True: deliver it
        (the cursor moves on; an ``utterance.end`` after it is queued); False: events that must
        come first were queued — send them and read ``seq`` again."""
        u = self._current
        marks = self.marks
        if not flags and u is not None and u.utterance_id == uid and (not marks or marks[0].position > self.cursor):
            # the common case first: a frame inside the utterance being read, no mark reached
            self.cursor = seq + 1
            self.last_read = seq
            u.delivered += 1
            u.delivered_us += frame_us or self.frame_ms * 1000
            return True
        if self.due():
            return False
        if u is None or u.utterance_id != uid:
            if u is not None:  # its last frame never reached this reader (lost to an overrun)
                self._end(u, u.worker_last if u.worker_last is not None else self.last_read)
            self._current = None
            if uid:
                self._lost_before(uid)
                u = self.utterances.get(uid)
                if u is None:  # not said through this stream (or by an earlier owner): still labelled
                    u = self.utterances[uid] = Utterance(uid, None, None)
                self._start(u, seq)
                self._current = u
                return False
        self.cursor = seq + 1
        self.last_read = seq
        if u is not None:
            u.delivered += 1
            u.delivered_us += frame_us or self.frame_ms * 1000
            if flags & FLAG_FIRST and u.said_at is not None:
                self.first_audio_ms = (now - u.said_at) * 1000
            if flags & FLAG_LAST:
                self._end(u, seq)
        return True

    def steady(self) -> tuple[int, int] | None:
        """(utterance id, sequence limit) while frames may be taken in bulk with :meth:`taken`: the
        reader is inside an utterance, nothing blocks it and no event is waiting; frames before the
        limit (the next mark's position, or none) that carry that id and no flags need no look
        from :meth:`frame`. None otherwise."""
        u = self._current
        if u is None or self.paused or self.cancelling or self.ended or self.events:
            return None
        marks = self.marks
        return u.utterance_id, marks[0].position if marks else 1 << 62

    def taken(self, n: int, frame_us: int) -> None:
        """``n`` frames of the :meth:`steady` utterance, from the cursor on, were delivered: what
        :meth:`frame` does for each in its common case."""
        u = self._current
        assert u is not None
        self.cursor += n
        self.last_read = self.cursor - 1
        u.delivered += n
        u.delivered_us += n * (frame_us or self.frame_ms * 1000)

    def gap(self, expected: int, oldest: int) -> None:
        """Frames ``expected .. oldest - 1`` were overwritten before this reader read them."""
        self.events.append(Event("overrun", {"expected": expected, "received": oldest, "lost": oldest - expected}))
        self.lost += oldest - expected
        self.cursor = oldest

    # -- the owner's actions ------------------------------------------------------------------------
    def said(self, uid: int, request_id: str | None, now: float) -> None:
        self.utterances[uid] = Utterance(uid, request_id, now)
        self._said_max = max(self._said_max, uid)

    def withdrawn(self, uid: int) -> None:
        """A said utterance the pool refused: it never existed."""
        self.utterances.pop(uid, None)

    def pause(self) -> None:
        if self.paused:
            raise StreamError("already_paused", "the stream is already paused")
        self.paused = True

    def resume(self) -> None:
        if not self.paused:
            raise StreamError("not_paused", "resume without pause")
        self.paused = False

    def cancel(self, written: int) -> None:
        """Barge-in: read nothing until the worker answers; the cancel covers the utterances said so
        far and the frames written so far (an utterance said after it survives)."""
        self.cancelling = True
        self._cover_uid = max(self._cover_uid, self._said_max)
        self._cover_seq = max(self._cover_seq, written)

    def end(self, why: str | None = None) -> None:
        """The stream is closed: nothing more is read; a listener is told why."""
        if self.ended:
            return
        self.ended = True
        self.utterances.clear()
        self.marks.clear()
        self._current = None
        if why is not None:
            self.events.append(Event("error", {"code": "session_ended", "message": why}))

    # -- the worker's events ------------------------------------------------------------------------
    def finished(self, uid: int, first: int | None, last: int | None, written: int) -> None:
        u = self.utterances.get(uid)
        if u is None:
            return
        if last is None or last < 0:  # no audio at all: it starts and ends where the stream is now
            start = Event("utterance.start", {"utterance_id": uid, "request_id": u.request_id})
            self._mark(written, [start, self._end_event(u, 0, None)], closes=uid)
            return
        u.worker_first = first if first is not None and first >= 0 else None
        u.worker_last = last
        if self.cursor > last:  # the reader is past it and its last frame never came: it ends here
            if u is self._current:
                self._current = None
            self._end(u, last)

    def failed(self, uid: int | None, code: str, message: str, last: int | None, written: int) -> None:
        """The utterance failed: what it wrote still plays out (labelled as its frames), then the
        ``error`` (instead of its ``utterance.end``); ``last`` is its last frame, None if unknown
        (the worker died: everything written so far comes first)."""
        position = last + 1 if last is not None and last >= 0 else written
        error = Event("error", {"code": code, "message": message, "utterance_id": uid})
        u = self.utterances.get(uid) if uid is not None else None
        if u is not None:
            u.worker_last = position - 1  # what it wrote is what a cancel must cut
        self._mark(position, [error], closes=uid if u is not None else None)
        if self.cancelling and code == "worker_died":  # the cancel's answer will never come
            self.cancelled(written - 1)  # the dead job wrote up to here

    def cancelled(self, last: int | None) -> int:
        """The worker stopped: every frame of the cancelled utterances not read yet is dropped (the
        cursor jumps past them; returns the new cursor) and ``cancelled`` says where it goes on."""
        cut = self._cover_seq if last is None or last < 0 else max(self._cover_seq, last + 1)
        for u in self.utterances.values():
            if u.utterance_id <= self._cover_uid and u.worker_last is not None:
                cut = max(cut, u.worker_last + 1)  # one that finished just before the cancel reached it
        self.cursor = max(self.cursor, cut)
        for uid in [uid for uid in self.utterances if uid <= self._cover_uid]:
            del self.utterances[uid]
        if self._current is not None and self._current.utterance_id <= self._cover_uid:
            self._current = None
        kept = [m for m in self.marks if m.closes is None or m.closes > self._cover_uid or _is_error(m)]
        if len(kept) != len(self.marks):
            self.marks = kept
            heapq.heapify(self.marks)
        self.cancelling = False
        self.events.append(Event("cancelled", {"last_sequence": self.last_read, "next_sequence": self.cursor}))
        return self.cursor

    # -- internals --------------------------------------------------------------------------------------
    def _mark(self, position: int, events: list[Event], closes: int | None) -> None:
        heapq.heappush(self.marks, _Mark(position, next(self._order), events, closes))
        self.due()

    def _start(self, u: Utterance, seq: int | None) -> None:
        u.started = True
        u.first_seq = seq
        self.events.append(Event("utterance.start", {"utterance_id": u.utterance_id, "request_id": u.request_id}))

    def _end(self, u: Utterance, last: int | None) -> None:
        """Queue its end (and its start, if this reader never got a frame of it), then forget it."""
        if not u.started:
            self._start(u, None)
        first = u.worker_first if u.worker_first is not None else u.first_seq
        if last is None or first is None or last < first:  # none of its frames reached this reader
            last = u.worker_last
            first = u.worker_first
        frames = 0 if last is None or first is None or last < first else last - first + 1
        self.events.append(self._end_event(u, frames, last))
        self._close(u.utterance_id)

    def _lost_before(self, uid: int) -> None:
        """Utterance ``uid`` has begun: every earlier one still open here was lost whole (an overrun
        jumped over it) and ends now, unless a mark (its failure, its silence) is still to come."""
        pending = {m.closes for m in self.marks}
        for earlier in sorted(x for x in self.utterances if x < uid and x not in pending):
            self._end(self.utterances[earlier], None)

    def _end_event(self, u: Utterance, frames: int, last: int | None) -> Event:
        data = {
            "utterance_id": u.utterance_id,
            "request_id": u.request_id,
            "frames": frames,
            # what was delivered at its own length; what was lost (an overrun) at the configured one
            "duration_ms": round(u.delivered_us / 1000) + max(0, frames - u.delivered) * self.frame_ms,
            "last_sequence": last,
        }
        return Event("utterance.end", data)

    def _close(self, uid: int) -> None:
        self.utterances.pop(uid, None)
        if self._current is not None and self._current.utterance_id == uid:
            self._current = None


def _is_error(mark: _Mark) -> bool:
    return any(e.type == "error" for e in mark.events)
