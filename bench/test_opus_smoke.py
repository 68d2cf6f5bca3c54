"""bench.opus in a short form: it runs, and Opus is the smaller and the costlier per frame."""

from __future__ import annotations

import pytest

from ringaudio import opus

from . import opus as bench_opus


@pytest.mark.skipif(opus.available() is not None, reason=f"{opus.available()}")
def test_the_opus_benchmark_runs() -> None:
    rows = bench_opus.run(1.0)
    pcm, c5 = rows["s16le"], rows["opus c5"]
    assert rows["frames"] == 50
    assert c5["kbit_per_s"] < pcm["kbit_per_s"] / 10  # type: ignore[index]
    assert c5["us_per_frame"] > pcm["us_per_frame"]  # type: ignore[index]
