"""``send_frames``: the server's steady state in one kernel call, on a real ring and a real socket."""

from __future__ import annotations

import socket

import numpy as np
import pytest

from ringaudio import FrameRing, wire
from ringaudio.ring import reader

pytestmark = pytest.mark.skipif(not reader.RingReading.SENDS, reason="the C kernels were not built")

UID, FMT = (1 << 33) + 5, (20000 << 32) | 48000
LIKE = (UID, FMT, 1920)
NOW_US = 123_456_789


def pcm(seq: int) -> np.ndarray:
    return ((np.arange(960) * 37 + seq * 101) % 20011).astype(np.int16)


def message(seq: int, uid: int = UID, flags: int = 0) -> bytes:
    return wire.audio_message(flags, uid & 0xFFFFFFFF, seq, NOW_US, pcm(seq).tobytes())


def gating(ring: FrameRing) -> int:
    """Where the slowest gating reader is: what it read so far."""
    return ring.write_seq - ring.fill


def received(sock: socket.socket) -> bytes:
    chunks = []
    while True:
        try:
            chunks.append(sock.recv(1 << 20))
        except BlockingIOError:
            return b"".join(chunks)


def test_frames_like_the_last_go_out_in_one_send_and_move_the_gating_reader(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    a, b = pair
    with FrameRing.create(capacity=16) as ring:
        for seq in range(5):
            ring.write(pcm(seq), utterance=UID, flags=0, fmt=FMT, nbytes=1920)
        assert ring.send_frames(1, NOW_US, 0, a.fileno(), *LIKE, 1 << 62, 3) == (3, 0, None)
        assert received(b) == b"".join(message(q) for q in (1, 2, 3))
        assert gating(ring) == 4
        # the budget is not reached: the frame after the last one written is not ready
        assert ring.send_frames(4, NOW_US, 0, a.fileno(), *LIKE, 1 << 62, 8) == (1, reader.NOT_READY, None)
        assert received(b) == message(4)
        assert gating(ring) == 5


@pytest.mark.parametrize(
    "label",
    [
        {"utterance": UID + 1, "flags": 0, "fmt": FMT, "nbytes": 1920},  # a new utterance
        {"utterance": UID, "flags": wire.FLAG_LAST, "fmt": FMT, "nbytes": 1920},  # its last frame
        {"utterance": UID, "flags": 0, "fmt": FMT + 1, "nbytes": 1920},  # another format
        {"utterance": UID, "flags": 0, "fmt": FMT, "nbytes": 960},  # a short frame
    ],
)
def test_a_frame_not_like_the_last_is_left_unread_for_the_long_way(
    label: dict[str, int], pair: tuple[socket.socket, socket.socket]
) -> None:
    a, b = pair
    with FrameRing.create(capacity=16) as ring:
        ring.write(pcm(0), utterance=UID, flags=0, fmt=FMT, nbytes=1920)
        ring.write(pcm(1), **label)
        assert ring.send_frames(0, NOW_US, 0, a.fileno(), *LIKE, 1 << 62, 4) == (1, reader.LONG_WAY, None)
        assert received(b) == message(0)
        assert gating(ring) == 1  # frame 1 is not read: the long way reads it
        got = ring.read_message(1, NOW_US)
        assert isinstance(got, tuple) and got[1:3] == (label["utterance"], label["flags"])


def test_nothing_at_or_past_the_limit_is_sent(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    with FrameRing.create(capacity=16) as ring:
        for seq in range(6):
            ring.write(pcm(seq), utterance=UID, flags=0, fmt=FMT, nbytes=1920)
        assert ring.send_frames(0, NOW_US, 0, a.fileno(), *LIKE, 2, 6) == (2, reader.AT_LIMIT, None)
        assert received(b) == message(0) + message(1)
        assert ring.send_frames(2, NOW_US, 0, a.fileno(), *LIKE, 2, 6) == (0, reader.AT_LIMIT, None)
        assert received(b) == b""


def test_what_the_socket_does_not_take_comes_back_and_nothing_is_lost(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    a, b = pair
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    with FrameRing.create(capacity=64) as ring:
        for seq in range(40):
            ring.write(pcm(seq), utterance=UID, flags=0, fmt=FMT, nbytes=1920)
        sent = b""
        n, code, rest = ring.send_frames(0, NOW_US, 0, a.fileno(), *LIKE, 1 << 62, 30)
        assert n == 30 and code == reader.BLOCKED and rest  # the socket took some, not all
        sent += received(b)
        # a full socket takes nothing more: the whole of what was read comes back
        while True:
            try:
                a.send(b"x" * 65536)
            except BlockingIOError:
                break
        received(b)  # (what filled it: thrown away)
        while True:  # fill it again, exactly, so that the next send gets EAGAIN at once
            try:
                a.send(b"y" * 1024)
            except BlockingIOError:
                break
        n2, code2, rest2 = ring.send_frames(30, NOW_US, 0, a.fileno(), *LIKE, 1 << 62, 2)
        whole = message(30) + message(31)
        assert (n2, code2) == (2, reader.BLOCKED) and rest2 and whole.endswith(rest2)
        taken = received(b)  # the y's, then whatever of the two frames the socket did take
        assert (
            taken.endswith(whole[: len(whole) - len(rest2)]) and taken.lstrip(b"y") == whole[: len(whole) - len(rest2)]
        )
        assert sent + rest == b"".join(message(q) for q in range(30))
        assert gating(ring) == 32


def test_a_lapped_listener_gets_an_overrun_and_sends_nothing(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    with FrameRing.create(capacity=4, overflow="drop_oldest") as ring:
        for seq in range(9):
            ring.write(pcm(seq), utterance=UID, flags=0, fmt=FMT, nbytes=1920)
        assert ring.send_frames(2, NOW_US, -1, a.fileno(), *LIKE, 1 << 62, 4) == (0, reader.OVERRUN, None)
        assert ring.send_frames(6, NOW_US, -1, a.fileno(), *LIKE, 1 << 62, 4) == (3, reader.NOT_READY, None)
        assert received(b) == b"".join(message(q) for q in (6, 7, 8))


def test_arguments_the_kernel_refuses_send_nothing_and_read_nothing(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    with FrameRing.create(capacity=4) as ring:
        ring.write(pcm(0), utterance=UID, flags=0, fmt=FMT, nbytes=1920)
        for args in [(-1, LIKE, 0), (a.fileno(), (UID, FMT, 1 << 20), 0), (a.fileno(), LIKE, 9)]:
            fd, like, slot = args
            assert ring.send_frames(0, NOW_US, slot, fd, *like, 1 << 62, 4) == (0, reader.LONG_WAY, None)
        assert ring.send_frames(-5, NOW_US, 0, a.fileno(), *LIKE, 1 << 62, 4) == (0, reader.LONG_WAY, None)
        assert received(b) == b"" and gating(ring) == 0


def test_a_broken_connection_hands_everything_back(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    b.close()
    with FrameRing.create(capacity=4) as ring:
        ring.write(pcm(0), utterance=UID, flags=0, fmt=FMT, nbytes=1920)
        assert ring.send_frames(0, NOW_US, 0, a.fileno(), *LIKE, 1 << 62, 4) == (
            1,
            reader.BLOCKED,
            message(0),
        )  # for the transport's own write to meet the error (and close the connection)


def test_a_writer_waiting_for_the_space_is_told(pair: tuple[socket.socket, socket.socket]) -> None:
    """Reading past where a waiting writer asked to be woken clears its flag and bumps the space
    event (the word a writer sleeps on), as every read does."""
    from ringaudio.kernels import _ring as c  # type: ignore[attr-defined]
    from ringaudio.ring import layout

    a, b = pair
    with FrameRing.create(capacity=8) as ring:
        for seq in range(4):
            ring.write(pcm(seq), utterance=UID, flags=0, fmt=FMT, nbytes=1920)
        ctrl = ring._ctrl
        event = int(ctrl[layout.C_SPACE_EVENT])
        c.store(ctrl, layout.C_WAKE_AT, 3)
        c.store(ctrl, layout.C_WRITER_WAITING, 1)
        assert ring.send_frames(0, NOW_US, 0, a.fileno(), *LIKE, 1 << 62, 2)[0] == 2
        assert int(ctrl[layout.C_WRITER_WAITING]) == 1  # not yet where it asked
        assert ring.send_frames(2, NOW_US, 0, a.fileno(), *LIKE, 1 << 62, 2)[0] == 2
        assert int(ctrl[layout.C_WRITER_WAITING]) == 0 and int(ctrl[layout.C_SPACE_EVENT]) == event + 1
        assert received(b) == b"".join(message(q) for q in range(4))
        del ctrl  # (no view of the ring may outlive it)
