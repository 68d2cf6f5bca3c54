"""``Lanes``: many sessions' steady state served in one kernel call per pass, on real rings and sockets.

Each lane paces as the server's :class:`Pacer` does (a burst of the bucket, then one frame per
period, a frame due within ``early`` counting as due), sends what send_frames would, and stops for
the server at whatever needs a look."""

from __future__ import annotations

import os
import socket
import time
from typing import Any

import numpy as np
import pytest

from ringaudio import FrameRing, wire
from ringaudio.kernels import backend
from ringaudio.ring import reader
from ringaudio.server import backlog
from ringaudio.server.metrics import _JITTER, _MS, BatchHistogram
from ringaudio.server.pacing import Pacer

from .test_send_frames import pcm, received

Lanes = getattr(backend.hot, "Lanes", None)
pytestmark = pytest.mark.skipif(Lanes is None or not reader.RingReading.SENDS, reason="no C kernels")

UID, FMT = (1 << 33) + 5, (20000 << 32) | 48000
NOW_US = 987_654_321
PERIOD = 0.02


def message(seq: int, uid: int = UID) -> bytes:
    return wire.audio_message(0, uid & 0xFFFFFFFF, seq, NOW_US, pcm(seq).tobytes())


def fill(ring: FrameRing, frames: int, uid: int = UID) -> None:
    for _ in range(frames):
        seq = ring.write_seq
        ring.write(pcm(seq), utterance=uid, flags=0, fmt=FMT, nbytes=1920)


def admit(lanes: object, slot: int, ring: FrameRing, fd: int, seq: int, *, tokens: float = 3.0, **kw: float) -> None:
    ctrl, slots, gen = ring.lane_buffers()  # type: ignore[misc]
    args = {
        "limit": 1 << 62, "max_window": 0, "send_limit": 1 << 40, "due": 0.0, "visit_at": 1e9,
        "last_send": 0.0, "last_interval": 0.0, "refresh": 0.25,
    } | kw  # fmt: skip
    lanes.admit(  # type: ignore[attr-defined]
        slot, ctrl, slots, fd, seq, gen, 0, UID, FMT, 1920, int(args["limit"]), int(args["max_window"]),
        int(args["send_limit"]), tokens, 0.0, PERIOD, 3.0, args["due"], args["visit_at"], args["last_send"],
        args["last_interval"], args["refresh"],
    )  # fmt: skip


INTERVALS, JITTERS = BatchHistogram("i", "", _MS), BatchHistogram("j", "", _JITTER)


def run(lanes: object, now: float, early: float = 0.0) -> tuple[int, float, float, float, list[Any]]:
    """One pass; the histograms hold only what it observed."""
    for h in (INTERVALS, JITTERS):
        h.counts[:] = 0
    i, j = INTERVALS, JITTERS
    return lanes.run(now, NOW_US, early, 0.005, i.bounds, i.counts, j.bounds, j.counts)  # type: ignore[attr-defined,no-any-return]


JITTERS_ARGS = (JITTERS.bounds, JITTERS.counts)


def observed(h: BatchHistogram, value: float) -> bool:
    """Exactly one observation, in the bucket numpy's searchsorted (as BatchHistogram.fold) puts value."""
    want = np.zeros_like(h.counts)
    want[np.searchsorted(h.bounds, value, side="left")] = 1
    return bool((h.counts == want).all())


def test_a_lane_paces_as_the_pacer_does_and_sends_exactly_the_frames(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    lanes = Lanes()  # type: ignore[misc]
    pacer = Pacer(PERIOD, 3, 0.0)
    with FrameRing.create(capacity=64) as ring:
        fill(ring, 40)
        admit(lanes, 0, ring, a.fileno(), 0)
        sent = 0
        for now in (0.0, 0.001, 0.021, 0.039, 0.0405, 0.1, 0.2001):
            frames, *_ = run(lanes, now, early=0.001)
            want = pacer.allowance(now, 0.001)
            pacer.spend(want)
            assert frames == want, now
            sent += frames
        assert received(b) == b"".join(message(q) for q in range(sent))
        assert ring.write_seq - ring.fill == sent  # the gating reader moved past them
        taken, seq, tokens, _last, _due, last_send, _li, times, *_probe, samples = lanes.eject(0)
        assert (taken, seq) == (sent, sent) and tokens == pytest.approx(pacer.tokens)
        assert last_send == 0.2001 and len(times) == 8 * sent
        assert samples == b""  # no reading of the backlog was due
        assert lanes.count == 0


def test_intervals_and_jitters_are_what_the_pump_observes(pair: tuple[socket.socket, socket.socket]) -> None:
    a, _b = pair
    lanes = Lanes()  # type: ignore[misc]
    with FrameRing.create(capacity=64) as ring:
        fill(ring, 10)
        admit(lanes, 0, ring, a.fileno(), 0, tokens=1.0, last_send=9.98, last_interval=20.0)
        _, isum, jsum, _, _ = run(lanes, 10.0)
        assert (isum, jsum) == (pytest.approx(20.0), pytest.approx(0.0))
        assert observed(INTERVALS, isum) and observed(JITTERS, jsum)  # (the one observation each, binned as fold bins)
        _, isum, jsum, _, _ = run(lanes, 10.025)
        assert (isum, jsum) == (pytest.approx(25.0), pytest.approx(5.0))
        assert observed(INTERVALS, isum) and observed(JITTERS, jsum)
        _, isum, jsum, _, _ = run(lanes, 10.07)
        assert (isum, jsum) == (pytest.approx(45.0), pytest.approx(20.0)) and observed(INTERVALS, isum)
        lanes.eject(0)
        # values exactly on a bucket's bound count in it (le: at most), as numpy's searchsorted puts them
        admit(lanes, 0, ring, a.fileno(), 3, tokens=1.0, last_send=0.5, last_interval=480.0)
        _, isum, jsum, _, _ = run(lanes, 1.0)
        assert (isum, jsum) == (500.0, 20.0) and 500.0 in INTERVALS.bounds and 20.0 in JITTERS.bounds
        assert observed(INTERVALS, 500.0) and observed(JITTERS, 20.0)
        lanes.eject(0)


def test_a_lane_stops_at_a_new_utterance_at_its_limit_and_at_a_backlog_over_its_send_limit(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    a, b = pair
    lanes = Lanes()  # type: ignore[misc]
    with FrameRing.create(capacity=64) as ring:
        fill(ring, 2)
        fill(ring, 2, uid=UID + 1)
        admit(lanes, 0, ring, a.fileno(), 0, tokens=3.0)
        admit(lanes, 1, ring, a.fileno(), 0, tokens=3.0, limit=1)
        a.send(b"y" * 100)  # what b has not read: a's backlog
        admit(lanes, 2, ring, a.fileno(), 0, tokens=3.0, visit_at=0.0, send_limit=99)
        frames, _, _, next_due, stopped = run(lanes, 0.0)
        assert frames == 2 + 1 and next_due == float("inf")
        assert stopped == [(0, reader.LONG_WAY, None), (1, reader.AT_LIMIT, None), (2, backend.hot.VISIT, None)]
        assert received(b) == b"y" * 100 + message(0) + message(1) + message(0)
        assert run(lanes, 1.0)[0] == 0  # stopped lanes wait for the server
        assert [lanes.eject(i)[:2] for i in range(3)] == [(2, 2), (1, 1), (0, 0)]


def samples_of(eject: tuple[object, ...]) -> list[tuple[float, float, float]]:
    flat = memoryview(eject[-1]).cast("d").tolist()  # type: ignore[arg-type]
    return [tuple(flat[i : i + 3]) for i in range(0, len(flat), 3)]  # type: ignore[misc]


def test_a_lane_reads_its_clients_backlog_every_refresh_as_the_pump_would_and_goes_on_within_the_limit(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    a, _b = pair  # nobody reads _b: everything sent is backlog
    lanes = Lanes()  # type: ignore[misc]
    with FrameRing.create(capacity=64) as ring:
        fill(ring, 40)
        admit(lanes, 0, ring, a.fileno(), 0, tokens=1.0, visit_at=0.01, refresh=0.25)
        seen: list[tuple[float, int, int]] = []  # (time, frames sent before it, backlog.probe's send queue)
        sent, due = 0, 0.01
        for i in range(31):
            now = i * PERIOD
            before = backlog.probe(a)
            frames, _, _, _, stopped = run(lanes, now)
            assert stopped == []  # within its send limit: the lane goes on
            if now >= due:  # as the pump: once refresh has passed since the last reading
                seen.append((now, sent, before.outq))
                due = now + 0.25
            sent += frames
        got = lanes.eject(0)
        assert [t for t, *_ in samples_of(got)] == [t for t, *_ in seen] == [0.02, 0.28, 0.54]
        assert [(int(n), int(q)) for _, n, q in samples_of(got)] == [(n, q) for _, n, q in seen]
        assert seen[-1][2] > seen[0][2] > 0  # (a unix socket's send queue: the memory of what b has not read)
        assert got[9:11] == (seen[-1][2], -1)  # the last reading's send queue; no TCP window on a unix socket


def test_a_lane_hands_back_its_last_readings_oldest_first() -> None:
    a, b = socket.socketpair()
    a.setblocking(False)
    lanes = Lanes()  # type: ignore[misc]
    try:
        with FrameRing.create(capacity=64) as ring:
            fill(ring, 40)
            admit(lanes, 0, ring, a.fileno(), 0, tokens=1.0, visit_at=0.0, refresh=0.015)
            for i in range(40):  # a reading in each pass: more than the lane keeps
                run(lanes, i * PERIOD)
            kept = samples_of(lanes.eject(0))
        assert [t for t, *_ in kept] == [pytest.approx(i * PERIOD) for i in range(24, 40)]
        assert [n for _, n, _ in kept] == list(range(24, 40))  # frames taken before each: one per pass
    finally:
        a.close()
        b.close()


def tcp_pair(rcvbuf: int) -> tuple[socket.socket, socket.socket]:
    with socket.create_server(("127.0.0.1", 0)) as server:
        client = socket.socket()
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        client.connect(server.getsockname())
        conn, _ = server.accept()
    conn.setblocking(False)
    return conn, client


def test_over_tcp_the_backlog_counts_what_the_clients_kernel_holds_unread_against_the_largest_window() -> None:
    a, b = tcp_pair(16_384)  # b reads nothing
    lanes = Lanes()  # type: ignore[misc]

    def settled() -> backlog.Probe:
        time.sleep(0.05)  # (the client's kernel acknowledges what came and advertises its window)
        return backlog.probe(a)

    try:
        with FrameRing.create(capacity=64) as ring:
            fill(ring, 40)
            first = backlog.probe(a)
            if first.window is None:
                pytest.skip("this kernel's TCP_INFO has no tcpi_snd_wnd (Linux < 5.4)")
            admit(lanes, 0, ring, a.fileno(), 0, tokens=3.0, visit_at=0.0, refresh=0.1, max_window=first.window)
            run(lanes, 0.0)  # a reading, then 3 frames (the prebuffer's)
            mid = settled()
            run(lanes, 0.1)  # a reading, then 3 more (the bucket, full again)
            sent = a.send(b"z" * 40_000)  # more than the client's buffer: its window closes
            last = settled()
            baseline = max(first.window, mid.window or 0)  # the largest window the lane has read
            want = [0, backlog.unconsumed(0, mid, first.window), backlog.unconsumed(0, last, baseline)]
            stopped = run(lanes, 0.2)[4]
            got = lanes.eject(0)
            assert stopped == []  # (its send limit is far off)
            assert [q for _, _, q in samples_of(got)] == want
            assert (
                want[2] >= sent > 16_384
            )  # (of the bytes sent and not read: the window measures at best to its baseline)
            assert [n for _, n, _ in samples_of(got)] == [0, 3, 6]
            assert got[8:11] == (baseline, last.outq, last.window)  # the baseline, the last reading
    finally:
        a.close()
        b.close()


def test_a_frame_not_written_yet_is_looked_for_again_after_poll(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    lanes = Lanes()  # type: ignore[misc]
    with FrameRing.create(capacity=64) as ring:
        fill(ring, 1)
        admit(lanes, 0, ring, a.fileno(), 0, tokens=3.0)
        frames, _, _, next_due, stopped = run(lanes, 1.0)
        assert (frames, stopped, next_due) == (1, [], 1.005)
        assert run(lanes, 1.001)[0] == 0  # not due yet
        fill(ring, 1)
        assert run(lanes, 1.005)[0] == 1
        assert received(b) == message(0) + message(1)
        lanes.eject(0)


def test_a_full_socket_gives_back_the_rest_and_nothing_is_lost(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    lanes = Lanes()  # type: ignore[misc]
    with FrameRing.create(capacity=64) as ring:
        fill(ring, 40)
        admit(lanes, 0, ring, a.fileno(), 0, tokens=30.0)
        lanes_stopped: list[tuple[int, int, object]] = []
        got = b""
        frames = 0
        for i in range(20):
            f, _, _, _, stopped = run(lanes, i * PERIOD)
            frames += f  # (nobody reads b: the socket fills)
            if stopped:
                lanes_stopped = stopped
                break
        assert lanes_stopped and lanes_stopped[0][1] == reader.BLOCKED
        rest = lanes_stopped[0][2]
        assert isinstance(rest, bytes) and rest
        got += received(b)
        assert got + rest == b"".join(message(q) for q in range(frames))
        lanes.eject(0)


def test_a_message_of_the_servers_own_goes_out_between_the_lanes_frames(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    a, b = pair
    lanes = Lanes()  # type: ignore[misc]
    with FrameRing.create(capacity=64) as ring:
        fill(ring, 8)
        admit(lanes, 0, ring, a.fileno(), 0, tokens=2.0)
        run(lanes, 0.0)
        assert lanes.write(0, b"\x89\x00") == 2  # (a ping) all taken
        run(lanes, 0.04)
        assert lanes.write(0, memoryview(b"\x8a\x00")) == 2
        assert received(b) == message(0) + message(1) + b"\x89\x00" + message(2) + message(3) + b"\x8a\x00"
        a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        big = bytes(range(256)) * 4096
        sent = lanes.write(0, big)  # more than the socket takes: the rest is the caller's to queue
        assert 0 < sent < len(big)
        assert received(b) == big[:sent]
        with pytest.raises(KeyError):
            lanes.write(1, b"x")  # no such lane
        lanes.eject(0)
    with FrameRing.create(capacity=64) as ring:
        fill(ring, 1)
        fill(ring, 1, uid=UID + 1)
        admit(lanes, 0, ring, a.fileno(), 0, tokens=2.0)
        assert run(lanes, 0.0)[4] == [(0, reader.LONG_WAY, None)]
        with pytest.raises(KeyError):
            lanes.write(0, b"x")  # stopped: the server takes it back before anything else goes there
        lanes.eject(0)


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_a_lane_keeps_its_own_descriptor_so_a_reused_number_never_gets_frames() -> None:
    lanes = Lanes()  # type: ignore[misc]
    a, b = socket.socketpair()
    b.setblocking(False)
    with FrameRing.create(capacity=64) as ring:
        fill(ring, 4)
        before = open_fds()
        admit(lanes, 0, ring, a.fileno(), 0, tokens=1.0)
        assert open_fds() == before + 1  # its own descriptor of the socket
        number = a.fileno()
        a.close()  # the server's own descriptor goes ...
        c, d = socket.socketpair()  # ... and a new connection gets its number
        d.setblocking(False)
        try:
            assert c.fileno() == number
            assert run(lanes, 0.0)[0] == 1
            assert received(b) == message(0)  # the frame went to the lane's socket
            assert received(d) == b""  # not to the new one
        finally:
            lanes.eject(0)
        assert open_fds() == before - 1 + 2  # a went, c and d came, and the lane's own is closed
        for x in (b, c, d):
            x.close()


def test_refused_arguments_are_typed_errors_and_leave_nothing_held(pair: tuple[socket.socket, socket.socket]) -> None:
    a, _b = pair
    lanes = Lanes()  # type: ignore[misc]
    with FrameRing.create(capacity=64) as ring:
        with pytest.raises(OSError):
            admit(lanes, 0, ring, 1 << 30, 0)  # no such descriptor
        with pytest.raises(ValueError):
            admit(lanes, -1, ring, a.fileno(), 0)
        admit(lanes, 0, ring, a.fileno(), 0)
        with pytest.raises(ValueError):
            admit(lanes, 0, ring, a.fileno(), 0)  # taken
        with pytest.raises(KeyError):
            lanes.eject(5)
        with pytest.raises(TypeError):
            lanes.run(0.0, 0, 0.0, 0.005, np.zeros(4, np.int64), np.zeros(5, np.int64), *JITTERS_ARGS)
        with pytest.raises(TypeError):
            lanes.run(0.0, 0, 0.0, 0.005, np.zeros(4), np.zeros(4, np.int64), *JITTERS_ARGS)  # one count short
        assert lanes.count == 1
        lanes.eject(0)
        del lanes  # nothing held: the ring closes (no exported buffer)


def test_a_lane_whose_ring_went_back_stops_as_closed(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    lanes = Lanes()  # type: ignore[misc]
    with FrameRing.create(capacity=64) as ring:
        fill(ring, 8)
        admit(lanes, 0, ring, a.fileno(), 0, tokens=1.0)
        assert run(lanes, 0.0)[0] == 1
        ctrl = ring.lane_buffers()[0]  # type: ignore[index]
        ctrl[backend.hot.C_GENERATION] += 1  # the ring was released and leased to another stream
        frames, _, _, _, stopped = run(lanes, 1.0)
        assert frames == 0 and stopped == [(0, backend.hot.CLOSED, None)]
        assert received(b) == message(0)  # nothing of the old stream after that
        ctrl[backend.hot.C_GENERATION] -= 1
        lanes.eject(0)
        del ctrl  # (a view of the segment must not outlive it)
