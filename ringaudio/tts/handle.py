"""One worker process as the pool holds it: the process, its pipe, and the outbox its writer thread empties.

Nothing that calls the pool ever writes to a pipe: a message for a worker goes into that worker's
outbox and a writer thread sends it, holding no lock while it does. The outbox is bounded by
construction: at most one job in flight per session (the pool dispatches no more), and a cancel not
yet sent is not queued twice. (A caller that wrote itself, holding the pool's lock, could freeze the
whole server: the worker blocked writing an event, the pool's reader waiting for the lock, the caller
waiting for the worker.)
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.context import SpawnContext
from typing import Any

from .spec import HEARTBEAT_S, WorkerSpec, worker_entry

STALE_AFTER_S = 3 * HEARTBEAT_S  # a worker not heard from for three heartbeats is stopped, or stuck


@dataclass(eq=False)
class WorkerHandle:
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

    @classmethod
    def spawn(cls, ctx: SpawnContext, spec: WorkerSpec) -> WorkerHandle:
        """Start a worker process and its writer thread (the spawn writes the child's start-up data
        to a pipe: never call it holding a lock others wait for)."""
        parent, child = ctx.Pipe(duplex=True)
        proc = ctx.Process(target=worker_entry, args=(child, spec), name="ringaudio-worker", daemon=True)
        proc.start()
        child.close()
        now = time.monotonic()
        handle = cls(proc, parent, spawned=now, last_seen=now)
        threading.Thread(target=handle.write_loop, name="ringaudio-pool-writer", daemon=True).start()
        return handle

    def usable(self) -> bool:
        """Ready for work: it has warmed its kernels, and it is alive."""
        return self.ready and not self.dead and self.proc.is_alive()

    def fresh(self, now: float) -> bool:
        """Has it been heard from within STALE_AFTER_S (a heartbeat, an event)?"""
        return now - self.last_seen <= STALE_AFTER_S

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
        """No more messages: the writer thread sends what is queued, then ends."""
        with self.cv:
            self.closed = True
            self.cv.notify()

    def kill(self) -> None:
        """End it now, without asking (a replacement that started while the pool was stopping)."""
        self.shut()
        self.proc.kill()
        self.proc.join(2)
        self.conn.close()
