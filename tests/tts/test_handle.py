"""A worker's outbox and writer thread, without a process: order kept, one cancel per session, the
writer ends when shut."""

from __future__ import annotations

import threading
import time
from typing import Any

from ringaudio.tts.handle import STALE_AFTER_S, WorkerHandle


class Pipe:
    """Records what the writer thread sends; can hold it back to let the outbox fill."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, Any]] = []
        self.go = threading.Event()

    def send(self, message: tuple[str, Any]) -> None:
        self.go.wait(5)
        self.sent.append(message)


def test_the_outbox_keeps_order_sends_one_cancel_per_session_and_ends_when_shut() -> None:
    pipe = Pipe()
    handle = WorkerHandle(proc=None, conn=pipe, spawned=0.0)  # type: ignore[arg-type]
    writer = threading.Thread(target=handle.write_loop, daemon=True)
    writer.start()
    handle.post("job", "a1")
    time.sleep(0.05)  # the writer took a1 and waits in send: the rest queues behind it
    handle.post("cancel", "a")
    handle.post("cancel", "a")  # the one not yet sent covers it
    handle.post("job", "b1")
    handle.post("cancel", "b")
    handle.shut()
    handle.post("job", "late")  # after shut: dropped
    pipe.go.set()
    writer.join(5)
    assert not writer.is_alive()
    assert pipe.sent == [("job", "a1"), ("cancel", "a"), ("job", "b1"), ("cancel", "b")]
    assert not handle.outbox and not handle.cancels


def test_a_cancel_sent_no_longer_covers_the_next_one() -> None:
    pipe = Pipe()
    pipe.go.set()
    handle = WorkerHandle(proc=None, conn=pipe, spawned=0.0)  # type: ignore[arg-type]
    writer = threading.Thread(target=handle.write_loop, daemon=True)
    writer.start()
    handle.post("cancel", "a")
    deadline = time.monotonic() + 5
    while not pipe.sent:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    handle.post("cancel", "a")
    handle.shut()
    writer.join(5)
    assert pipe.sent == [("cancel", "a"), ("cancel", "a")]


def test_fresh_means_heard_from_within_three_heartbeats() -> None:
    handle = WorkerHandle(proc=None, conn=Pipe(), spawned=0.0, last_seen=10.0)  # type: ignore[arg-type]
    assert handle.fresh(10.0 + STALE_AFTER_S) and not handle.fresh(10.0 + STALE_AFTER_S + 0.01)
    assert not handle.usable()  # not ready yet
