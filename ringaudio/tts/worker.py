"""The TTS worker process: text -> backend (native rate) -> resampler -> 20/40 ms frames -> session ring.

One process serves several sessions from one loop: each job (:class:`~ringaudio.tts.job.ActiveJob`)
is a pipeline stepped a few frames at a time, writing each frame with its label (utterance id,
first/last flags, format) into the ring. Two things hold a job back, and they are different:

- **Pacing.** A job writes at most ``lead_frames`` ahead of its stream's real playback clock (under
  both policies): the clock starts where the reader is when the job starts and runs at one frame per
  frame period. So a healthy stream holds about the lead in its ring, a fast model never laps a
  real-time reader under ``drop_oldest``, and the first frames still go out as soon as synthesized.
  If synthesis falls behind the clock (the reader starves), the clock is set back to the writer:
  a late burst is paced again, not dumped into the ring.
- **Backpressure.** A job whose ring reaches its high watermark (the reader fell behind real time)
  waits its turn (``FrameRing.offer`` returns -1, under ``block``) until the reader brings the ring
  to the low watermark; the clock then restarts from the reader, so the ring goes back to the lead.

With nothing to write the loop sleeps in ``poll`` on its control pipe: no spinning. Control
messages (jobs, cancel, stop) come from the pool over a pipe; events (started, first_frame,
finished, failed, cancelled), a heartbeat every ``HEARTBEAT_S`` and the worker's log records go
back on it (the pool logs them, so lines stay whole).
"""

from __future__ import annotations

import logging
import math
import os
import select
import signal
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

from .. import logs
from ..collect import FullCollections
from ..errors import ConfigError, RingAudioError, RingClosed
from ..kernels.backend import slow as ring_slow
from ..resample import warm
from ..ring import FrameRing, RingArena, RingHandle
from ..schedule import Schedule
from .backends import Backend, BackendError, EspeakBackend, SyntheticBackend
from .job import ActiveJob
from .spec import EXIT_UNGUARDED_MAIN, HEARTBEAT_S, Job, WorkerSpec

log = logging.getLogger("ringaudio.worker")
WAKE_SLACK = 0.005  # s: a wake-up also steps the jobs due this soon after it (on a clock this far ahead)
__all__ = ["EXIT_UNGUARDED_MAIN", "HEARTBEAT_S", "ActiveJob", "Job", "Worker", "WorkerSpec", "worker_main"]


def make_backend(spec: WorkerSpec) -> Backend:
    if spec.backend == "espeak":
        return EspeakBackend(voice=spec.voice, speed=spec.speed)
    if spec.backend == "synthetic":
        return SyntheticBackend(native_rate=spec.synthetic_rate, rtf=spec.synthetic_rtf)
    raise BackendError(f"unknown backend {spec.backend!r}")


class Worker:
    def __init__(self, conn: Connection, spec: WorkerSpec) -> None:
        self.conn = conn
        self.spec = spec
        self.backend = make_backend(spec)
        self.arenas: dict[str, RingArena] = {}
        self.jobs: dict[str, ActiveJob] = {}
        self.due: Schedule[ActiveJob] = Schedule()  # when each job looks again (its retry_at), a heap
        self.collections = FullCollections()  # (ringaudio.collect: this loop runs them)
        self.last_sent = 0.0
        # the order due jobs are stepped in (see run)
        self._urgency: Callable[[ActiveJob], int] = ActiveJob.buffered if not spec.lead_frames else ActiveJob.writing
        # Connection.poll builds (and tears down) a selector on every call, a seventh of the worker's
        # time at 500 streams; one poll object registered once asks the same question of the pipe
        self._poller: Any = None
        if hasattr(select, "poll"):
            self._poller = select.poll()
            self._poller.register(conn.fileno(), select.POLLIN)

    def _readable(self, timeout: float = 0.0) -> bool:
        """Is a control message (or the pipe's end) waiting, within ``timeout`` seconds?"""
        if self._poller is None:
            return self.conn.poll(timeout)
        return bool(self._poller.poll(math.ceil(timeout * 1000) if timeout > 0 else 0))

    def send(self, kind: str, **fields: Any) -> None:
        self.conn.send((kind, fields))
        self.last_sent = time.monotonic()

    def event(self, job: Job, type_: str, **fields: Any) -> None:
        self.send(
            "event",
            type=type_,
            session_id=job.session_id,
            utterance_id=job.utterance_id,
            request_id=job.request_id,
            pid=os.getpid(),
            **fields,
        )

    def warm(self) -> None:
        """Compile/load every kernel before reporting ready: the first chunk pays no compilation."""
        warm(((self.backend.native_rate, self.spec.output_sample_rate),), self.spec.resample_quality)
        ring_slow.warm(np.dtype("int16"))

    def ring_for(self, handle: RingHandle) -> FrameRing:
        arena = self.arenas.get(handle.name)
        if arena is None:
            arena = self.arenas[handle.name] = RingArena.attach(handle.name)
        return arena.ring(handle.ring_index, handle.generation)

    def start_job(self, job: Job) -> None:
        if job.session_id in self.jobs:  # the pool serialises a session's utterances; be safe anyway
            self.cancel(job.session_id, quiet=True)
        try:
            ring = self.ring_for(job.ring)
        except RingAudioError as exc:
            self.event(job, "failed", code="ring_unavailable", message=str(exc))
            return
        try:
            active = self.jobs[job.session_id] = ActiveJob(job, ring, self.backend, self.spec)
            self.due.add(active, active.retry_at)
        except RingAudioError as exc:  # a level or an encoding this worker cannot make (no libopus, ...)
            self.event(job, "failed", code=getattr(exc, "code", "synthesis_failed"), message=str(exc))
            return
        self.event(job, "started")

    def cancel(self, session_id: str, quiet: bool = False) -> None:
        active = self.jobs.pop(session_id, None)
        if active is not None:
            self.due.discard(active)
            self.collections.ended_one()
        if active is None:
            if not quiet:  # it finished (or failed) just before the cancel came: answer all the same
                self.send(
                    "event",
                    type="cancelled",
                    session_id=session_id,
                    utterance_id=None,
                    request_id=None,
                    pid=os.getpid(),
                    last_sequence=None,
                    frames=0,
                )
            return
        active.close()
        active.ring.close()
        if not quiet:
            self.event(active.job, "cancelled", last_sequence=active.last_seq, frames=active.frames)

    def finish(self, active: ActiveJob) -> None:
        self.jobs.pop(active.job.session_id, None)
        self.collections.ended_one()
        self.due.discard(active)
        active.ring.close()
        audio = active.audio_seconds()
        rtf = active.synthesis_s / audio if audio else 0.0
        fields = {
            "model_id": self.backend.model_id,
            "rtf": round(rtf, 4),
            "synthesis_duration_ms": round(active.synthesis_s * 1000, 2),
            "frames": active.frames,
            "duration_ms": round(audio * 1000, 1),
        }
        logs.event(
            log,
            logging.INFO,
            "utterance synthesized",
            active.job.session_id,
            utterance_id=active.job.utterance_id,
            **fields,
        )
        self.event(active.job, "finished", first_sequence=active.first_seq, last_sequence=active.last_seq, **fields)

    def fail(self, active: ActiveJob, code: str, exc: BaseException) -> None:
        self.jobs.pop(active.job.session_id, None)
        self.collections.ended_one()
        self.due.discard(active)
        active.close()
        active.ring.close()
        if code == "ring_closed":  # the session closed (a client hung up mid-utterance): nothing is wrong
            logs.event(log, logging.INFO, "utterance abandoned", active.job.session_id, reason=str(exc))
        else:
            logs.event(log, logging.ERROR, "utterance failed", active.job.session_id, code=code, error=str(exc))
        self.event(active.job, "failed", code=code, message=str(exc), last_sequence=active.last_seq)

    def handle(self, message: tuple[str, Any]) -> bool:
        kind, payload = message
        if kind == "job":
            self.start_job(payload)
        elif kind == "cancel":
            self.cancel(payload)
        elif kind == "level":
            session_id, level = payload
            active = self.jobs.get(session_id)
            if active is not None:
                try:
                    active.set_level(tuple(level))
                except ConfigError as exc:  # not a level this worker can make: the job goes on as it is
                    logs.event(log, logging.ERROR, "level refused", session_id, error=str(exc))
        elif kind == "stop":
            return False
        return True

    def run(self) -> None:
        self.warm()
        self.collections.settle()  # start-up's objects (numba's, the backend's) frozen; full collections on our clock
        self.send("ready", pid=os.getpid(), model_id=self.backend.model_id, native_rate=self.backend.native_rate)
        while True:
            now = time.monotonic()
            self.collections.maybe(now, len(self.jobs))
            if now - self.last_sent >= HEARTBEAT_S:
                self.send("heartbeat")
            timeout = self._idle_timeout(now)
            if self._readable(timeout):
                if not self.handle(self.conn.recv()):
                    break
                continue  # drain control messages first: a cancel must not wait for a step
            now = time.monotonic()
            # the jobs due now, from the heap (the others are paced or held: not looked at)
            # ... and those due within WAKE_SLACK: one wake-up serves them all instead of one each.
            # Every job's times (its pacing clock, retry_at) are taken on this shifted clock, so the
            # shift cancels out in its pacing: none writes further ahead of its reader than before.
            now += WAKE_SLACK
            due = self.due.pop_due(now)
            # A job just started (nothing written) goes first; then, unpaced, the emptiest rings
            # (jobs topping up rings that still hold hundreds of ms wait); paced, the heap's order
            # (the earliest due: a job behind its clock first), reading no ring. A job that arrives
            # meanwhile is picked up after at most a few steps.
            if len(due) > 1:
                due.sort(key=self._urgency)
            for n, active in enumerate(due):
                self.step(active, now)
                if self.jobs.get(active.job.session_id) is active:  # not finished, failed or cancelled
                    self.due.add(active, active.retry_at)
                if n % 8 == 7 and self._readable():
                    for rest in due[n + 1 :]:  # not stepped: still due, after the control messages
                        self.due.add(rest, now)
                    break

    def _idle_timeout(self, now: float) -> float:
        """How long the loop may sleep on its pipe: until the next heartbeat with no jobs, 0 if one
        may run now."""
        until = self.last_sent + HEARTBEAT_S
        soonest = self.due.next_due()
        if soonest is not None:
            until = min(until, soonest)
        return max(0.0, until - now)

    def step(self, active: ActiveJob, now: float) -> None:
        was_first = active.first_seq < 0
        try:
            state = active.step(now)
        except BackendError as exc:
            self.fail(active, "backend_error", exc)
            return
        except RingClosed as exc:
            self.fail(active, "ring_closed", exc)
            return
        except Exception as exc:  # an engine bug must not take the worker down
            log.exception("job failed", extra={"session_id": active.job.session_id})
            self.fail(active, "internal_error", exc)
            return
        if was_first and active.first_seq >= 0:  # for the pool's callers that time synthesis (labels say first)
            self.event(
                active.job,
                "first_frame",
                sequence=active.first_seq,
                latency_ms=round((time.monotonic() - active.started) * 1000, 2),
            )
        if state == "done":
            self.finish(active)
        elif state == "blocked":
            active.hold(now)
        elif state == "running":
            active.retry_at = 0.0

    def close(self) -> None:
        for session_id in list(self.jobs):
            self.cancel(session_id, quiet=True)
        for arena in self.arenas.values():
            arena.close()
        self.backend.close()


def worker_main(conn: Connection, spec: WorkerSpec) -> None:
    """Entry point of a worker process (started by :class:`~ringaudio.tts.pool.WorkerPool`)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C goes to the server, which stops us
    logs.setup(spec.log_level, forward=lambda record: conn.send(("log", record)))
    try:
        worker = Worker(conn, spec)
    except RingAudioError as exc:
        conn.send(("fatal", {"message": str(exc)}))
        return
    try:
        worker.run()
    except (EOFError, BrokenPipeError, KeyboardInterrupt):
        pass  # the pool is gone: nobody to serve
    finally:
        worker.close()
        conn.close()
