"""What the server takes back from a lane (``Laning._eject``, ``_run_lanes``, ``_send_from_lane``),
on real lanes, rings and sockets, with the server and the session reduced to the fields those use."""

from __future__ import annotations

import socket
from collections import deque
from types import SimpleNamespace
from typing import Any

import pytest
from websockets.protocol import State

from ringaudio import FrameRing
from ringaudio.server import backlog
from ringaudio.server.lanes import Laning
from ringaudio.server.metrics import Metrics
from ringaudio.server.pacing import Pacer

from ..kernels.test_lanes import PERIOD, Lanes, admit, fill, received

pytestmark = pytest.mark.skipif(Lanes is None, reason="no C kernels")
FRAME = 1920 + 30  # (the session's message size: only the arithmetic of consumed frames uses it)


class Transport:
    def __init__(self) -> None:
        self.got: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.got.append(bytes(data))


class Protocol:
    def __init__(self, writes: list[bytes], state: State = State.OPEN) -> None:
        self.writes, self.state = writes, state

    def data_to_send(self) -> list[bytes]:
        writes, self.writes = self.writes, []
        return writes


class Server(Laning):
    """A Laning with only what lanes use (its __init__, the whole server's, is not run)."""

    def __init__(self) -> None:  # (ServerBase's is not called)
        self.lanes = Lanes()  # type: ignore[misc]
        self._lane_of, self._lane_free = [None], []
        self.schedule: Any = SimpleNamespace(add=lambda s, due: None)
        self.metrics = Metrics()
        self.poll_interval = 0.005
        self._lane_next = 0.0

    def run(self, now: float) -> Any:
        i, j = self.metrics.interval, self.metrics.jitter
        return self.lanes.run(now, 0, 0.0, 0.005, i.bounds, i.counts, j.bounds, j.counts)


def session_in(server: Server, slot: int = 0, **fields: Any) -> Any:
    s = SimpleNamespace(
        lane=slot, source=None, frames_sent=100, frame_bytes=FRAME, consumed=deque(maxlen=48), backlog_at=0.0,
        kernel_backlog=0, outq=0, window=0, max_window=0, pacer=Pacer(PERIOD, 3, 0.0), last_send=0.0,
        last_interval=0.0, sent_at={}, ws=SimpleNamespace(transport=Transport()), **fields,
    )  # fmt: skip
    server._lane_of[slot] = s
    return s


@pytest.fixture
def srv_pair() -> Any:
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    yield Server(), a, b
    a.close()
    b.close()


def test_the_lanes_readings_become_the_sessions_consumed_samples_and_backlog(srv_pair: Any) -> None:
    server, a, _b = srv_pair
    with FrameRing.create(capacity=64) as ring:
        fill(ring, 20)
        admit(server.lanes, 0, ring, a.fileno(), 0, tokens=1.0, visit_at=0.0, refresh=0.05)
        s = session_in(server)
        queues = []
        for i in range(8):
            queues.append(backlog.probe(a).outq)  # what the lane's reading in this pass will find
            server.run(i * PERIOD)
        server._eject(s, reschedule=False)
    # readings at 0, 0.06, 0.12 (each once refresh has passed), each before that pass's frame
    assert [t for t, _ in s.consumed] == [pytest.approx(t) for t in (0.0, 0.06, 0.12)]
    assert [c for _, c in s.consumed] == [pytest.approx(100 + n - queues[n] / FRAME) for n in (0, 3, 6)]
    assert (s.backlog_at, s.kernel_backlog, s.outq) == (pytest.approx(0.12), queues[6], queues[6])
    assert s.window is None  # (a unix socket has no TCP window)
    assert s.frames_sent == 108 and s.lane == -1 and server._lane_free == [0]


def test_a_lane_over_its_send_limit_is_handed_back_for_the_pump_to_read_again(srv_pair: Any) -> None:
    server, a, _b = srv_pair
    with FrameRing.create(capacity=64) as ring:
        fill(ring, 20)
        a.send(b"x" * 5000)  # not read: over the limit below
        admit(server.lanes, 0, ring, a.fileno(), 0, tokens=1.0, visit_at=0.0, send_limit=4000)
        s = session_in(server)
        assert server._run_lanes(0.0, 0, 0.0) == [s]  # for the pump, now
    assert s.lane == -1 and s.kernel_backlog > 4000
    assert s.backlog_at == 0.0  # the pump reads it again at once, and holds the session back


def test_the_librarys_writes_go_out_from_the_lane_and_a_rest_is_queued_after_what_went(srv_pair: Any) -> None:
    server, a, b = srv_pair
    with FrameRing.create(capacity=64) as ring:
        fill(ring, 20)
        admit(server.lanes, 0, ring, a.fileno(), 0, tokens=1.0)
        s = session_in(server)
        server.run(0.0)
        server._send_from_lane(s, Protocol([b"\x89\x00", b"\x8a\x00"]))  # a ping and a pong
        assert s.lane == 0 and s.ws.transport.got == []  # still in its lane, the transport untouched
        assert received(b)[-4:] == b"\x89\x00\x8a\x00"
        a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        big = bytes(range(256)) * 2048
        server._send_from_lane(s, Protocol([big]))  # more than the socket takes
        assert s.lane == -1  # out of its lane, the rest queued on the transport: nothing else came between
        assert received(b) + b"".join(s.ws.transport.got) == big


def test_a_closing_connections_writes_take_the_session_out_of_its_lane_first(srv_pair: Any) -> None:
    server, a, b = srv_pair
    with FrameRing.create(capacity=64) as ring:
        fill(ring, 20)
        for writes, state in (([b"\x88\x02\x03\xe8"], State.CLOSING), ([b"\x8a\x00", b""], State.OPEN)):
            admit(server.lanes, 0, ring, a.fileno(), 0, tokens=1.0)
            s = session_in(server)
            protocol = Protocol(list(writes), state)
            server._send_from_lane(s, protocol)  # a close frame; a pong and a half-close
            assert s.lane == -1 and protocol.writes == writes  # left to the library, after the lane's last frame
            assert received(b) == b""
