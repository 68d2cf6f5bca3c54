"""A real server process on loopback, and small helpers to talk to it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest


class ServerProcess:
    def __init__(self, env: dict[str, str] | None = None, args: tuple[str, ...] = ()) -> None:
        full_env = {
            **os.environ,
            "RINGAUDIO__WORKER__SYNTHETIC_RTF": "0.05",
            "RINGAUDIO__WORKER__WORKERS": "1",
            **(env or {}),
        }
        cmd = [sys.executable, "-m", "ringaudio.server", "--port", "0", "--backend", "synthetic", *args]
        self.proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=full_env)
        self.lines: list[dict[str, Any]] = []
        self._ready = threading.Event()
        self.port = 0
        threading.Thread(target=self._read, daemon=True).start()
        if not self._ready.wait(120):
            self.stop()
            raise RuntimeError(f"server did not start: {self.lines[-5:]}")

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                entry = {"message": line.rstrip()}
            self.lines.append(entry)
            if entry.get("message") == "server listening":
                self.port = entry["port"]
                self._ready.set()
        self._ready.set()

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def logged(self, message: str) -> list[dict[str, Any]]:
        return [entry for entry in self.lines if entry.get("message") == message]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                import shutil

                spy = shutil.which("py-spy") or os.path.join(os.path.dirname(sys.executable), "py-spy")
                if os.path.exists(spy):
                    dump = subprocess.run([spy, "dump", "--pid", str(self.proc.pid)], capture_output=True, text=True)
                    print(dump.stdout[-6000:])
                self.proc.kill()
                self.proc.wait()
                print("server hung on stop; its last lines:", *[e.get("message") for e in self.lines[-12:]], sep="\n")
        return self.proc.returncode


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
