"""bench.worker in a short form: it runs, writes frames, and resampling costs more than none."""

from __future__ import annotations

from . import worker


def test_the_worker_benchmark_runs() -> None:
    native, resampled = worker.measure(48_000, 0.3), worker.measure(22_050, 0.3)
    assert native["frames"] > 100 and resampled["frames"] > 50
    assert 0 < native["us_per_frame"] < resampled["us_per_frame"]  # the resampler is not free
