"""The worker pool: starts and supervises the TTS worker processes and routes jobs and events.

- A session's utterances are queued and run one after another (its sequence numbers continue across
  them, in its one ring); different sessions run in parallel on the least busy workers.
- Nothing that calls the pool ever writes to a pipe: a message for a worker goes into its outbox
  (:class:`~ringaudio.tts.handle.WorkerHandle`), which a writer thread of its own empties.
- A supervisor thread waits on every worker's pipe *and* process sentinel at once, so a worker that
  dies (even by SIGKILL) is seen at once: its sessions get a ``failed`` event (``worker_died``) and a
  replacement starts when :class:`~ringaudio.tts.supervise.Respawns` says, or the pool gives up
  (``on_fatal``) rather than crash-loop. Events reach ``on_event`` from that thread.
- Workers send a heartbeat every ``HEARTBEAT_S``; one that has missed three (stopped, or stuck) is
  reported by :meth:`WorkerPool.stale` and given no new work while another can take it.
- Workers' log records come over their pipe and are logged here, so every log line reaches the
  operator whole (two processes writing long lines into one pipe interleave them).
- ``start()`` returns when every worker has warmed its kernels and reported ready.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import multiprocessing as mp
import threading
import time
from collections import deque
from collections.abc import Callable
from multiprocessing.connection import wait
from typing import Any

from .. import logs
from ..config import Config
from ..errors import PoolError
from ..ring import RingHandle
from .backends import default_backend_name
from .handle import WorkerHandle
from .spec import EXIT_UNGUARDED_MAIN, Job, WorkerSpec
from .supervise import QUICK_WINDOW_S, UNGUARDED_MAIN, Respawns, refuse_in_bootstrapping_child
from .text import check_text

__all__ = ["PoolError", "WorkerPool", "check_text", "refuse_in_bootstrapping_child"]

log = logging.getLogger("ringaudio.pool")
Event = dict[str, Any]


def _failed(session_id: str, job: Job | None, code: str, message: str) -> Event:
    """The ``failed`` event the pool sends itself, for an utterance no worker will finish."""
    return {
        "type": "failed",
        "session_id": session_id,
        "utterance_id": job.utterance_id if job is not None else None,
        "request_id": job.request_id if job is not None else None,
        "last_sequence": None,
        "code": code,
        "message": message,
    }


class WorkerPool:
    def __init__(
        self,
        config: Config,
        on_event: Callable[[Event], None] | None = None,
        *,
        backend: str | None = None,
        on_fatal: Callable[[str], None] | None = None,
    ) -> None:
        w = config.worker
        name = backend or w.backend
        self.backend = default_backend_name() if name == "auto" else name
        self.spec = WorkerSpec.of(config, self.backend)
        self.size = w.workers
        self.max_text_chars = w.max_text_chars
        self.on_event = on_event or (lambda event: None)
        self.on_fatal = on_fatal or (lambda message: None)
        self._ctx = mp.get_context("spawn")
        self._lock = threading.RLock()  # never held across pipe I/O
        self._levels: dict[str, tuple[int, int]] = {}  # adaptive quality: each session's level now
        self._workers: list[WorkerHandle] = []
        self._queues: dict[str, deque[Job]] = {}
        self._busy: dict[str, tuple[WorkerHandle, Job]] = {}  # session -> the worker running its utterance, and it
        self._ids = itertools.count(1)
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._all_ready = threading.Event()
        self._respawns = Respawns()
        self._respawn: dict[int, float] = {}  # slot -> when its replacement starts
        self.fatal = ""  # why the pool gave up ("" while it has not)
        self.model_id = ""
        self.restarts = 0

    # -- life cycle -------------------------------------------------------------------------------
    def start(self, timeout: float = 120.0) -> None:
        """Start the workers; return when all are ready (kernels warm). Raises PoolError otherwise."""
        refuse_in_bootstrapping_child()
        logs.event(log, logging.INFO, "starting workers", None, backend=self.backend, workers=self.size)
        with self._lock:
            if self._stopping:
                raise PoolError("the pool is stopped")
            self._workers = [WorkerHandle.spawn(self._ctx, self.spec) for _ in range(self.size)]
        self._thread = threading.Thread(target=self._supervise, name="ringaudio-pool", daemon=True)
        self._thread.start()
        if not self._all_ready.wait(timeout):
            self.stop()
            raise PoolError(f"workers were not ready within {timeout:.0f} s")
        with self._lock:
            failed = self.fatal or ("the pool was stopped during start-up" if self._stopping else "")
        if failed:
            self.stop()
            raise PoolError(failed)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop every worker (politely, then by force) and the supervisor. Idempotent; never blocks
        on a worker that does not read (its writer thread may; it is a daemon, ended with the pipe)."""
        with self._lock:
            self._stopping = True
            workers, self._workers = self._workers, []
            self._queues.clear()
            self._busy.clear()
            self._respawn.clear()
        for w in workers:
            w.post("stop", None)
            w.shut()
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

    def abort(self) -> None:
        """Make a :meth:`start` in progress return (and raise) now; :meth:`stop` still cleans up."""
        with self._lock:
            self._stopping = True
        self._all_ready.set()

    def __enter__(self) -> WorkerPool:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- work -------------------------------------------------------------------------------------
    def alive(self) -> int:
        with self._lock:
            return sum(1 for w in self._workers if w.usable())

    def stale(self, now: float | None = None) -> list[int]:
        """Pids of live workers that missed their heartbeats (stopped, or stuck)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            return [w.proc.pid for w in self._workers if w.usable() and not w.fresh(now)]

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
        utterance_id: int | None = None,
        encoding: str = "s16le",
        level: tuple[int, int] | None = None,
    ) -> int:
        """Queue an utterance for a session; returns its utterance id. Raises TextError for bad text.

        ``utterance_id``: the id the job and its events carry, instead of the pool's next one, for a
        caller that records the utterance before the pool can emit an event for it (it then keeps
        the ids unique itself; the pool's counter is not advanced)."""
        check_text(text, self.max_text_chars)
        with self._lock:
            if self._stopping:
                raise PoolError(self.fatal or "the pool is stopped")
            uid = next(self._ids) if utterance_id is None else utterance_id
            job = Job(session_id, uid, text, ring, voice, request_id, encoding, level)
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
            if busy is not None and not busy[0].dead:
                busy[0].post("cancel", session_id)
                return
        self.on_event({"type": "cancelled", "session_id": session_id, "last_sequence": None})

    def set_level(self, session_id: str, level: tuple[int, int]) -> None:
        """Adaptive quality: the session's utterance being synthesized goes on at ``level`` from its
        next frame (queued ones carry the level they were submitted with)."""
        with self._lock:
            self._levels[session_id] = level
            busy = self._busy.get(session_id)
            if busy is not None and not busy[0].dead:
                busy[0].post("level", (session_id, level))

    def forget(self, session_id: str) -> None:
        """The session is gone: drop what the pool kept for it (its level)."""
        with self._lock:
            self._levels.pop(session_id, None)

    def pending(self, session_id: str) -> int:
        with self._lock:
            return len(self._queues.get(session_id, ())) + (session_id in self._busy)

    def _dispatch(self, session_id: str) -> None:
        """Start the session's next utterance if it has none running (lock held; no I/O)."""
        queue = self._queues.get(session_id)
        if not queue or session_id in self._busy:
            return
        ready = [w for w in self._workers if w.usable()]
        if not ready:
            return  # a replacement is starting; dispatched when it reports ready
        now = time.monotonic()
        fresh = [w for w in ready if w.fresh(now)]
        worker = min(fresh or ready, key=lambda w: len(w.sessions))
        job = queue.popleft()
        if not queue:
            del self._queues[session_id]
        level = self._levels.get(session_id)
        if level is not None and level != job.level:  # the level now, not the one it was queued at
            job = dataclasses.replace(job, level=level)
        worker.post("job", job)
        worker.sessions.add(session_id)
        self._busy[session_id] = (worker, job)

    # -- supervision ------------------------------------------------------------------------------
    def _supervise(self) -> None:
        while True:
            self._respawn_due(time.monotonic())
            with self._lock:
                if self._stopping:
                    return
                live = [w for w in self._workers if not w.dead]
                by_conn = {w.conn: w for w in live}
                by_sentinel = {w.proc.sentinel: w for w in live}
                timeout = 0.5
                if self._respawn:
                    timeout = max(0.0, min(timeout, min(self._respawn.values()) - time.monotonic()))
            try:
                ready = wait([*by_conn, *by_sentinel], timeout=timeout)
            except OSError:
                ready = []
            for item in ready:
                if item in by_conn:
                    self._receive(by_conn[item])  # type: ignore[index]
            for item in ready:
                if item in by_sentinel:
                    self._died(by_sentinel[item])  # type: ignore[index]

    def _receive(self, worker: WorkerHandle) -> None:
        try:
            while worker.conn.poll():
                kind, payload = worker.conn.recv()
                worker.last_seen = time.monotonic()
                self._on_message(worker, kind, payload)
        except (EOFError, OSError):
            pass  # its sentinel tells the rest

    def _on_message(self, worker: WorkerHandle, kind: str, payload: Event) -> None:
        if kind == "heartbeat":
            return
        if kind == "log":
            logs.replay(payload)
            return
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
            self._give_up(f"the {self.backend} backend could not start: {payload.get('message', '')}")
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

    def _give_up(self, message: str) -> None:
        """Stop taking work: every utterance queued or running fails (``unavailable``), then
        ``on_fatal`` tells the owner, who stops the pool."""
        with self._lock:
            if self._stopping:
                return
            self._stopping = True
            self.fatal = message
            jobs = [job for _, job in self._busy.values()] + [job for q in self._queues.values() for job in q]
            self._busy.clear()
            self._queues.clear()
        logs.event(log, logging.CRITICAL, "workers failed, giving up", None, error=message)
        self._all_ready.set()
        for job in jobs:
            self.on_event(_failed(job.session_id, job, "unavailable", f"the workers gave up: {message}"))
        self.on_fatal(message)

    def _died(self, worker: WorkerHandle) -> None:
        now = time.monotonic()
        with self._lock:
            if self._stopping or worker not in self._workers or worker.dead:
                return
            worker.dead = True
            worker.shut()
            lost = sorted(worker.sessions)
            jobs = {}
            for session_id in lost:
                busy = self._busy.pop(session_id, None)
                if busy is not None:
                    jobs[session_id] = busy[1]
        worker.proc.join(1)
        worker.conn.close()
        code = worker.proc.exitcode
        logs.event(log, logging.ERROR, "worker died", None, pid=worker.proc.pid, exitcode=code, sessions=len(lost))
        if code == EXIT_UNGUARDED_MAIN and not worker.ready:
            self._give_up(UNGUARDED_MAIN)
        else:
            self._schedule_respawn(worker, now)
        for session_id in lost:
            message = f"worker {worker.proc.pid} exited ({code}) during synthesis"
            self.on_event(_failed(session_id, jobs.get(session_id), "worker_died", message))
        with self._lock:
            for session_id in list(self._queues):
                self._dispatch(session_id)

    def _schedule_respawn(self, worker: WorkerHandle, now: float) -> None:
        """Replace the worker when the respawn policy says, or give up if it says so."""
        delay = self._respawns.after_death(now - worker.spawned, now)
        if delay is None:
            self._give_up(
                f"{self._respawns.quick_deaths} workers died within {QUICK_WINDOW_S:.0f} s of each other, soon after "
                f"they started (last exit code {worker.proc.exitcode}); see the worker's log lines above"
            )
            return
        with self._lock:
            if self._stopping or worker not in self._workers:
                return
            self._respawn[self._workers.index(worker)] = now + delay  # the supervisor's next pass starts it

    def _respawn_due(self, now: float) -> None:
        """Start the replacements whose time has come (on the supervisor thread; the spawn itself,
        which writes the child's start-up data to a pipe, happens outside the lock)."""
        with self._lock:
            due = [slot for slot, when in self._respawn.items() if when <= now]
            for slot in due:
                del self._respawn[slot]
        for slot in due:
            fresh = WorkerHandle.spawn(self._ctx, self.spec)
            with self._lock:
                if self._stopping:
                    fresh.kill()
                    return
                self._workers[slot] = fresh
                self.restarts += 1
