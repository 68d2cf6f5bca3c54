"""A scheduler pass's batched frames (``send._write_out``, ``_write_own``), on stand-in transports."""

from __future__ import annotations

from typing import Any

from ringaudio.server.send import Sending


class Transport:
    def __init__(self, fail: bool = False) -> None:
        self.got: list[bytes] = []
        self.fail = fail

    def write(self, message: bytes) -> None:
        if self.fail:
            raise RuntimeError("the handler is closed")
        self.got.append(message)


class Pass:
    """What the two methods use of the server: the pass's frames and whose pump is running."""

    def __init__(self, out: list[tuple[Any, bytes]], owner: object = None, start: int = 0) -> None:
        self._out = out
        self._out_owner = owner
        self._out_from = start


def test_a_pass_writes_every_sessions_frames_in_order_even_past_a_closed_transport() -> None:
    a, closed, b = Transport(), Transport(fail=True), Transport()
    batch = Pass([(a, b"a1"), (closed, b"x"), (b, b"b1"), (a, b"a2")], owner=object())
    Sending._write_out(batch)  # type: ignore[arg-type]
    assert a.got == [b"a1", b"a2"] and b.got == [b"b1"]
    assert batch._out == [] and batch._out_owner is None


def test_the_pumped_sessions_frames_go_first_when_something_else_is_sent_to_it() -> None:
    earlier, mine = Transport(), Transport()
    session = object()
    batch = Pass([(earlier, b"e1"), (mine, b"m1"), (mine, b"m2")], owner=session, start=1)
    Sending._write_own(batch, session)  # type: ignore[arg-type]
    assert mine.got == [b"m1", b"m2"] and earlier.got == []  # the other session's wait for the pass's end
    assert batch._out == [(earlier, b"e1")]
    Sending._write_own(batch, object())  # type: ignore[arg-type]  # not the pumped session: nothing moves
    assert batch._out == [(earlier, b"e1")]


def test_a_failing_write_of_the_pumped_session_is_not_repeated_and_does_not_raise() -> None:
    closed, mine = Transport(fail=True), Transport()
    session = object()
    batch = Pass([(closed, b"c1"), (mine, b"m1")], owner=session, start=0)
    Sending._write_own(batch, session)  # type: ignore[arg-type]
    assert mine.got == [b"m1"] and batch._out == []
    Sending._write_own(batch, session)  # type: ignore[arg-type]  # again (an error event follows): nothing twice
    assert mine.got == [b"m1"]
