"""A few seconds of the load harness, so it cannot rot (``python -m bench.load`` is the real run)."""

from __future__ import annotations

import asyncio
import json
import random
import struct
from typing import Any

import pytest

from ringaudio import wire as P

from . import rawclient as R
from .load import run_one


@pytest.mark.parametrize("scenario", ["independent", "fanout", "slow"])
def test_load_harness_smoke(scenario: str) -> None:
    row = run_one("ringaudio", 6, 3.0, scenario, 1)  # the raw client
    assert row["client"] == "raw"
    assert row["errors"] == 0 and row["lost"] == 0
    assert row["delivered_pct"] > 50  # the frames flowed (the exact figure is the benchmark's business)
    assert row["server_cpu_pct"] > 0 and row["server_rss_mb"] > 0


def test_bare_peer_smoke() -> None:
    row = run_one("bare", 6, 3.0, "independent", 1)
    assert row["errors"] == 0 and row["lost"] == 0 and row["delivered_pct"] > 50


def test_websockets_client_smoke() -> None:
    row = run_one("ringaudio", 6, 3.0, "independent", 1, client="websockets")
    assert row["client"] == "websockets" and row["errors"] == 0 and row["lost"] == 0
    assert row["delivered_pct"] > 50


# -- the raw client without a server ------------------------------------------------------------------


class _Transport:
    def __init__(self) -> None:
        self.out: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.out.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    abort = close


def _unmask(frame: bytes) -> tuple[int, bytes]:
    assert frame[1] & 0x80, "a client frame must be masked"
    n, at = frame[1] & 0x7F, 2
    if n == 126:
        n, at = struct.unpack_from("!H", frame, 2)[0], 4
    elif n == 127:
        n, at = struct.unpack_from("!Q", frame, 2)[0], 10
    key = frame[at : at + 4]
    return frame[0] & 0x0F, bytes(b ^ key[i % 4] for i, b in enumerate(frame[at + 4 : at + 4 + n]))


def _audio(seq: int, pcm: int = 1920) -> bytes:
    return R.encode_server_frame(R.OP_BINARY, P.encode_header(seq, 0) + bytes(pcm))


def _opened(session: R.RawSession, transport: _Transport) -> None:
    session.connection_made(transport)  # type: ignore[arg-type]
    request = transport.out[0].decode()
    assert request.startswith("GET /ws HTTP/1.1\r\n") and "Sec-WebSocket-Version: 13\r\n" in request
    head = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    head += f"Sec-WebSocket-Accept: {R.accept_for(session.key)}\r\n\r\n"
    event = json.dumps({"type": "session", "session_id": "s", "listen_key": "k"}).encode()
    data = head.encode() + R.encode_server_frame(R.OP_TEXT, event)
    session.data_received(data[:40])
    session.data_received(data[40:])  # the session event came in the read that ended the handshake


def test_raw_client_header_matches_the_protocol() -> None:
    assert R.HEADER_SIZE == P.HEADER_SIZE
    assert R.SEQ.unpack_from(P.encode_header(0x0123456789, 7), R.SEQUENCE_OFFSET)[0] == 0x0123456789


def test_raw_client_parses_frames_split_anywhere() -> None:
    async def main() -> dict[str, Any]:
        session, transport = R.RawSession("127.0.0.1", 1, "/ws", False), _Transport()
        _opened(session, transport)
        assert session.opened.result()["session_id"] == "s"
        session.begin({"type": "synthesize", "text": "é" * 300}, 60)
        assert json.loads(_unmask(transport.out[-1])[1])["text"] == "é" * 300  # 16-bit length, masked
        data = b"".join(_audio(i) for i in range(5)) + _audio(5, 50) + _audio(6, 70_000)  # 16, 7, 64-bit
        data += R.encode_server_frame(R.OP_PING, b"hi") + _audio(9)  # 7 and 8 are lost
        whole = _audio(10, 100)[2:]  # one audio message in two fragments
        data += bytes([R.OP_BINARY, 30]) + whole[:30] + bytes([0x80, len(whole) - 30]) + whole[30:]
        data += R.encode_server_frame(R.OP_TEXT, b'{"type":"queued"}') + _audio(11)
        rng, at = random.Random(7), 0
        while at < len(data):
            step = rng.randint(1, 3000)
            session.data_received(data[at : at + step])
            at += step
        assert not session.buf
        assert (R.OP_PONG, b"hi") in [_unmask(out) for out in transport.out[2:]]
        session.data_received(R.encode_server_frame(R.OP_CLOSE, struct.pack("!H", 1001) + b"bye"))
        assert transport.closed and _unmask(transport.out[-1]) == (R.OP_CLOSE, struct.pack("!H", 1001))
        session.connection_lost(None)
        return session.stats(False)

    stats = asyncio.run(main())
    assert (stats["frames"], stats["gaps"], stats["lost"]) == (10, 1, 2)
    assert stats["error"].startswith("ConnectionClosed: received 1001")


def test_raw_client_refuses_a_bad_handshake() -> None:
    async def main() -> R.RawSession:
        session, transport = R.RawSession("127.0.0.1", 1, "/ws", False), _Transport()
        session.connection_made(transport)  # type: ignore[arg-type]
        session.data_received(b"HTTP/1.1 101 OK\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n")
        session.data_received(b"Sec-WebSocket-Accept: wrong\r\n\r\n")
        assert transport.closed
        with pytest.raises(R.HandshakeError):
            session.opened.result()
        return session

    assert "Sec-WebSocket-Accept" in (asyncio.run(main()).error or "")


def test_plot_is_written(tmp_path: object) -> None:
    pytest.importorskip("matplotlib")
    import pathlib

    from .load import plot

    path = pathlib.Path(str(tmp_path)) / "load.png"
    rows = [
        {"server": k, "sessions": n, "jitter_p99_ms": 1.0, "server_cpu_pct": 10.0, "worker_cpu_pct": 5.0}
        for k in ("ringaudio", "bare")
        for n in (10, 20)
    ]
    plot(rows, path)
    assert path.stat().st_size > 1000 and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_stalls_are_windows_where_many_sessions_were_late_at_once() -> None:
    """100 sessions, 2 s each at 20 ms, all stalled once for 50 ms (a frame 50 ms late, the next at
    once): one stall window. One session alone off on every interval, among 100 calm ones: none."""
    from bench.load import stalls

    def session(start: float, stall_at: int | None, lone: bool = False) -> dict[str, object]:
        iv = [20.0] * 100
        if stall_at is not None:
            iv[stall_at], iv[stall_at + 1] = 70.0, 0.0
        if lone:
            iv = [50.0 if i % 2 else 0.0 for i in range(100)]
        return {"intervals": iv, "paced_from": start}

    results = [session(100.0 + i * 0.0001, 50) for i in range(100)]
    windows, worst, at = stalls(results)
    assert windows == 1 and worst >= 25  # (each session's 70 and 0 land in one window of ~4 intervals)
    assert at == [1.0]  # 50 intervals of 20 ms, then the late one
    calm = [session(100.0 + i * 0.0001, None) for i in range(100)] + [session(100.0, None, lone=True)]
    windows, worst, at = stalls(calm)
    assert windows == 0 and 0 < worst < 5 and at == []
    few = [session(100.0 + i * 0.0001, 50) for i in range(8)]  # a few sessions: still seen
    assert stalls(few)[0] == 1
    assert stalls([]) == (0, 0.0, [])
