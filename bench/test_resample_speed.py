"""Resampling 22 050 -> 48 000 Hz on one core, side by side: ours, soxr, resampy, scipy.

Each benchmark resamples the same 10 s of speech-band noise (float32). "one-shot" converts it in
one call; "20 ms chunks" feeds 441-sample chunks to a streaming resampler, as a TTS worker does.
``python -m bench.resample`` prints the README table (× real time, µs per 20 ms chunk, ratios).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from ringaudio.resample import Resampler, resample

IN, OUT = 22_050, 48_000
SECONDS = float(os.environ.get("RINGAUDIO_BENCH_SECONDS", "1"))
CHUNK = 441
X = (np.random.default_rng(7).standard_normal(int(IN * SECONDS)) * 0.1).astype(np.float32)


def _bench(benchmark: Any, name: str, fn: Callable[[], object]) -> None:
    fn()  # warm: compilation, filter design, first-touch
    benchmark.extra_info.update(method=name, seconds=SECONDS, chunks=len(X) // CHUNK)
    benchmark.pedantic(fn, rounds=7, iterations=1)


def _chunks() -> list[np.ndarray]:
    return [X[i : i + CHUNK] for i in range(0, len(X) - CHUNK + 1, CHUNK)]


def test_ringaudio_one_shot(benchmark: Any) -> None:
    _bench(benchmark, "ringaudio hq, one-shot", lambda: resample(X, IN, OUT))


@pytest.mark.parametrize("quality", ["hq", "vhq"])
def test_ringaudio_streaming(benchmark: Any, quality: str) -> None:
    chunks = _chunks()
    out = np.empty(2 * 960, np.float32)

    def run() -> None:
        r = Resampler(IN, OUT, quality)
        for c in chunks:
            r.process(c, out)

    _bench(benchmark, f"ringaudio {quality}, 20 ms chunks", run)


def test_soxr_one_shot(benchmark: Any) -> None:
    soxr = pytest.importorskip("soxr")
    _bench(benchmark, "soxr HQ, one-shot", lambda: soxr.resample(X, IN, OUT, quality="HQ"))


def test_soxr_streaming(benchmark: Any) -> None:
    soxr = pytest.importorskip("soxr")
    chunks = _chunks()

    def run() -> None:
        s = soxr.ResampleStream(IN, OUT, 1, dtype="float32", quality="HQ")
        for c in chunks:
            s.resample_chunk(c)

    _bench(benchmark, "soxr HQ, 20 ms chunks", run)


def test_resampy_kaiser_best(benchmark: Any) -> None:
    resampy = pytest.importorskip("resampy")
    _bench(benchmark, "resampy kaiser_best, one-shot", lambda: resampy.resample(X, IN, OUT, filter="kaiser_best"))


def test_scipy_resample_poly(benchmark: Any) -> None:
    signal = pytest.importorskip("scipy.signal")
    _bench(benchmark, "scipy resample_poly, one-shot", lambda: signal.resample_poly(X, 320, 147))
