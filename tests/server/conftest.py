"""A real server process on loopback, and small helpers to talk to it."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from bench.common import LoggedProcess
from ringaudio import wire as P


class ServerProcess(LoggedProcess):
    """``python -m ringaudio.server`` on a free port with the synthetic voice and one worker."""

    def __init__(self, env: dict[str, str] | None = None, args: tuple[str, ...] = ()) -> None:
        full_env = {
            **os.environ,
            "RINGAUDIO__WORKER__SYNTHETIC_RTF": "0.05",
            "RINGAUDIO__WORKER__WORKERS": "1",
            **(env or {}),
        }
        cmd = [sys.executable, "-m", "ringaudio.server", "--port", "0", "--backend", "synthetic", *args]
        super().__init__(cmd, full_env)

    @property
    def lines(self) -> list[dict[str, Any]]:
        return self.log

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10) -> int:
        return super().stop(sig, timeout)

    def on_hang(self) -> None:
        """Show where it hangs (py-spy, when installed) and its last lines."""
        import shutil

        spy = shutil.which("py-spy") or os.path.join(os.path.dirname(sys.executable), "py-spy")
        if os.path.exists(spy):
            dump = subprocess.run([spy, "dump", "--pid", str(self.proc.pid)], capture_output=True, text=True)
            print(dump.stdout[-6000:])
        print("server hung on stop; its last lines:", *[e.get("message") for e in self.log[-12:]], sep="\n")


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    srv = ServerProcess()
    yield srv
    assert srv.stop() == 0


def start(env: dict[str, str] | None = None, args: tuple[str, ...] = ()) -> ServerProcess:
    return ServerProcess(env, args)


def wait_until(pred: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


async def speak(ws: Any, text: str) -> list[bytes]:
    """Every audio message of one utterance said on ``ws``, through utterance.end."""
    await ws.send(json.dumps({"type": "synthesize", "text": text}))
    frames: list[bytes] = []
    while True:
        msg = await asyncio.wait_for(ws.recv(), 20)
        if isinstance(msg, bytes):
            frames.append(msg)
        elif json.loads(msg)["type"] == "utterance.end":
            return frames


def audio(frames: list[bytes]) -> list[tuple[int, int, bytes]]:
    """What a listener must hear as the owner does: each frame's sequence, flags and samples (its
    send time differs: each connection is paced on its own)."""
    out = []
    for f in frames:
        h = P.decode_header(f)
        out.append((h.sequence, h.flags, f[P.HEADER_SIZE :]))
    return out
