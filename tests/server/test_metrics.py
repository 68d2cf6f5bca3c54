"""The metrics' own pieces, sans I/O."""

from __future__ import annotations

import pytest

from ringaudio.server.metrics import BatchHistogram


def test_batch_histogram_bins_like_prometheus() -> None:
    h = BatchHistogram("x_ms", "test", (1, 5, 20))
    for v in (0.5, 1.0, 3, 20, 25, 100):
        h.observe(v)
    family = next(iter(h.collect()))
    buckets = {s.labels["le"]: s.value for s in family.samples if s.name == "x_ms_bucket"}
    assert buckets == {"1": 2.0, "5": 3.0, "20": 4.0, "+Inf": 6.0}  # le: value <= bound
    total = next(s.value for s in family.samples if s.name == "x_ms_sum")
    assert total == pytest.approx(149.5)
