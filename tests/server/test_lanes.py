"""The kernels' lanes (``server.kernel_lanes``) on a real server: a session's steady state is served
by one C call per pass, and what the client gets is exactly what the Python pump sends, in order
with everything else the server writes (events, pongs), through a pause; a client that vanishes
while its session is in a lane leaves nothing open."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
from typing import Any

from websockets.asyncio.client import connect

from .conftest import ServerProcess, audio, wait_until
from .test_debug import get
from .test_server import recv_event, run

TEXT = "This is a sentence that keeps the voice busy for a while. "  # ~3.9 s of synthetic speech


def sessions(srv: ServerProcess) -> list[dict[str, Any]]:
    status, body = get(f"{srv.http}/debug/sessions")
    assert status == 200
    return list(body["sessions"])


async def a_session(srv: ServerProcess) -> dict[str, Any]:
    """Two utterances; mid-way through the first a ping (the library's pong goes out between frames)
    and a pause of 0.5 s; what the debug view said of the session meanwhile."""
    async with connect(srv.url, max_size=None, ping_interval=None) as ws:
        sid = (await recv_event(ws, "session"))["session_id"]
        frames: list[bytes] = []
        events: list[str] = []
        seen_in_lane = False
        pongs: list[asyncio.Future[float]] = []
        marks: list[tuple[str, int, int]] = []
        entries: list[int] = []
        for n, text in enumerate((TEXT, "And a second one.")):
            await ws.send(json.dumps({"type": "synthesize", "text": text}))
            paused = n > 0
            while True:
                msg = await asyncio.wait_for(ws.recv(), 20)
                if isinstance(msg, bytes):
                    frames.append(msg)
                    if n == 0 and len(frames) in (50, 150):  # 1 s in (the steady state), and after the pings
                        mine = [x for x in await asyncio.to_thread(sessions, srv) if x["session_id"] == sid]
                        seen_in_lane = seen_in_lane or mine[0]["kernel_lane"]
                        entries.append(mine[0]["kernel_lane_entries"])
                    if n == 0 and len(frames) in range(60, 150, 10):  # the library's pongs, between frames
                        pongs.append(await ws.ping())
                    if not paused and len(frames) == 150:
                        await ws.send(json.dumps({"type": "control", "action": "pause"}))
                        paused = True
                    continue
                event = json.loads(msg)
                kind = event["type"]
                events.append(kind)
                if kind in ("paused", "resumed"):  # where the stream stood: every frame before it was sent
                    marks.append((kind, event["sequence"], len(frames)))
                if kind == "paused":
                    await asyncio.sleep(0.5)
                    await ws.send(json.dumps({"type": "control", "action": "resume"}))
                if kind == "utterance.end":
                    break
        assert len(pongs) == 9 and all(p.done() for p in pongs)
        for _ in range(50):  # and between the utterances' frames, once the second is steady
            if any(x["session_id"] == sid and x["kernel_lane"] for x in await asyncio.to_thread(sessions, srv)):
                seen_in_lane = True
                break
            await asyncio.sleep(0.02)
        return {"frames": frames, "events": events, "in_lane": seen_in_lane, "marks": marks, "entries": entries}


def test_a_lane_sends_exactly_what_the_python_pump_sends_with_the_pongs_between_and_steps_aside_for_pauses() -> None:
    got = {}
    for lanes in ("true", "false"):
        srv = ServerProcess({"RINGAUDIO__SERVER__KERNEL_LANES": lanes})
        try:
            got[lanes] = run(a_session(srv))
        finally:
            assert srv.stop() == 0
    on, off = got["true"], got["false"]
    assert on["in_lane"] and not off["in_lane"]
    before, after = on["entries"]
    assert after - before == 1  # back in after the first view took it out: the pongs went out from its lane
    heard = audio(on["frames"])
    assert heard == audio(off["frames"])  # every frame, its sequence, flags and samples
    seqs = [seq for seq, _, _ in heard]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # nothing lost, nothing twice
    for kind, sequence, received in on["marks"] + off["marks"]:
        assert sequence == seqs[0] + received, kind  # the pause came exactly after what was sent before it
    assert on["marks"][0][2] == on["marks"][1][2]  # and nothing was sent while paused
    assert on["events"] == off["events"] == [
        "queued", "utterance.start", "paused", "resumed", "utterance.end", "queued", "utterance.start", "utterance.end",
    ]  # fmt: skip


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_a_client_that_vanishes_while_in_a_lane_leaves_no_descriptor_and_no_session() -> None:
    srv = ServerProcess()
    try:
        with connect_sync(srv) as ws:  # settle what the server opens on its first connection
            ws.recv(10)
        wait_until(lambda: not sessions(srv))
        before = open_fds(srv.proc.pid)
        sock = socket.create_connection(("127.0.0.1", srv.port))
        sock.sendall(
            b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        sock.recv(4096)  # the handshake's answer (and maybe the session event)
        payload = json.dumps({"type": "synthesize", "text": TEXT}).encode()
        mask = b"\x00\x00\x00\x00"
        sock.sendall(bytes([0x81, 0x80 | 126]) + len(payload).to_bytes(2, "big") + mask + payload)
        deadline = time.monotonic() + 10
        while not any(x["kernel_lane"] for x in sessions(srv)):
            sock.recv(1 << 16)  # read along, as a client does
            assert time.monotonic() < deadline, "never served by a lane"
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        sock.close()  # a reset, no closing handshake
        wait_until(lambda: not sessions(srv))
        wait_until(lambda: open_fds(srv.proc.pid) <= before)  # its socket and the lane's own descriptor
        assert any(e.get("message") == "session closed" for e in srv.lines)
    finally:
        assert srv.stop() == 0


def connect_sync(srv: ServerProcess) -> Any:
    from websockets.sync.client import connect as sync_connect

    return sync_connect(srv.url, open_timeout=10)
