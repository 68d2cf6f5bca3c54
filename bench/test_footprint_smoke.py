"""A few seconds of the footprint benchmark, so it cannot rot (``python -m bench.footprint`` is the real run).

bench/ has no conftest of its own (the autouse leak check in tests/conftest.py covers tests/ only), so
the same check is made here with that file's helpers: no new child process, no new segment.
Only generous sanity bounds are asserted, never the benchmark's targets.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.conftest import live_children, ringaudio_segments

from . import footprint as F


def _children() -> set[int]:
    return {c.pid for c in live_children()}


@pytest.fixture(autouse=True)
def no_leaks() -> Iterator[None]:
    children, segments = _children(), ringaudio_segments()
    yield
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline and (_children() - children or ringaudio_segments() - segments):
        time.sleep(0.05)
    assert not _children() - children, "the footprint benchmark left processes running"
    assert not ringaudio_segments() - segments, "the footprint benchmark left shared-memory segments"


@pytest.mark.parametrize("kind", F.KINDS)
def test_measure_returns_sane_figures(kind: str) -> None:
    row = F.measure(kind, idle_seconds=1.0, runs=1, cold_runs=0, session_seconds=1.0, prime=False)
    assert row["server"] == kind
    assert 0 < row["ready_warm_s"] < 120
    assert row["ready_cold_s"] is None  # not asked for
    assert 0 <= row["idle_server_cpu_pct"] <= row["idle_cpu_pct"] < 100  # 1 s may read 0: 10 ms ticks
    idle = row["idle_memory"]
    assert 5 < idle["server"]["rss_mb"] < 2000
    if kind == "ringaudio":
        assert idle["worker"] is not None and 5 < idle["worker"]["rss_mb"] < 2000
        assert idle["pair"]["rss_mb"] > idle["server"]["rss_mb"]
    else:
        assert idle["worker"] is None
    session = row["session"]
    assert session["frames"] > 0 and session["first_audio_ms"] is not None
    assert session["cpu_pct"] >= session["server_cpu_pct"] > 0
    assert session["memory"]["pair"]["rss_mb"] > 0


def test_table_has_every_line() -> None:
    memory = {"rss_mb": 100.0, "pss_mb": 80.0, "uss_mb": 60.0}

    def row(kind: str, worker: bool) -> dict[str, object]:
        mem = {"server": memory, "worker": memory if worker else None, "pair": memory, "others_rss_mb": 10.0}
        return {
            "server": kind,
            "ready_warm_s": 2.0,
            "ready_cold_s": 30.0 if worker else None,
            "idle_cpu_pct": 0.0 if worker else 0.1,
            "idle_server_cpu_pct": 0.0,
            "idle_memory": mem,
            "session": {"cpu_pct": 5.0, "server_cpu_pct": 3.0, "frames": 150, "memory": mem},
        }

    text = F.table({"ringaudio": row("ringaudio", True), "bare": row("bare", False)})
    lines = text.splitlines()
    assert len(lines) == 2 + len(F.TABLE)
    assert "| idle RSS, worker (MB) | 100.0 | — | — |" in text  # the bare peer has no worker
    assert "| 0.00 | 0.10 | 0.00× |" in text and "| 0.00 | 0.00 | — |" in text  # 0 ÷ 0 is no ratio
    assert "| 150 | 150 | 1.00× |" in text


def test_cold_start_plumbing() -> None:
    # a real cold start compiles every kernel (tens of seconds): the bare peer, which has no numba,
    # checks the fresh cache folder's plumbing and clean-up in a second or two
    cold = F.cold_start("bare")
    assert 0 < cold["ready_s"] < 120 and cold["compiled_cache_files"] == 0
    with pytest.raises(ValueError):
        F.command("nginx")
