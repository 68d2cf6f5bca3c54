"""A few seconds of the load harness, so it cannot rot (``python -m bench.load`` is the real run)."""

from __future__ import annotations

import pytest

from .load import run_one


@pytest.mark.parametrize("scenario", ["independent", "fanout"])
def test_load_harness_smoke(scenario: str) -> None:
    row = run_one("ringaudio", 6, 3.0, scenario, 1)
    assert row["errors"] == 0 and row["lost"] == 0
    assert row["delivered_pct"] > 50  # the frames flowed (the exact figure is the benchmark's business)
    assert row["server_cpu_pct"] > 0 and row["server_rss_mb"] > 0


def test_bare_peer_smoke() -> None:
    row = run_one("bare", 6, 3.0, "independent", 1)
    assert row["errors"] == 0 and row["lost"] == 0 and row["delivered_pct"] > 50
