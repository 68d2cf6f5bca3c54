"""What the bench runners (and the server tests) share: the machine line, running one
pytest-benchmark file, and a real server process whose JSON log lines are kept."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psutil

HERE = Path(__file__).resolve().parent


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = psutil.virtual_memory().total / 2**30
    return f"{cpu}, {psutil.cpu_count()} cores, {mem:.0f} GiB, Python {platform.python_version()}, {platform.system()}"


def run(test_file: str, name: str, env: dict[str, str]) -> dict[str, Any] | None:
    """Run one benchmark file for real; return pytest-benchmark's JSON (also kept in bench/results/)."""
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d")
    out = HERE / "results" / f"{name}-{stamp}.json"
    out.parent.mkdir(exist_ok=True)
    cmd = [sys.executable, "-m", "pytest", str(HERE / test_file), "-q", "-p", "no:cacheprovider"]
    cmd += ["--benchmark-enable", "--benchmark-only", f"--benchmark-json={out}", "--benchmark-columns=median,min,max"]
    if subprocess.call(cmd, env={**os.environ, **env}) != 0:
        return None
    print(f"\nMeasured {stamp} on {machine()}.\n")
    result: dict[str, Any] = json.loads(out.read_text())
    return result


def load_or_run(earlier: Path | None, test_file: str, name: str, env: dict[str, str]) -> dict[str, Any] | None:
    """The JSON of an earlier run when one is named (``--json``), else a fresh run."""
    if earlier is not None:
        loaded: dict[str, Any] = json.loads(earlier.read_text())
        return loaded
    return run(test_file, name, env)


class LoggedProcess:
    """A server process started from ``cmd`` whose output is one JSON object per line (its stdout and
    stderr, merged): every line is
    kept in ``log`` (a line that is not JSON as ``{"message": line}``), and ``port`` comes from its
    ``ready`` line ("server listening"); the constructor returns once that line came (or raises)."""

    def __init__(
        self,
        cmd: Sequence[str],
        env: dict[str, str],
        what: str = "server",
        timeout: float = 120,
        ready: str = "server listening",
    ) -> None:
        self.ready_message = ready
        self.proc = subprocess.Popen(
            list(cmd), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=HERE.parent
        )
        self.log: list[dict[str, Any]] = []
        self.port = 0
        self._ready = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        if not self._ready.wait(timeout) or not self.port:
            self.stop()
            raise RuntimeError(f"the {what} did not start: {self.log[-5:]}")

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                entry = {"message": line.rstrip()}
            if not isinstance(entry, dict):
                entry = {"message": line.rstrip()}
            self.log.append(entry)
            if entry.get("message") == self.ready_message:
                self.port = entry["port"]
                self._ready.set()
        self._ready.set()

    def logged(self, message: str) -> list[dict[str, Any]]:
        return [entry for entry in self.log if entry.get("message") == message]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> int:
        """Signal it, wait up to ``timeout``, then kill it (see :meth:`on_hang`); its exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.on_hang()
                self.proc.kill()
                self.proc.wait()
        self._reader.join(5)
        return int(self.proc.returncode)

    def on_hang(self) -> None:
        """Called when the process did not stop in time, before it is killed."""
