"""The engine: the ring arena and the worker pool in the host program's process tree, no sockets.

::

    with Engine() as engine:
        for item in engine.speak("Hello there."):
            if isinstance(item, Frame):
                sink.write(item.pcm)

``Engine`` is what the WebSocket server is built on: the server is one consumer of its streams
(pacing frames onto sockets); a local player is another. Worker events arrive on the pool's thread
and go into the inbox of each reader of their stream (the stream and its listeners), which applies
them in the consumer's thread at its next read; the engine wakes the readers asleep on the
stream's ring, and calls ``notify`` (if set, from the pool's thread) to wake an event loop, which
asks :meth:`Engine.poll` which streams were touched.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from . import checks, logs
from . import config as config_mod
from .config import Config
from .errors import EngineError, StreamError
from .ring import RingArena, reclaim_stale
from .stream import Event, Frame, Listener, Source, Stream
from .tts import WorkerPool
from .tts.pool import PoolError, refuse_in_bootstrapping_child

log = logging.getLogger("ringaudio.engine")

__all__ = ["Engine", "EngineError", "Event", "Frame", "Listener", "Source", "Stream", "StreamError"]


class Engine:
    """Arena + workers + streams. A context manager (``with`` / ``async with``); ``close`` is idempotent."""

    def __init__(
        self,
        config: Config | None = None,
        *,
        workers: int | None = None,
        backend: str | None = None,
        max_streams: int | None = None,
    ) -> None:
        cfg = config if config is not None else config_mod.load(None)
        # the keywords are checked like the same keys in a file (one line, ConfigError)
        if workers is not None:
            workers = checks.workers(workers, "workers")
        if backend is not None:
            backend = checks.choice(backend, "backend", config_mod.BACKENDS)
        if max_streams is not None:
            max_streams = checks.integer(max_streams, "max_streams", 1, 10_000)
        if workers is not None or backend is not None:
            cfg = dataclasses.replace(
                cfg,
                worker=dataclasses.replace(
                    cfg.worker,
                    workers=cfg.worker.workers if workers is None else workers,
                    backend=cfg.worker.backend if backend is None else backend,
                ),
            )
        if max_streams is not None:
            cfg = dataclasses.replace(cfg, server=dataclasses.replace(cfg.server, max_sessions=max_streams))
        self.config = cfg
        self.frame_samples = cfg.frame_samples
        self.sample_rate = cfg.output_sample_rate
        self.frame_ms = cfg.frame_duration_ms
        self.streams: dict[str, Stream] = {}
        self.id_prefix = ""  # stream ids start with it (a server's instance name and a dash)
        self.arena: RingArena | None = None
        self.pool: WorkerPool | None = None
        self.lock = threading.Lock()  # held while streams open and close (never per frame)
        self.notify: Callable[[], None] | None = None
        # (stream id, model_id, rtf) of each utterance synthesized, called on the pool's thread
        self.on_rtf: Callable[[str, str, float], None] | None = None
        self.fatal = ""  # why the workers gave up (set from the pool's thread; notify() follows)
        self._touched: deque[Stream] = deque()  # streams that got worker events since the last poll()
        self._uids = itertools.count(1)
        self._submitted: dict[str, dict[int, float]] = {}  # stream -> utterance -> when said (queue wait)
        self._closed = False
        self._state = threading.Lock()  # start() and abort() agree on whether a pool may start

    # -- life cycle ---------------------------------------------------------------------------------
    def start(self) -> Engine:
        """Create the arena and start the workers; returns when every worker is warm and ready.

        Raises :class:`~ringaudio.errors.PoolError` if the workers cannot start (a backend that
        fails, workers that die again and again, a main module without a ``__main__`` guard), and
        :class:`EngineError` if :meth:`abort` was called meanwhile."""
        refuse_in_bootstrapping_child()
        if self.arena is not None:
            return self
        if self._closed:
            raise EngineError("the engine is closed")
        reclaimed = reclaim_stale()
        if reclaimed:
            logs.event(log, logging.WARNING, "reclaimed stale shared memory", None, segments=reclaimed)
        cfg = self.config
        self.arena = RingArena.create(
            rings=cfg.server.max_sessions,
            capacity=cfg.frame_queue_size,
            frame_samples=self.frame_samples,
            overflow=cfg.worker.overflow,
            high_watermark=cfg.worker.high_watermark,
            low_watermark=cfg.worker.low_watermark,
        )
        try:
            pool = WorkerPool(cfg, self._from_pool, on_fatal=self._on_fatal)
            with self._state:
                if self._closed:
                    raise EngineError("the engine was stopped during start-up")
                self.pool = pool
            logs.event(log, logging.INFO, "tts backend", None, backend=pool.backend, workers=pool.size)
            pool.start()
        except PoolError:
            self.close()
            if self._aborted:
                raise EngineError("the engine was stopped during start-up") from None
            raise
        except BaseException:
            self.close()
            raise
        return self

    _aborted = False

    def abort(self) -> None:
        """From any thread, without blocking: make a :meth:`start` in progress give up soon (it
        raises EngineError, after cleaning up). For a signal that arrives during start-up."""
        with self._state:
            self._closed = True
            self._aborted = True
            pool = self.pool
        if pool is not None:
            pool.abort()

    def _on_fatal(self, message: str) -> None:  # on the pool's thread
        self.fatal = message
        notify = self.notify
        if notify is not None:
            notify()

    def close(self) -> None:
        """End every stream, stop the workers, unlink the arena. Idempotent; safe after a failed start."""
        with self._state:
            self._closed = True
        for stream in list(self.streams.values()):
            self.release_stream(stream)
        pool, self.pool = self.pool, None
        if pool is not None:
            pool.stop(3.0)
        arena, self.arena = self.arena, None
        if arena is not None:
            arena.unlink()
            arena.close()

    def __enter__(self) -> Engine:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> Engine:
        await asyncio.get_running_loop().run_in_executor(None, self.start)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self.close)

    @property
    def backend(self) -> str | None:
        return self.pool.backend if self.pool is not None else None

    def health(self) -> dict[str, Any]:
        pool, arena = self.pool, self.arena
        alive = pool.alive() if pool is not None else 0
        stale = pool.stale() if pool is not None else []
        return {
            "status": "ok" if pool is not None and alive == pool.size and not stale and not self.fatal else "degraded",
            "workers": {"alive": alive, "size": pool.size if pool else 0, "stale": stale},
            "backend": pool.backend if pool else None,
            "streams": len(self.streams),
            "arena": {"rings": arena.n_rings if arena else 0, "leased": arena.leased if arena else 0},
        }

    # -- streams --------------------------------------------------------------------------------------
    def open_stream(self) -> Stream:
        """A new stream with its own ring (raises ArenaFull at ``max_sessions``)."""
        if self.arena is None or self.pool is None:
            raise EngineError("the engine is not started" if not self._closed else "the engine is closed")
        with self.lock:
            ring = self.arena.lease()
            stream = Stream(self, self.id_prefix + secrets.token_hex(8), secrets.token_urlsafe(16), ring, self.frame_ms)
            self.streams[stream.id] = stream
        return stream

    def speak(
        self, text: str, *, voice: str | None = None, request_id: str | None = None, stream: Stream | None = None
    ) -> Stream:
        """Say ``text`` (on ``stream``, or on a new one); iterate the stream for its frames and events."""
        own = stream is None
        target = self.open_stream() if stream is None else stream
        try:
            target.say(text, voice=voice, request_id=request_id)
        except BaseException:
            if own:
                target.close()
            raise
        return target

    # -- what a stream asks of its owner (StreamOwner) ------------------------------------------------
    def next_utterance_id(self) -> int:
        return next(self._uids)

    def submit_utterance(
        self, stream: Stream, utterance_id: int, text: str, voice: str | None, request_id: str | None
    ) -> None:
        pool = self.pool
        if pool is None:
            raise EngineError("the engine is closed")
        if pool.pending(stream.id) >= self.config.server.max_queued_utterances:
            raise StreamError("queue_full", "too many utterances queued")
        said = self._submitted.setdefault(stream.id, {})
        said[utterance_id] = time.monotonic()
        try:
            pool.submit(
                stream.id,
                stream.ring.handle,
                text,
                voice=voice,
                request_id=request_id,
                utterance_id=utterance_id,
                encoding=stream.encoding,
                level=stream.level,
            )
        except BaseException:
            said.pop(utterance_id, None)
            raise

    def set_stream_level(self, stream: Stream, level: tuple[int, int]) -> None:
        levels = [(q.sample_rate, q.frame_duration_ms) for q in self.config.quality_levels]
        if not self.config.adaptive_quality or level not in levels:
            raise StreamError(
                "format_unavailable",
                f"a level is one of audio.quality_levels ({levels}) with audio.adaptive_quality on, got {level}",
            )
        pool = self.pool
        if pool is not None:
            pool.set_level(stream.id, level)

    def cancel_stream(self, stream: Stream) -> None:
        if self.pool is not None:
            self.pool.cancel(stream.id)
        else:
            stream.deliver_all({"type": "cancelled", "last_sequence": None})

    def release_stream(self, stream: Stream) -> None:
        with self.lock:
            if self.streams.pop(stream.id, None) is None:
                return
            if self.pool is not None:
                self.pool.cancel(stream.id)
                self.pool.forget(stream.id)
            self._submitted.pop(stream.id, None)
            stream.end()
            stream.ring.close()  # the lease goes back to the arena

    # -- worker events ------------------------------------------------------------------------------
    def _from_pool(self, ev: dict[str, Any]) -> None:
        """On the pool's thread: log the event, hand it to the stream's readers, wake the consumer."""
        stream = self.streams.get(ev.get("session_id", ""))
        if stream is None:
            return
        self._log(stream, ev)
        stream.deliver_all(ev)
        self._touched.append(stream)
        notify = self.notify
        if notify is not None:
            notify()

    def poll(self) -> list[Stream]:
        """The streams that got worker events since the last call (each once, in order)."""
        touched: list[Stream] = []
        while self._touched:
            stream = self._touched.popleft()
            if stream not in touched:
                touched.append(stream)
        return touched

    def _log(self, stream: Stream, ev: dict[str, Any]) -> None:
        kind = ev["type"]
        if kind == "started":
            said = self._submitted.get(stream.id, {}).pop(ev.get("utterance_id", -1), None)
            logs.event(
                log,
                logging.INFO,
                "utterance started",
                stream.id,
                utterance_id=ev.get("utterance_id"),
                queue_wait_ms=round((time.monotonic() - said) * 1000, 2) if said is not None else None,
            )
        elif kind == "finished":
            if self.on_rtf is not None:
                self.on_rtf(stream.id, ev.get("model_id", ""), ev.get("rtf", 0.0))
            logs.event(
                log,
                logging.INFO,
                "utterance finished",
                stream.id,
                rtf=ev.get("rtf"),
                model_id=ev.get("model_id"),
                synthesis_duration_ms=ev.get("synthesis_duration_ms"),
                frames=ev.get("frames"),
            )
        elif kind == "failed":
            self._submitted.get(stream.id, {}).pop(ev.get("utterance_id", -1), None)
        elif kind == "cancelled":  # the queued ones are dropped too, without an event of their own
            self._submitted.pop(stream.id, None)
