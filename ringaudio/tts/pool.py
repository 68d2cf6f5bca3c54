"""The worker pool: starts and supervises the TTS worker processes and routes jobs and events.

- A session's utterances are queued and run one after another (its sequence numbers continue across
  them, in its one ring); different sessions run in parallel on the least busy workers.
- Nothing that calls the pool ever writes to a pipe: a message for a worker goes into that worker's
  outbox and a writer thread sends it, holding no lock while it does. The outbox is bounded by
  construction: at most one job in flight per session, and a cancel not yet sent is not queued twice.
  (A caller that wrote itself, holding the pool's lock, could freeze the whole server: the worker
  blocked writing an event, the pool's reader waiting for the lock, the caller waiting for the worker.)
- A supervisor thread waits on every worker's pipe *and* process sentinel at once, so a worker that
  dies (even by SIGKILL) is seen at once: its sessions get a ``failed`` event (``worker_died``) and a
  replacement starts, at once the first time and then with exponential backoff; after
  ``MAX_QUICK_DEATHS`` deaths of young workers within ``QUICK_WINDOW_S`` the pool gives up
  (``on_fatal``), rather than crash-looping. Events reach ``on_event`` from that thread.
- Workers send a heartbeat every ``HEARTBEAT_S``; one that has missed three (stopped, or stuck) is
  reported by :meth:`WorkerPool.stale` and given no new work while another can take it.
- Workers' log records come over their pipe and are logged here, so every log line reaches the
  operator whole (two processes writing long lines into one pipe interleave them).
- ``start()`` returns when every worker has warmed its kernels and reported ready.
"""

from __future__ import annotations

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
from ..errors import PoolError, TextError
from ..ring import RingHandle
from .backends import default_backend_name
from .worker import EXIT_UNGUARDED_MAIN, HEARTBEAT_S, Job, WorkerSpec, worker_main

__all__ = ["PoolError", "WorkerPool", "check_text", "refuse_in_bootstrapping_child"]

log = logging.getLogger("ringaudio.pool")
Event = dict[str, Any]

MAX_QUICK_DEATHS = 5  # deaths of young workers within QUICK_WINDOW_S before the pool gives up
QUICK_WINDOW_S = 30.0
YOUNG_S = 10.0  # a worker that dies younger than this counts towards MAX_QUICK_DEATHS
BACKOFF_FIRST_S = 0.25  # the second quick death in a row waits this long before the respawn, then doubles
BACKOFF_MAX_S = 5.0
STALE_AFTER_S = 3 * HEARTBEAT_S

UNGUARDED_MAIN = (
    "a worker process re-imported your program's main module and it started an engine there: "
    "spawned processes import the main module, so put the code that starts the engine under "
    '`if __name__ == "__main__":`'
)


def refuse_in_bootstrapping_child() -> None:
    """Starting an engine while multiprocessing bootstraps a spawned child means the main module has
    no ``__main__`` guard: every worker would start workers of its own and die. Say so, and exit
    with a code the parent recognises (there is no other channel back yet)."""
    if getattr(mp.current_process(), "_inheriting", False):
        import sys

        print(f"ringaudio: {UNGUARDED_MAIN}", file=sys.stderr, flush=True)
        raise SystemExit(EXIT_UNGUARDED_MAIN)


@dataclass(eq=False)
class _Worker:
    proc: Any
    conn: Connection
    spawned: float
    ready: bool = False
    dead: bool = False
    sessions: set[str] = field(default_factory=set)
    model_id: str = ""
    last_seen: float = 0.0
    outbox: deque[tuple[str, Any]] = field(default_factory=deque)
    cancels: set[str] = field(default_factory=set)  # sessions with a cancel in the outbox
    cv: threading.Condition = field(default_factory=threading.Condition)
    closed: bool = False

    def post(self, kind: str, payload: Any) -> None:
        """Queue a message for the writer thread (never blocks on the pipe)."""
        with self.cv:
            if self.closed:
                return
            if kind == "cancel":
                if payload in self.cancels:
                    return  # the one not yet sent covers this one
                self.cancels.add(payload)
            self.outbox.append((kind, payload))
            self.cv.notify()

    def write_loop(self) -> None:
        """The writer thread: send the outbox in order; the only place that writes to the pipe."""
        while True:
            with self.cv:
                while not self.outbox and not self.closed:
                    self.cv.wait()
                if not self.outbox:
                    return
                message = self.outbox.popleft()
                if message[0] == "cancel":
                    self.cancels.discard(message[1])
            try:
                self.conn.send(message)
            except (OSError, ValueError, EOFError):
                return  # the worker is gone; its sentinel tells the supervisor

    def shut(self) -> None:
        with self.cv:
            self.closed = True
            self.cv.notify()


def check_text(text: object, limit: int) -> str:
    if not isinstance(text, str):
        raise TextError(f"text must be a string, got {type(text).__name__}")
    if not text.strip():
        raise TextError("text is empty")
    if len(text) > limit:
        raise TextError(f"text of {len(text)} characters is over the limit of {limit}", code="text_too_long")
    if any(ord(c) < 32 and c not in "\n\t\r" for c in text) or "\x7f" in text:
        raise TextError("text contains control characters")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise TextError(f"text contains a lone surrogate at {exc.start}: not valid Unicode") from None
    return text


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
            lead_frames=w.lead_ms // config.frame_duration_ms,
        )
        self.size = w.workers
        self.max_text_chars = w.max_text_chars
        self.on_event = on_event or (lambda event: None)
        self.on_fatal = on_fatal or (lambda message: None)
        self._ctx = mp.get_context("spawn")
        self._lock = threading.RLock()  # never held across pipe I/O
        self._workers: list[_Worker] = []
        self._queues: dict[str, deque[Job]] = {}
        self._busy: dict[str, tuple[_Worker, Job]] = {}  # session -> the worker running its utterance, and it
        self._ids = itertools.count(1)
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._all_ready = threading.Event()
        self._quick_deaths: deque[float] = deque()
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
            self._workers = [self._spawn() for _ in range(self.size)]
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

    def _spawn(self) -> _Worker:
        parent, child = self._ctx.Pipe(duplex=True)
        proc = self._ctx.Process(target=worker_main, args=(child, self.spec), name="ringaudio-worker", daemon=True)
        proc.start()
        child.close()
        now = time.monotonic()
        worker = _Worker(proc, parent, spawned=now, last_seen=now)
        threading.Thread(target=worker.write_loop, name="ringaudio-pool-writer", daemon=True).start()
        return worker

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
            return sum(1 for w in self._workers if self._usable(w))

    def stale(self, now: float | None = None) -> list[int]:
        """Pids of live workers that missed their heartbeats (stopped, or stuck)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            return [w.proc.pid for w in self._workers if self._usable(w) and not self._fresh(w, now)]

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
                raise PoolError(self.fatal or "the pool is stopped")
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
            if busy is not None and not busy[0].dead:
                busy[0].post("cancel", session_id)
                return
        self.on_event({"type": "cancelled", "session_id": session_id, "last_sequence": None})

    def pending(self, session_id: str) -> int:
        with self._lock:
            return len(self._queues.get(session_id, ())) + (session_id in self._busy)

    @staticmethod
    def _usable(w: _Worker) -> bool:
        return w.ready and not w.dead and w.proc.is_alive()

    @staticmethod
    def _fresh(w: _Worker, now: float) -> bool:
        """Has it been heard from within STALE_AFTER_S (a heartbeat, an event)?"""
        return now - w.last_seen <= STALE_AFTER_S

    def _dispatch(self, session_id: str) -> None:
        """Start the session's next utterance if it has none running (lock held; no I/O)."""
        queue = self._queues.get(session_id)
        if not queue or session_id in self._busy:
            return
        ready = [w for w in self._workers if self._usable(w)]
        if not ready:
            return  # a replacement is starting; dispatched when it reports ready
        now = time.monotonic()
        fresh = [w for w in ready if self._fresh(w, now)]
        worker = min(fresh or ready, key=lambda w: len(w.sessions))
        job = queue.popleft()
        if not queue:
            del self._queues[session_id]
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

    def _receive(self, worker: _Worker) -> None:
        try:
            while worker.conn.poll():
                kind, payload = worker.conn.recv()
                worker.last_seen = time.monotonic()
                self._on_message(worker, kind, payload)
        except (EOFError, OSError):
            pass  # its sentinel tells the rest

    def _on_message(self, worker: _Worker, kind: str, payload: Event) -> None:
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
            self.on_event(
                {
                    "type": "failed",
                    "session_id": job.session_id,
                    "utterance_id": job.utterance_id,
                    "request_id": job.request_id,
                    "last_sequence": None,
                    "code": "unavailable",
                    "message": f"the workers gave up: {message}",
                }
            )
        self.on_fatal(message)

    def _died(self, worker: _Worker) -> None:
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
            job = jobs.get(session_id)
            self.on_event(
                {
                    "type": "failed",
                    "session_id": session_id,
                    "utterance_id": job.utterance_id if job is not None else None,
                    "request_id": job.request_id if job is not None else None,
                    "last_sequence": None,
                    "code": "worker_died",
                    "message": f"worker {worker.proc.pid} exited ({code}) during synthesis",
                }
            )
        with self._lock:
            for session_id in list(self._queues):
                self._dispatch(session_id)

    def _schedule_respawn(self, worker: _Worker, now: float) -> None:
        """A young worker's death counts towards giving up; the replacement starts at once the first
        time, then after a backoff that doubles with each quick death in the window."""
        deaths = self._quick_deaths
        if now - worker.spawned < YOUNG_S:
            deaths.append(now)
        while deaths and now - deaths[0] > QUICK_WINDOW_S:
            deaths.popleft()
        if len(deaths) >= MAX_QUICK_DEATHS:
            self._give_up(
                f"{len(deaths)} workers died within {QUICK_WINDOW_S:.0f} s of each other, soon after they started "
                f"(last exit code {worker.proc.exitcode}); see the worker's log lines above"
            )
            return
        delay = 0.0 if len(deaths) <= 1 else min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2 ** (len(deaths) - 2))
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
            fresh = self._spawn()
            with self._lock:
                if self._stopping:
                    fresh.shut()
                    fresh.proc.kill()
                    fresh.proc.join(2)
                    fresh.conn.close()
                    return
                self._workers[slot] = fresh
                self.restarts += 1
