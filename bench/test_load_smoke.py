"""A few seconds of the load harness, so it cannot rot (``python -m bench.load`` is the real run)."""

from __future__ import annotations

import pytest

from .load import run_one


@pytest.mark.parametrize("scenario", ["independent", "fanout", "slow"])
def test_load_harness_smoke(scenario: str) -> None:
    row = run_one("ringaudio", 6, 3.0, scenario, 1)
    assert row["errors"] == 0 and row["lost"] == 0
    assert row["delivered_pct"] > 50  # the frames flowed (the exact figure is the benchmark's business)
    assert row["server_cpu_pct"] > 0 and row["server_rss_mb"] > 0


def test_bare_peer_smoke() -> None:
    row = run_one("bare", 6, 3.0, "independent", 1)
    assert row["errors"] == 0 and row["lost"] == 0 and row["delivered_pct"] > 50


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
