"""What the bench runners share: the machine line, and running one pytest-benchmark file."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import subprocess
import sys
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
