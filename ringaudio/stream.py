"""A stream: one session's ring, its utterances, and reads that turn ring slots into labelled frames.

No sockets and no threads here. The :class:`~ringaudio.engine.Engine` applies worker events to a
stream (:meth:`Stream.apply`) in the consumer's thread; the consumer reads frames by sequence number
(:meth:`Stream.read_into`, the allocation-free path the server uses, or by iterating the stream) and
collects the events the stream produced (:meth:`Stream.pop_events`). The events are the wire's:
``utterance.start``, ``utterance.end``, ``error``, ``cancelled``, ``overrun``.

A :class:`Listener` is an extra reader of a stream (whole-home announcements): its own cursor, never
holding the writer back; when lapped it is told exactly how many frames it lost.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import FrameNotReady, FrameOverrun, RingAudioError, RingClosed

if TYPE_CHECKING:
    from .engine import Engine
    from .ring import FrameRing, RingReader

FLAG_FIRST = 1  # first frame of an utterance
FLAG_LAST = 2  # last frame of an utterance
WAIT_SLICE = 0.01  # how long an iterator sleeps between looks when nothing is ready (s)
HOLD_MAX = 0.05  # the longest the newest frame is held back waiting for its utterance's end (s)

Label = tuple[int, int, int]  # (sequence, utterance_id, flags)


class StreamError(RingAudioError):
    """A stream operation that does not fit the stream's state (``code`` is the wire's error code)."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        self.message = message
        super().__init__(message)


@dataclass(frozen=True, slots=True)
class Event:
    """Something that happened to a stream, as sent on the wire: ``{"type": type, **data}``."""

    type: str
    data: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, **self.data}


@dataclass(frozen=True, slots=True)
class Frame:
    """One frame as an iterator yields it: its own copy of the PCM (``frame_samples`` int16)."""

    sequence: int
    pcm: np.ndarray
    utterance_id: int
    flags: int

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
    submitted: float  # monotonic, for first-audio latency
    first_seq: int | None = None
    last_seq: int | None = None
    sent_first: bool = False
    failed: bool = False  # its frames still play out (labelled), but it ends with an error, not utterance.end


def _overrun(gap: FrameOverrun) -> Event:
    return Event("overrun", {"expected": gap.expected, "received": gap.oldest, "lost": gap.lost})


def _utterance_end(u: Utterance, frames: int, last: int | None, frame_ms: int) -> Event:
    data = {
        "utterance_id": u.utterance_id,
        "request_id": u.request_id,
        "frames": frames,
        "duration_ms": frames * frame_ms,
        "last_sequence": last,
    }
    return Event("utterance.end", data)


class _Source:
    """What a stream and a listener share: events, pause/resume, and the iteration protocol."""

    frame_samples: int
    ended: bool

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self.events: deque[Event] = deque()
        self.paused = False
        self.lost = 0  # frames this reader never received (overruns)
        self._running = threading.Event()
        self._running.set()

    # -- reading (implemented by the two kinds) -------------------------------------------------------
    @property
    def position(self) -> int:
        """The next sequence this reader reads."""
        raise NotImplementedError

    def read_into(self, out: np.ndarray, now: float) -> Label | None:
        raise NotImplementedError

    @property
    def busy(self) -> bool:
        """Is there something (more) to read, now or once the worker writes it?"""
        raise NotImplementedError

    def _wait(self, timeout: float) -> None:
        raise NotImplementedError

    # -- flow control -------------------------------------------------------------------------------------
    def pause(self) -> None:
        """Stop reading. Under ``block`` the ring fills and the worker waits; nothing is lost."""
        if self.paused:
            raise StreamError("already_paused", "the stream is already paused")
        self.paused = True
        self._running.clear()

    def resume(self) -> None:
        if not self.paused:
            raise StreamError("not_paused", "resume without pause")
        self.paused = False
        self._running.set()

    def pop_events(self) -> list[Event]:
        out = []
        while self.events:
            out.append(self.events.popleft())
        return out

    # -- iteration ----------------------------------------------------------------------------------
    def _step(self, buf: np.ndarray) -> Frame | Event | bool:
        """The next frame or event, True when the caller should wait, False when the stream is done."""
        with self._engine.lock:
            self._engine.poll()
            if self.events:
                return self.events.popleft()
            if self.ended:
                return False
            got = self.read_into(buf, time.monotonic())
            if got is not None:
                return Frame(got[0], buf.copy(), got[1], got[2])
            if self.events:
                return self.events.popleft()
            return self.busy or self.paused

    def __iter__(self) -> Iterator[Frame | Event]:
        """Frames and events until everything said so far has been read (blocks; sleeps, never spins)."""
        buf = np.empty(self.frame_samples, np.int16)
        while True:
            item = self._step(buf)
            if item is False:
                return
            if item is True:
                if self.paused:
                    self._running.wait(0.1)
                else:
                    self._wait(WAIT_SLICE)
                continue
            yield item  # type: ignore[misc]

    def frames(self) -> Iterator[Frame]:
        """Just the frames (events are skipped: iterate the stream itself to see both)."""
        for item in self:
            if isinstance(item, Frame):
                yield item

    async def __aiter__(self) -> AsyncIterator[Frame | Event]:
        buf = np.empty(self.frame_samples, np.int16)
        while True:
            item = self._step(buf)
            if item is False:
                return
            if item is True:
                await asyncio.sleep(WAIT_SLICE / 2)
                continue
            yield item  # type: ignore[misc]


class Stream(_Source):
    """One session's stream: say text into it, read its frames in sequence, pause, cancel, listen."""

    def __init__(self, engine: Engine, stream_id: str, key: str, ring: FrameRing) -> None:
        super().__init__(engine)
        self.id = stream_id
        self.key = key  # what a listener presents to join (the server hands it to the owner only)
        self.ring: FrameRing = ring
        self.frame_samples = engine.frame_samples
        self.frame_ms = engine.config.frame_duration_ms
        self.cursor = 0  # next sequence to read
        self.last_read: int | None = None
        self.cancelling = False
        self.ended = False
        self.utterances: deque[Utterance] = deque()
        self.listeners: set[Listener] = set()
        self.first_audio_ms = 0.0  # of the latest utterance, when its first frame was read
        self._written = 0  # the writer's position, as last seen
        self._held_since = 0.0  # when the newest frame began to be held back (0: not holding)
        self._settle = False  # an utterance's last frame was read: its end is due
        self._cancel_uid = 0
        self._cancel_seq = 0

    def __repr__(self) -> str:
        return f"<Stream {self.id} cursor={self.cursor} utterances={len(self.utterances)}>"

    def __hash__(self) -> int:
        return id(self)

    # -- control ----------------------------------------------------------------------------------
    def say(self, text: str, *, voice: str | None = None, request_id: str | None = None) -> int:
        """Queue an utterance; returns its id. Raises TextError, StreamError (``queue_full``), ..."""
        if self.ended:
            raise StreamError("stream_ended", "the stream is closed")
        with self._engine.lock:  # the worker's events for it must find it in the list
            uid = self._engine._submit(self, text, voice, request_id)
            self.utterances.append(Utterance(uid, request_id, time.monotonic()))
        return uid

    def cancel(self) -> None:
        """Barge-in: stop the worker, drop what is queued and what is in the ring; a ``cancelled``
        event (with the last sequence read) follows once the worker has stopped."""
        if self.ended:
            return
        with self._engine.lock:
            self.cancelling = True  # nothing more is read until the worker has answered
            # what the cancel covers: the utterances said so far and the frames written so far (an
            # utterance said right after the cancel survives it)
            self._cancel_uid = max((u.utterance_id for u in self.utterances), default=self._cancel_uid)
            self._cancel_seq = max(self._cancel_seq, self.ring.write_seq)
        self._engine._cancel(self)

    def listen(self, start: int | None = None) -> Listener:
        """An extra, non-gating reader of this stream, from ``start`` (default: where this stream is)."""
        if self.ended:
            raise StreamError("stream_ended", "the stream is closed")
        listener = Listener(self._engine, self, self.cursor if start is None else start)
        self.listeners.add(listener)
        return listener

    def close(self) -> None:
        """End the stream: the worker stops, listeners end, the ring goes back to the arena. Idempotent."""
        self._engine._close_stream(self)

    def __enter__(self) -> Stream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reading ------------------------------------------------------------------------------------
    @property
    def position(self) -> int:
        return self.cursor

    @property
    def busy(self) -> bool:
        return bool(self.utterances) or self.cancelling

    def read_into(self, out: np.ndarray, now: float) -> Label | None:
        """Read the next frame (by sequence) into ``out``; None when paused, cancelling or not written yet.

        An overrun (``drop_oldest``) moves the cursor to the oldest frame still there and queues an
        ``overrun`` event with exactly what was lost, then reads on from there.
        """
        if self._settle:
            self.settle()
        if self.paused or self.cancelling or self.ended:
            return None
        ring = self.ring
        while True:
            seq = self.cursor
            if (seq + 1 >= self._written or self._engine._inbox) and self._hold(seq, now):
                return None
            try:
                if ring.try_read(seq, out):
                    return None  # not written yet
            except FrameNotReady:  # the frame was overrun, then not yet rewritten
                return None
            except FrameOverrun as gap:
                self._gap(gap)
                continue
            break
        self._held_since = 0.0
        self.cursor = seq + 1
        self.last_read = seq
        uid, flags = self._label(seq, now)
        if flags & FLAG_LAST:
            self._settle = True  # utterance.end is queued after this frame has gone out
        return seq, uid, flags

    def settle(self) -> None:
        """Queue the ``utterance.end`` of an utterance whose last frame was read (the consumer calls
        this after sending that frame; the next read does it anyway)."""
        self._settle = False
        self._end_due()

    def _hold(self, seq: int, now: float) -> bool:
        """Hold frame ``seq`` back? Only while its utterance's end is unknown and it may be the last
        frame: it is the newest one, or worker events (perhaps that end) wait to be applied. Never
        longer than HOLD_MAX (so a writer waiting for the ring to drain to its low watermark is
        never stuck behind a held frame)."""
        self._written = self.ring.write_seq
        if seq >= self._written:
            return False  # not written: the read says so
        if seq + 1 < self._written and not self._engine._inbox:
            return False
        if not self._open_ended(seq):
            return False
        if not self._held_since:
            self._held_since = now
        return now - self._held_since < HOLD_MAX

    def _label(self, seq: int, now: float) -> tuple[int, int]:
        for u in self.utterances:
            if u.last_seq is not None and seq > u.last_seq:
                continue
            flags = 0
            if not u.sent_first:
                u.sent_first = True
                flags |= FLAG_FIRST
                self.first_audio_ms = (now - u.submitted) * 1000
            if u.last_seq == seq:
                flags |= FLAG_LAST
            return u.utterance_id, flags
        return 0, 0

    def _open_ended(self, seq: int) -> bool:
        """Does frame ``seq`` belong to an utterance whose last frame is not known yet?"""
        for u in self.utterances:
            if u.last_seq is None:
                return True
            if seq <= u.last_seq:
                return False
        return False

    def passive_label(self, seq: int) -> tuple[int, int]:
        """The label of an already-read or upcoming frame, for listeners (changes nothing)."""
        for u in self.utterances:
            if u.last_seq is not None and seq > u.last_seq:
                continue
            if u.first_seq is not None and seq < u.first_seq:
                return 0, 0
            flags = (FLAG_FIRST if seq == u.first_seq else 0) | (FLAG_LAST if seq == u.last_seq else 0)
            return u.utterance_id, flags
        return 0, 0

    def _gap(self, gap: FrameOverrun) -> None:
        self.cursor = gap.oldest
        self.ring.skip_to(gap.oldest)  # the watermark follows the reader past what it lost
        self.lost += gap.lost
        self.events.append(_overrun(gap))

    def _end_due(self) -> None:
        """Queue ``utterance.end`` for the utterances whose last frame has been read."""
        while self.utterances and self.utterances[0].last_seq is not None and self.cursor > self.utterances[0].last_seq:
            u = self.utterances.popleft()
            last = u.last_seq
            assert last is not None
            if u.failed:
                continue  # its error was reported when it failed
            frames = last - (u.first_seq if u.first_seq is not None else last) + 1
            self.events.append(_utterance_end(u, frames, last, self.frame_ms))

    def _wait(self, timeout: float) -> None:
        # holding the newest frame back: sleep until the one after it (or the timeout), not spin
        seq = self.cursor + (1 if self._held_since else 0)
        try:
            self.ring.wait(seq, timeout)  # futex sleep until the worker writes it
        except RingClosed:
            time.sleep(timeout)

    # -- worker events (applied by the engine, in the consumer's thread) ----------------------------
    def _find(self, uid: int | None) -> Utterance | None:
        return next((u for u in self.utterances if u.utterance_id == uid), None)

    def apply(self, ev: dict[str, Any]) -> None:
        kind = ev["type"]
        u = self._find(ev.get("utterance_id"))
        if kind == "started" and u is not None:
            self.events.append(Event("utterance.start", {"utterance_id": u.utterance_id, "request_id": u.request_id}))
        elif kind == "first_frame" and u is not None:
            u.first_seq = ev["sequence"]
        elif kind == "finished" and u is not None:
            last, first = ev.get("last_sequence"), ev.get("first_sequence")
            if u.first_seq is None and first is not None and first >= 0:
                u.first_seq = first
            if last is None or last < 0:  # an utterance with no audio at all: it ends now
                self.utterances.remove(u)
                self.events.append(_utterance_end(u, 0, None, self.frame_ms))
            else:
                u.last_seq = last
                self._end_due()
        elif kind == "failed":
            if u is not None:
                self._failed(u, ev.get("last_sequence"))
            self.events.append(
                Event(
                    "error",
                    {
                        "code": ev.get("code", "synthesis_failed"),
                        "message": ev.get("message", ""),
                        "utterance_id": ev.get("utterance_id"),
                    },
                )
            )
            if self.cancelling and ev.get("code") == "worker_died":  # the cancel's answer will never come
                self._cancelled(None)
        elif kind == "cancelled":
            self._cancelled(ev.get("last_sequence"))

    def _failed(self, u: Utterance, last: int | None) -> None:
        """What the failed utterance wrote still plays out (labelled as its frames); then it ends
        without an ``utterance.end`` (its ``error`` was the end)."""
        if last is None or last < 0:  # the worker died: it wrote what is in the ring now
            last = self.ring.write_seq - 1 if u.first_seq is not None else -1
        if u.first_seq is None or last < u.first_seq:
            self.utterances.remove(u)
            return
        u.last_seq = last
        u.failed = True
        self._end_due()

    def _cancelled(self, last: int | None) -> None:
        # discard every frame of the cancelled utterances not read yet: the cursor jumps past what
        # the worker wrote for them, and the ring is told, so the next writer is not held back
        cut = self._cancel_seq if last is None or last < 0 else last + 1
        for u in self.utterances:
            if u.utterance_id <= self._cancel_uid and u.last_seq is not None:
                cut = max(cut, u.last_seq + 1)  # one that finished just before the cancel reached it
        self.cursor = max(self.cursor, cut)
        self.ring.skip_to(self.cursor)
        self._held_since = 0.0
        self.utterances = deque(u for u in self.utterances if u.utterance_id > self._cancel_uid)
        self.cancelling = False
        # the frames dropped leave a gap in the sequence: say where it goes on (like an overrun does)
        self.events.append(Event("cancelled", {"last_sequence": self.last_read, "next_sequence": self.cursor}))

    def _end(self) -> None:
        """Mark ended and end the listeners (the engine closes the ring after this)."""
        self.ended = True
        self.utterances.clear()
        self._running.set()
        for listener in list(self.listeners):
            listener._end("the stream ended")
        self.listeners.clear()


class Listener(_Source):
    """An extra reader of a stream: its own cursor; it never holds the writer back."""

    def __init__(self, engine: Engine, owner: Stream, start: int) -> None:
        _Source.__init__(self, engine)
        self.owner = owner
        self.reader: RingReader = owner.ring.reader(gating=False, start=start)
        self.frame_samples = owner.frame_samples
        self.ended = False

    def __hash__(self) -> int:
        return id(self)

    @property
    def position(self) -> int:
        return self.reader.position

    @property
    def busy(self) -> bool:
        if self.ended:
            return False
        return self.owner.busy or self.reader.position < self.owner.ring.write_seq

    def read_into(self, out: np.ndarray, now: float) -> Label | None:
        if self.paused or self.ended:
            return None
        reader = self.reader
        while True:
            seq = reader.position
            try:
                if reader.try_read(out):
                    return None
            except FrameNotReady:
                return None
            except FrameOverrun as gap:  # the reader's cursor has moved to gap.oldest
                self.lost += gap.lost
                self.events.append(_overrun(gap))
                continue
            uid, flags = self.owner.passive_label(seq)
            return seq, uid, flags

    def _wait(self, timeout: float) -> None:
        try:
            self.reader.wait(timeout)
        except RingClosed:
            time.sleep(timeout)

    def _end(self, why: str) -> None:
        if self.ended:
            return
        self.ended = True
        self._running.set()
        self.events.append(Event("error", {"code": "session_ended", "message": why}))

    def close(self) -> None:
        """Stop listening. Idempotent."""
        self.owner.listeners.discard(self)
        self.ended = True
        self._running.set()
