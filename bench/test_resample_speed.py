"""Resampling 22 050 -> 48 000 Hz on one core, side by side: ours, soxr, resampy, scipy.

Each benchmark resamples the same white noise at the voice's rate (float32): 10 s with ``python -m
bench.resample``, 1 s in the smoke run (``RINGAUDIO_BENCH_SECONDS``). "one-shot" converts it in one
call; "20 ms chunks" feeds 441-sample chunks to a streaming resampler, as a TTS worker does.
``python -m bench.resample`` prints the README table (× real time, µs per 20 ms chunk, ratios).

Each test also asserts what came out, never how fast: the length of the same duration, and for a
whole signal its level and its agreement with ours; a stream yields it all once flushed.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
import pytest

from ringaudio.resample import Resampler, resample

IN, OUT = 22_050, 48_000
SECONDS = float(os.environ.get("RINGAUDIO_BENCH_SECONDS", "1"))
CHUNK = 441
X = (np.random.default_rng(7).standard_normal(int(IN * SECONDS)) * 0.1).astype(np.float32)
_R = TypeVar("_R")


@functools.cache
def _ours() -> np.ndarray:
    """Our one-shot output, which the others' is compared with (made once, never timed)."""
    return resample(X, IN, OUT)


def _bench(benchmark: Any, name: str, fn: Callable[[], _R]) -> _R:
    """Time ``fn``; return what its last timed call returned, for the test to check."""
    fn()  # warm: compilation, filter design, first-touch
    benchmark.extra_info.update(method=name, seconds=SECONDS, chunks=len(X) // CHUNK)
    result: _R = benchmark.pedantic(fn, rounds=7, iterations=1)
    return result


def _chunks() -> list[np.ndarray]:
    return [X[i : i + CHUNK] for i in range(0, len(X) - CHUNK + 1, CHUNK)]


def _assert_resampled(y: np.ndarray) -> None:
    """``y`` is ``X`` at 48 kHz: the length of the same duration, finite, the noise's level kept (less
    what lies above the low-pass, under 10 %), and time-aligned with ours."""
    assert abs(len(y) - len(X) * OUT / IN) <= 1, len(y)
    assert np.isfinite(y).all()
    level = np.sqrt(np.mean(np.square(y, dtype=np.float64)) / np.mean(np.square(X, dtype=np.float64)))
    assert 0.9 < level < 1.05, level
    ours = _ours()[: len(y)]
    assert np.corrcoef(y[: len(ours)], ours)[0, 1] > 0.95  # the same signal at the same instants


def test_ringaudio_one_shot(benchmark: Any) -> None:
    y = _bench(benchmark, "ringaudio hq, one-shot", lambda: resample(X, IN, OUT))
    assert len(y) == -(-len(X) * OUT // IN)  # every output instant up to the last input's
    _assert_resampled(y)


@pytest.mark.parametrize(("quality", "stages"), [("hq", None), ("hq", 1), ("vhq", None)])
def test_ringaudio_streaming(benchmark: Any, quality: str, stages: int | None) -> None:
    chunks = _chunks()
    out = np.empty(2 * 960, np.float32)

    def run() -> Resampler:
        r = Resampler(IN, OUT, quality, stages=stages)
        for c in chunks:
            r.process(c, out)
        return r

    form = " (one stage)" if stages == 1 else ""
    r = _bench(benchmark, f"ringaudio {quality}{form}, 20 ms chunks", run)
    n_in = len(chunks) * CHUNK
    fed = r.samples_out
    assert fed > 0 and fed + len(r.flush()) == -(-n_in * OUT // IN)  # all but the look-ahead came out while fed


def test_soxr_one_shot(benchmark: Any) -> None:
    soxr = pytest.importorskip("soxr")
    _assert_resampled(_bench(benchmark, "soxr HQ, one-shot", lambda: soxr.resample(X, IN, OUT, quality="HQ")))


def test_soxr_streaming(benchmark: Any) -> None:
    soxr = pytest.importorskip("soxr")
    chunks = _chunks()

    def run() -> tuple[Any, int]:
        s = soxr.ResampleStream(IN, OUT, 1, dtype="float32", quality="HQ")
        n = 0
        for c in chunks:
            n += len(s.resample_chunk(c))
        return s, n

    stream, n = _bench(benchmark, "soxr HQ, 20 ms chunks", run)
    tail = stream.resample_chunk(np.zeros(0, np.float32), last=True)
    assert n > 0 and abs(n + len(tail) - len(chunks) * CHUNK * OUT / IN) <= 1


def test_resampy_kaiser_best(benchmark: Any) -> None:
    resampy = pytest.importorskip("resampy")
    y = _bench(benchmark, "resampy kaiser_best, one-shot", lambda: resampy.resample(X, IN, OUT, filter="kaiser_best"))
    _assert_resampled(y)


def test_scipy_resample_poly(benchmark: Any) -> None:
    signal = pytest.importorskip("scipy.signal")
    _assert_resampled(_bench(benchmark, "scipy resample_poly, one-shot", lambda: signal.resample_poly(X, 320, 147)))
