"""Streams and listeners: a ring, a reader's :class:`~ringaudio.stream.core.StreamState`, and the
thread-safe edge between them and the worker pool.

A :class:`Stream` is one session's stream: the consumer says text into it, reads its frames in
sequence (:meth:`Source.read_into`, the allocation-free path the server uses, or by iterating it)
and collects its events (:meth:`Source.pop_events`). A :class:`Listener` is an extra reader of a
stream (whole-home announcements): its own cursor and state, never holding the writer back; when
lapped it is told exactly how many frames it lost. Both are a :class:`Source`, which is all a
consumer needs.

Worker events arrive on the pool's thread: they are only appended to each reader's ``inbox``
(a deque: thread-safe) and applied in the consumer's thread at its next read, so a reader's state
is only ever changed by the thread that reads it, and no lock is taken per frame. The stream talks
to what owns it (the :class:`~ringaudio.engine.Engine`) through :class:`StreamOwner`.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Iterator
from typing import Any, Protocol

import numpy as np

from .. import opus
from ..errors import CodecError, RingClosed, StreamError
from ..ring import FrameRing, layout
from . import iterate
from .core import Event, Frame, StreamState
from .reading import Reading

ENCODINGS = ("s16le", "opus")  # what a worker writes into a stream's ring


class StreamOwner(Protocol):
    """What a stream needs from whoever made it (the engine implements this)."""

    def next_utterance_id(self) -> int: ...

    def submit_utterance(
        self, stream: Stream, utterance_id: int, text: str, voice: str | None, request_id: str | None
    ) -> None: ...

    def set_stream_level(self, stream: Stream, level: tuple[int, int]) -> None: ...

    def cancel_stream(self, stream: Stream) -> None: ...

    def release_stream(self, stream: Stream) -> None: ...


class Source(Reading):
    """A reader of a stream's ring: the owner's (gating, slot 0) or a listener's (non-gating)."""

    owner: bool = False  # the session's own stream (it may say, cancel, be listened to)

    def __init__(self, ring: FrameRing, state: StreamState, slot: int, frame_samples: int) -> None:
        self.ring = ring
        self.state = state
        self.frame_samples = frame_samples
        self.inbox = deque()  # appended from any thread, applied by the reader
        self.ended = False  # set at once by close (any thread); the state follows at the next read
        self._slot = slot
        self._label = np.zeros(layout.LABEL_WORDS, np.int64)
        self._held = np.zeros(frame_samples, ring.dtype)  # a frame held back (see Reading)
        self._held_label = None
        self._held_payload = (0, 0)
        self.format_word = 0
        self.payload_bytes = 0
        self._nudge = threading.Event()  # set on every delivery and on resume: a blocked iterator's sleep

    # -- reading ---------------------------------------------------------------------------------------
    @property
    def position(self) -> int:
        """The next sequence this reader reads."""
        return self.state.cursor

    @property
    def paused(self) -> bool:
        return self.state.paused

    @property
    def events(self) -> deque[Event]:
        """Events due now (before the next frame); :meth:`pop_events` takes them."""
        return self.state.events

    @property
    def lost(self) -> int:
        return self.state.lost

    @property
    def first_audio_ms(self) -> float:
        return self.state.first_audio_ms

    @property
    def busy(self) -> bool:
        """Is there something (more) to read, now or once the worker writes it?"""
        if self.inbox or self.state.busy:
            return not self.state.ended
        try:
            return not self.state.ended and self.state.cursor < self.ring.write_seq
        except RingClosed:
            return False

    def pop_events(self) -> list[Event]:
        """Every event due now, in order (each comes before the next frame :meth:`read_into` returns)."""
        if self.inbox:
            self._apply()
        return self.state.pop_events()

    def next_event(self) -> Event | None:
        """The first event due now, if any."""
        if self.inbox:
            self._apply()
        st = self.state
        st.due()
        return st.events.popleft() if st.events else None

    # -- flow control -------------------------------------------------------------------------------------
    def pause(self) -> None:
        """Stop reading. Under ``block`` the ring fills and the worker waits; nothing is lost."""
        self.state.pause()

    def resume(self) -> None:
        self.state.resume()
        self._nudge.set()

    # -- worker events (applied in the reader's thread) ---------------------------------------------
    def deliver(self, ev: dict[str, Any]) -> None:
        """From any thread: an event for this reader's next read."""
        self.inbox.append(ev)
        self._nudge.set()

    def _apply(self) -> None:
        st, inbox = self.state, self.inbox
        while inbox:
            ev = inbox.popleft()
            kind = ev["type"]
            if kind == "said":
                st.said(ev["utterance_id"], ev.get("request_id"), ev["at"])
            elif kind == "withdrawn":
                st.withdrawn(ev["utterance_id"])
            elif kind == "finished":
                written = ev.get("written", self._written())
                st.finished(ev["utterance_id"], ev.get("first_sequence"), ev.get("last_sequence"), written)
            elif kind == "failed":
                st.failed(
                    ev.get("utterance_id"),
                    ev.get("code", "synthesis_failed"),
                    ev.get("message", ""),
                    ev.get("last_sequence"),
                    ev.get("written", self._written()),
                )
            elif kind == "cancel":
                st.cancel(ev["written"])
            elif kind == "cancelled":
                self._skipped(st.cancelled(ev.get("last_sequence")))
            elif kind == "ended":
                st.end(ev.get("why"))

    def _written(self) -> int:
        try:
            return self.ring.write_seq
        except RingClosed:
            return self.state.cursor

    # -- iteration ----------------------------------------------------------------------------------
    def wait(self, timeout: float) -> None:
        """Sleep until something may have changed: a frame written, an event delivered (the engine
        wakes the ring's readers), a resume, or ``timeout``. A reader that reads nothing now (paused,
        waiting for a cancel's answer, ended) sleeps on its deliveries, not on the ring (whose next
        frame may be there already)."""
        if self.state.blocked or self.ended:
            if self._nudge.wait(timeout):
                self._nudge.clear()
            return
        try:
            self.ring.wait_once(self.state.cursor, time.monotonic() + timeout)
        except RingClosed:
            if self._nudge.wait(timeout):
                self._nudge.clear()

    def __iter__(self) -> Iterator[Frame | Event]:
        """Frames and events until everything said so far has been read (blocks; sleeps, never spins)."""
        return iterate.frames_and_events(self)

    def frames(self) -> Iterator[Frame]:
        """Just the frames (events are skipped: iterate the stream itself to see both)."""
        for item in self:
            if isinstance(item, Frame):
                yield item

    def __aiter__(self) -> AsyncIterator[Frame | Event]:
        return iterate.frames_and_events_async(self)

    def close(self) -> None:
        raise NotImplementedError


class Stream(Source):
    """One session's stream: say text into it, read its frames in sequence, pause, cancel, listen."""

    owner = True

    def __init__(self, owner: StreamOwner, stream_id: str, key: str, ring: FrameRing, frame_ms: int) -> None:
        super().__init__(ring, StreamState(frame_ms), 0, ring.frame_shape[0])
        self.id = stream_id
        self.key = key  # what a listener presents to join (the server hands it to the owner only)
        self.listeners: tuple[Listener, ...] = ()  # replaced, never changed in place: the pool's thread iterates it
        self._owner = owner
        self._lock = threading.Lock()  # for listeners joining and leaving from different threads
        self.encoding = "s16le"  # what the worker writes for utterances said from now on (set_encoding)
        self.level: tuple[int, int] | None = None  # (rate, frame_ms) of the frames written from now on (set_level)

    def __repr__(self) -> str:
        return f"<Stream {self.id} cursor={self.position}>"

    # -- control ----------------------------------------------------------------------------------
    def say(self, text: str, *, voice: str | None = None, request_id: str | None = None) -> int:
        """Queue an utterance; returns its id. Raises TextError, StreamError (``queue_full``), ..."""
        if self.ended:
            raise StreamError("stream_ended", "the stream is closed")
        uid = self._owner.next_utterance_id()
        # recorded before the pool can say anything about it: its events then find it
        self.deliver_all({"type": "said", "utterance_id": uid, "request_id": request_id, "at": time.monotonic()})
        try:
            self._owner.submit_utterance(self, uid, text, voice, request_id)
        except BaseException:
            self.deliver_all({"type": "withdrawn", "utterance_id": uid})
            raise
        return uid

    def set_encoding(self, encoding: str) -> None:
        """What the utterances said from now on are written as: ``s16le`` PCM, or ``opus`` (one
        packet per frame, encoded in the worker: a frame's :attr:`~Frame.opus` holds it). Raises
        CodecError where libopus is missing, StreamError for another name."""
        if encoding not in ENCODINGS:
            raise StreamError("invalid_field", f"encoding must be one of {', '.join(ENCODINGS)}, got {encoding!r}")
        if encoding == "opus":
            why = opus.available()
            if why is not None:
                raise CodecError(why)
        self.encoding = encoding

    def set_level(self, level: tuple[int, int]) -> None:
        """Adaptive quality (``audio.adaptive_quality``): frames from the next one the worker makes are
        at ``level`` (one of ``audio.quality_levels``, as (rate, frame_ms)); each frame's label says its
        format. Without adaptive quality the worker ignores it."""
        chosen = (int(level[0]), int(level[1]))
        self._owner.set_stream_level(self, chosen)  # StreamError for a level it cannot have
        self.level = chosen

    def cancel(self) -> None:
        """Barge-in: stop the worker, drop what is queued and what is in the ring; a ``cancelled``
        event (with the last sequence read) follows once the worker has stopped."""
        if self.ended:
            return
        self.deliver_all({"type": "cancel", "written": self._written()})
        self._owner.cancel_stream(self)

    def listen(self, start: int | None = None) -> Listener:
        """An extra, non-gating reader of this stream, from ``start`` (default: where this stream is)."""
        with self._lock:  # no event is delivered meanwhile: the listener gets each one exactly once
            if self.ended:
                raise StreamError("stream_ended", "the stream is closed")
            listener = Listener(self, self.position if start is None else start)
            # what this stream has applied is in its state (copied); what it has not, the listener
            # applies too (call listen() from the stream's reading thread, or between its reads)
            listener.inbox.extend(list(self.inbox))
            self.listeners = (*self.listeners, listener)
        return listener

    def deliver_all(self, ev: dict[str, Any]) -> None:
        """From any thread: an event for this stream and every listener, then wake their readers.

        The ring's write cursor is noted now, on the delivering thread: the pool delivers an
        utterance's end before it lets the next utterance write, so a position taken from it (where
        an utterance without audio, or a worker's death, goes) is exact however late it is applied."""
        with contextlib.suppress(RingClosed):
            ev.setdefault("written", self.ring.write_seq)
        with self._lock:
            self.deliver(ev)
            for listener in self.listeners:
                listener.deliver(ev)
        self.ring.wake_readers()

    def drop_listener(self, listener: Listener) -> None:
        with self._lock:
            self.listeners = tuple(x for x in self.listeners if x is not listener)

    def close(self) -> None:
        """End the stream: the worker stops, listeners end, the ring goes back to the arena. Idempotent."""
        self._owner.release_stream(self)

    def end(self) -> None:
        """Mark ended and end the listeners (the owner closes the ring after this)."""
        with self._lock:
            self.ended = True
            self.deliver({"type": "ended"})
            for listener in self.listeners:
                listener.end("the stream ended")
            self.listeners = ()

    def _skipped(self, seq: int) -> None:
        # the watermark follows this reader past what it will never read (a gap, a cancel)
        with contextlib.suppress(RingClosed):
            self.ring.skip_to(seq)

    def __enter__(self) -> Stream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Listener(Source):
    """An extra reader of a stream: its own cursor and state; it never holds the writer back."""

    def __init__(self, stream: Stream, start: int) -> None:
        super().__init__(stream.ring, StreamState.following(stream.state, start), -1, stream.frame_samples)
        self.stream = stream

    def end(self, why: str) -> None:
        if self.ended:
            return
        self.ended = True
        self.deliver({"type": "ended", "why": why})

    def close(self) -> None:
        """Stop listening. Idempotent."""
        self.stream.drop_listener(self)
        self.ended = True
        self.deliver({"type": "ended"})
