"""The shipped ``deploy/haproxy/haproxy.cfg`` as it is, run by Debian's haproxy on loopback in front
of two real servers standing for two boxes (instances ``a`` and ``b``): sessions spread over both,
a listen in the URL reaches the box holding the stream, a listen sent as a message to the wrong box
is refused with ``listen_elsewhere``, and draining one box (SIGTERM) ends its sessions cleanly while
the other keeps serving and the health check takes the drained one out."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from ringaudio import wire as P

from .server.conftest import ServerProcess, audio, speak

HAPROXY = shutil.which("haproxy")
CONFIG = Path(__file__).resolve().parents[1] / "deploy" / "haproxy" / "haproxy.cfg"
pytestmark = pytest.mark.skipif(HAPROXY is None, reason="haproxy is not installed (scripts/env.sh installs it)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Balancer:
    def __init__(self, a: int, b: int) -> None:
        self.port = free_port()
        env = {
            **os.environ,
            "RINGAUDIO_LB_BIND": f"127.0.0.1:{self.port}",
            "RINGAUDIO_A": f"127.0.0.1:{a}",
            "RINGAUDIO_B": f"127.0.0.1:{b}",
        }
        assert HAPROXY is not None
        self.proc = subprocess.Popen(
            [HAPROXY, "-db", "-f", str(CONFIG)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip())

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/"

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.reader.join(5)


@contextlib.contextmanager
def two_boxes() -> Iterator[tuple[ServerProcess, ServerProcess, Balancer]]:
    a = ServerProcess(args=("--instance", "a"))
    b = ServerProcess(args=("--instance", "b"))
    lb = Balancer(a.port, b.port)
    try:
        deadline = time.monotonic() + 20
        while run(instances(lb.url, 8)) != {"a", "b"}:
            assert lb.proc.poll() is None, lb.lines[-10:]
            assert time.monotonic() < deadline, lb.lines[-10:]
            time.sleep(0.2)
        yield a, b, lb
    finally:
        lb.stop()
        codes = [a.stop(), b.stop()]
    assert codes == [0, 0]


@pytest.fixture(scope="module")
def boxes() -> Iterator[tuple[ServerProcess, ServerProcess, Balancer]]:
    with two_boxes() as running:
        yield running


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def instances(url: str, n: int) -> set[str]:
    """The instances n concurrent sessions through the balancer landed on."""
    seen: set[str] = set()
    sockets = []
    try:
        for _ in range(n):
            ws = await connect(url, open_timeout=5)
            sockets.append(ws)
            seen.add(json.loads(await ws.recv())["instance"])
    except OSError:
        pass
    finally:
        for ws in sockets:
            await ws.close()
    return seen


def test_a_listen_is_routed_to_the_box_holding_the_stream(boxes: tuple[ServerProcess, ServerProcess, Balancer]) -> None:
    _, _, lb = boxes

    async def go() -> list[tuple[str, str, bool, dict[str, Any]]]:
        out = []
        owners = [await connect(lb.url) for _ in range(4)]
        try:
            sessions = [json.loads(await ws.recv()) for ws in owners]
            for owner, session in zip(owners, sessions, strict=True):
                url = f"{lb.url}?listen={session['session_id']}&key={session['listen_key']}"
                async with connect(url) as listener:
                    mine = json.loads(await listener.recv())
                    listening = json.loads(await asyncio.wait_for(listener.recv(), 10))
                    heard: list[bytes] = []

                    async def hear(listener: Any = listener, heard: list[bytes] = heard) -> None:
                        async for msg in listener:
                            if isinstance(msg, bytes):
                                heard.append(msg)

                    hearing = asyncio.ensure_future(hear())
                    got = await speak(owner, "Heard here.")
                    async with asyncio.timeout(10):
                        while len(heard) < len(got):
                            await asyncio.sleep(0.02)
                    hearing.cancel()
                    out.append((session["instance"], mine["instance"], audio(heard) == audio(got), listening))
        finally:
            for ws in owners:
                await ws.close()
        return out

    results = run(go())
    assert {owner for owner, *_ in results} == {"a", "b"}  # leastconn spread the four owners over both boxes
    for owner, listener_box, same, listening in results:
        assert listener_box == owner and listening["type"] == "listening" and same


def test_a_listen_message_on_the_wrong_box_is_refused_with_the_box_it_needs(
    boxes: tuple[ServerProcess, ServerProcess, Balancer],
) -> None:
    _, _, lb = boxes

    async def go() -> dict[str, Any]:
        async with connect(lb.url) as owner, connect(lb.url) as other:  # leastconn: one on each box
            session = json.loads(await owner.recv())
            assert json.loads(await other.recv())["instance"] != session["instance"]
            await other.send(
                json.dumps({"type": "listen", "session_id": session["session_id"], "key": session["listen_key"]})
            )
            return {**json.loads(await asyncio.wait_for(other.recv(), 10)), "owner": session["instance"]}

    err = run(go())
    assert err["code"] == "listen_elsewhere" and err["instance"] == err["owner"]


def test_draining_one_box_ends_its_sessions_cleanly_and_the_other_keeps_serving() -> None:
    with two_boxes() as (a, _, lb):
        drain(a, lb)


def drain(a: ServerProcess, lb: Balancer) -> None:

    async def go() -> tuple[list[int], set[str], list[int]]:
        owners = [await connect(lb.url) for _ in range(6)]
        sessions = [json.loads(await ws.recv()) for ws in owners]
        on_a = [ws for ws, s in zip(owners, sessions, strict=True) if s["instance"] == "a"]
        on_b = [ws for ws, s in zip(owners, sessions, strict=True) if s["instance"] == "b"]
        for ws in on_b:
            await ws.send(
                json.dumps({"type": "synthesize", "text": "Still speaking on the other box, all along. " * 3})
            )
        a.proc.terminate()  # drain box a
        codes = []
        for ws in on_a:
            with pytest.raises(ConnectionClosed):  # closed by the server, with a code
                while True:
                    await asyncio.wait_for(ws.recv(), 15)
            codes.append(ws.close_code)
        sequences = []
        for ws in on_b:  # the other box's streams go on to their end, whole
            seqs = []
            while True:
                msg = await asyncio.wait_for(ws.recv(), 20)
                if isinstance(msg, bytes):
                    seqs.append(P.decode_header(msg).sequence)
                elif json.loads(msg)["type"] == "utterance.end":
                    break
            sequences.append(int(seqs == list(range(seqs[0], seqs[0] + len(seqs)))))
            await ws.close()
        after = await instances(lb.url, 6)
        return codes, after, sequences

    codes, after, whole = run(go())
    assert codes and all(code == 1001 for code in codes)  # "server shutting down", not a dropped connection
    assert after == {"b"} and whole and all(whole)
    assert a.proc.wait(15) == 0
    deadline = time.monotonic() + 10  # the health check takes it out
    while not any("boxes/a is DOWN" in line for line in lb.lines):
        assert time.monotonic() < deadline, lb.lines[-10:]
        time.sleep(0.1)
