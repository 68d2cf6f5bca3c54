"""Every test must leave /dev/shm and the process tree as it found them."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

SHM = Path("/dev/shm")


def ringaudio_segments() -> set[str]:
    return {p.name for p in SHM.glob("ringaudio*")} if SHM.is_dir() else set()


def live_children() -> list[psutil.Process]:
    # the resource tracker is multiprocessing's own helper and lives as long as the test process
    out = []
    for child in psutil.Process().children(recursive=True):
        try:
            if "resource_tracker" in " ".join(child.cmdline()) or child.status() == psutil.STATUS_ZOMBIE:
                continue
        except psutil.Error:
            continue
        out.append(child)
    return out


@pytest.fixture(autouse=True)
def no_leaks() -> Iterator[None]:
    before = ringaudio_segments()
    kept = {c.pid for c in live_children()}  # e.g. a module-scoped server and its workers

    def new_children() -> list[psutil.Process]:
        return [c for c in live_children() if c.pid not in kept]

    yield
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline and (ringaudio_segments() - before or new_children()):
        time.sleep(0.05)
    leaked = ringaudio_segments() - before
    children = new_children()
    for child in children:
        child.kill()
    for name in leaked:
        os.unlink(SHM / name)
    assert not leaked, f"test leaked shared-memory segments: {sorted(leaked)}"
    assert not children, f"test left child processes running: {[c.pid for c in children]}"


def long_runs() -> bool:
    """Full-length soak/stress runs (``RINGAUDIO_LONG=1``); CI runs the short form."""
    return os.environ.get("RINGAUDIO_LONG", "") not in ("", "0")
