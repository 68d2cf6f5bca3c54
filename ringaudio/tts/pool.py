"""The worker pool: starts and supervises the TTS worker processes and routes jobs and events.

- A session's utterances are queued and run one after another (its sequence numbers continue across
  them, in its one ring); different sessions run in parallel on the least busy workers.
- A supervisor thread waits on every worker's pipe *and* process sentinel at once, so a worker that
  dies (even by SIGKILL) is seen at once: its sessions get a ``failed`` event (``worker_died``) and a
  replacement starts. Events reach ``on_event`` from that thread.
- ``start()`` returns when every worker has warmed its kernels and reported ready.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import multiprocessing as mp
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import Any

from .. import logs
from ..config import Config
from ..errors import RingAudioError, TextError
from ..ring import RingHandle
from .backends import default_backend_name
from .worker import Job, WorkerSpec, worker_main

log = logging.getLogger("ringaudio.pool")
Event = dict[str, Any]


class PoolError(RingAudioError):
    """The pool could not start, or is not running."""


@dataclass
class _Worker:
    proc: Any
    conn: Connection
    ready: bool = False
    sessions: set[str] = field(default_factory=set)
    model_id: str = ""


def check_text(text: object, limit: int) -> str:
    if not isinstance(text, str):
        raise TextError(f"text must be a string, got {type(text).__name__}")
    if not text.strip():
        raise TextError("text is empty")
    if len(text) > limit:
        raise TextError(f"text of {len(text)} characters is over the limit of {limit}")
    if any(ord(c) < 32 and c not in "\n\t\r" for c in text) or "\x7f" in text:
        raise TextError("text contains control characters")
    return text


class WorkerPool:
    def __init__(
        self, config: Config, on_event: Callable[[Event], None] | None = None, *, backend: str | None = None
    ) -> None:
        w = config.worker
        name = backend or w.backend
        self.backend = default_backend_name() if name == "auto" else name
        self.spec = WorkerSpec(
            backend=self.backend,
            voice=w.voice,
            speed=w.speed,
            synthetic_rtf=w.synthetic_rtf,
            synthetic_rate=w.synthetic_rate,
            output_sample_rate=config.output_sample_rate,
            frame_samples=config.frame_samples,
            resample_quality=w.resample_quality,
            clause_chars=w.clause_chars,
            log_level=config.log_level,
        )
        self.size = w.workers
        self.max_text_chars = w.max_text_chars
        self.on_event = on_event or (lambda event: None)
        self._ctx = mp.get_context("spawn")
        self._lock = threading.RLock()
        self._workers: list[_Worker] = []
        self._queues: dict[str, deque[Job]] = {}
        self._busy: dict[str, tuple[_Worker, Job]] = {}  # session -> the worker running its utterance, and it
        self._ids = itertools.count(1)
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._all_ready = threading.Event()
        self.model_id = ""
        self.restarts = 0

    # -- life cycle -------------------------------------------------------------------------------
    def start(self, timeout: float = 120.0) -> None:
        """Start the workers; return when all are ready (kernels warm). Raises PoolError otherwise."""
        logs.event(log, logging.INFO, "starting workers", None, backend=self.backend, workers=self.size)
        with self._lock:
            self._workers = [self._spawn() for _ in range(self.size)]
        self._thread = threading.Thread(target=self._supervise, name="ringaudio-pool", daemon=True)
        self._thread.start()
        if not self._all_ready.wait(timeout):
            self.stop()
            raise PoolError(f"workers were not ready within {timeout:.0f} s")
        with self._lock:
            fatal = [w for w in self._workers if not w.ready]
        if fatal or self._stopping:
            self.stop()
            raise PoolError(f"the {self.backend} backend could not start: {self._fatal_message}")

    _fatal_message = ""

    def _spawn(self) -> _Worker:
        parent, child = self._ctx.Pipe(duplex=True)
        proc = self._ctx.Process(target=worker_main, args=(child, self.spec), name="ringaudio-worker", daemon=True)
        proc.start()
        child.close()
        return _Worker(proc, parent)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop every worker (politely, then by force) and the supervisor. Idempotent."""
        with self._lock:
            self._stopping = True
            workers, self._workers = self._workers, []
            self._queues.clear()
            self._busy.clear()
        for w in workers:
            with contextlib.suppress(OSError, ValueError):
                w.conn.send(("stop", None))
        deadline = time.monotonic() + timeout
        for w in workers:
            w.proc.join(max(0.0, deadline - time.monotonic()))
        for w in workers:
            if w.proc.is_alive():
                w.proc.kill()
                w.proc.join(2)
            w.conn.close()
        self._all_ready.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(2)

    def __enter__(self) -> WorkerPool:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- work -------------------------------------------------------------------------------------
    def alive(self) -> int:
        with self._lock:
            return sum(1 for w in self._workers if w.ready and w.proc.is_alive())

    def pids(self) -> list[int]:
        with self._lock:
            return [w.proc.pid for w in self._workers]

    def submit(
        self,
        session_id: str,
        ring: RingHandle,
        text: str,
        *,
        voice: str | None = None,
        request_id: str | None = None,
    ) -> int:
        """Queue an utterance for a session; returns its utterance id. Raises TextError for bad text."""
        check_text(text, self.max_text_chars)
        with self._lock:
            if self._stopping:
                raise PoolError("the pool is stopped")
            job = Job(session_id, next(self._ids), text, ring, voice, request_id)
            self._queues.setdefault(session_id, deque()).append(job)
            self._dispatch(session_id)
            return job.utterance_id

    def cancel(self, session_id: str) -> None:
        """Drop the session's queued utterances and stop the one being synthesized.

        A ``cancelled`` event follows (from the worker, with the last sequence it wrote, or at once
        with ``last_sequence`` None if nothing was running).
        """
        with self._lock:
            self._queues.pop(session_id, None)
            busy = self._busy.get(session_id)
            if busy is not None:
                try:
                    busy[0].conn.send(("cancel", session_id))
                    return
                except (OSError, ValueError):
                    pass
        self.on_event({"type": "cancelled", "session_id": session_id, "last_sequence": None})

    def pending(self, session_id: str) -> int:
        with self._lock:
            return len(self._queues.get(session_id, ())) + (session_id in self._busy)

    def _dispatch(self, session_id: str) -> None:
        """Start the session's next utterance if it has none running (lock held)."""
        queue = self._queues.get(session_id)
        if not queue or session_id in self._busy:
            return
        ready = [w for w in self._workers if w.ready and w.proc.is_alive()]
        if not ready:
            return  # a replacement is starting; dispatched when it reports ready
        worker = min(ready, key=lambda w: len(w.sessions))
        job = queue.popleft()
        if not queue:
            del self._queues[session_id]
        try:
            worker.conn.send(("job", job))
        except (OSError, ValueError):
            queue = self._queues.setdefault(session_id, deque())
            queue.appendleft(job)
            return
        worker.sessions.add(session_id)
        self._busy[session_id] = (worker, job)

    # -- supervision ------------------------------------------------------------------------------
    def _supervise(self) -> None:
        while True:
            with self._lock:
                if self._stopping:
                    return
                by_conn = {w.conn: w for w in self._workers}
                by_sentinel = {w.proc.sentinel: w for w in self._workers}
            try:
                ready = wait([*by_conn, *by_sentinel], timeout=0.5)
            except OSError:
                ready = []
            for item in ready:
                if item in by_conn:
                    self._receive(by_conn[item])  # type: ignore[index]
            for item in ready:
                if item in by_sentinel:
                    self._died(by_sentinel[item])  # type: ignore[index]

    def _receive(self, worker: _Worker) -> None:
        try:
            while worker.conn.poll():
                kind, payload = worker.conn.recv()
                self._on_message(worker, kind, payload)
        except (EOFError, OSError):
            pass  # its sentinel tells the rest

    def _on_message(self, worker: _Worker, kind: str, payload: Event) -> None:
        if kind == "ready":
            with self._lock:
                worker.ready = True
                worker.model_id = payload.get("model_id", "")
                self.model_id = worker.model_id
                if all(w.ready for w in self._workers):
                    self._all_ready.set()
                for session_id in list(self._queues):
                    self._dispatch(session_id)
            return
        if kind == "fatal":
            self._fatal_message = payload.get("message", "")
            logs.event(log, logging.ERROR, "worker could not start", None, error=self._fatal_message)
            with self._lock:
                self._stopping = True
            self._all_ready.set()
            return
        if kind != "event":
            return
        if payload["type"] not in ("finished", "failed", "cancelled"):
            self.on_event(payload)
            return
        session_id = payload["session_id"]
        with self._lock:
            worker.sessions.discard(session_id)
            busy = self._busy.get(session_id)
            if busy is not None and busy[0] is worker:
                del self._busy[session_id]
        # the caller hears that this utterance ended before the next one can write a frame
        self.on_event(payload)
        with self._lock:
            self._dispatch(session_id)

    def _died(self, worker: _Worker) -> None:
        with self._lock:
            if self._stopping or worker not in self._workers:
                return
            lost = sorted(worker.sessions)
            jobs = {}
            for session_id in lost:
                busy = self._busy.pop(session_id, None)
                if busy is not None:
                    jobs[session_id] = busy[1]
            index = self._workers.index(worker)
            self._workers[index] = self._spawn()
            self.restarts += 1
        worker.proc.join(1)
        worker.conn.close()
        logs.event(
            log,
            logging.ERROR,
            "worker died",
            None,
            pid=worker.proc.pid,
            exitcode=worker.proc.exitcode,
            sessions=len(lost),
        )
        for session_id in lost:
            job = jobs.get(session_id)
            self.on_event(
                {
                    "type": "failed",
                    "session_id": session_id,
                    "utterance_id": job.utterance_id if job is not None else None,
                    "request_id": job.request_id if job is not None else None,
                    "last_sequence": None,
                    "code": "worker_died",
                    "message": f"worker {worker.proc.pid} exited ({worker.proc.exitcode}) during synthesis",
                }
            )
        with self._lock:
            for session_id in list(self._queues):
                self._dispatch(session_id)
