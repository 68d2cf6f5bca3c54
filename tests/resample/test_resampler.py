"""The streaming resampler: bit-identical to one-shot for any chunking, fixed latency, exact frame
counts, the numba kernel held to the NumPy reference, and typed errors for bad input."""

from __future__ import annotations

import numpy as np
import pytest

from ringaudio.errors import (
    NonFiniteSamples,
    RingAudioError,
    SampleFormatError,
    StreamFinished,
    UnsupportedRate,
)
from ringaudio.resample import QUALITIES, Resampler, design, float32_to_int16, int16_to_float32, reference, resample

RNG = np.random.default_rng(20261124)


def _noise(n: int, channels: int = 1) -> np.ndarray:
    shape = (n,) if channels == 1 else (n, channels)
    return (RNG.standard_normal(shape) * 0.3).astype(np.float32)


def _stream(r: Resampler, x: np.ndarray, sizes: list[int]) -> np.ndarray:
    parts, at = [], 0
    for size in sizes:
        parts.append(r.process(x[at : at + size]))
        at += size
    parts.append(r.process(x[at:]))
    parts.append(r.flush())
    return np.concatenate(parts)


@pytest.mark.parametrize(
    ("in_rate", "out_rate", "channels", "quality"),
    [
        (22_050, 48_000, 1, "hq"),
        (22_050, 48_000, 2, "hq"),
        (16_000, 48_000, 1, "fast"),
        (48_000, 16_000, 1, "hq"),
        (44_100, 48_000, 2, "vhq"),
        (48_000, 44_100, 1, "hq"),
        (24_000, 22_050, 1, "hq"),
        (8_000, 24_000, 3, "hq"),
        (48_000, 48_000, 1, "hq"),
    ],
)
def test_streaming_is_bit_identical_to_one_shot_for_any_chunking(
    in_rate: int, out_rate: int, channels: int, quality: str
) -> None:
    x = _noise(60_000, channels)
    whole = resample(x, in_rate, out_rate, quality)
    assert whole.shape[0] == -(-60_000 * out_rate // in_rate)
    for trial in range(4):
        sizes = list(RNG.integers(1, 5001, size=40)) if trial else [1] * 3000  # tiny chunks too
        streamed = _stream(Resampler(in_rate, out_rate, quality, channels=channels), x, [int(s) for s in sizes])
        assert streamed.shape == whole.shape
        assert np.array_equal(streamed, whole), f"chunking {trial} changed the output"


def test_441_samples_per_20ms_give_exactly_960_after_the_first_call() -> None:
    r = Resampler(22_050, 48_000)
    x = _noise(441 * 60)
    counts = [len(r.process(x[i : i + 441])) for i in range(0, len(x), 441)]
    assert counts[0] == 960 - int(np.floor(r.latency_samples))  # the look-ahead, once
    assert set(counts[1:]) == {960}
    assert r.samples_out == sum(counts)
    assert r.latency_samples == design(22_050, 48_000).half_width * 48_000 / 22_050
    assert 0 < r.latency_seconds < 0.005  # ~3 ms: fixed, whatever the chunking
    assert len(r.flush()) == 60 * 960 - sum(counts)


def test_latency_is_fixed_whatever_the_chunk_size() -> None:
    for size in (1, 7, 441, 1000, 4999):
        r = Resampler(22_050, 48_000)
        fed = got = 0
        x = _noise(20_000)
        while fed + size <= len(x):
            got += len(r.process(x[fed : fed + size]))
            fed += size
            # every output whose look-ahead has arrived is out; none is held back
            assert got == max(0, -(-(fed - r.design.half_width) * 320 // 147))


@pytest.mark.parametrize(("in_rate", "out_rate"), [(22_050, 48_000), (48_000, 8_000), (44_100, 16_000)])
def test_kernel_matches_the_numpy_reference(in_rate: int, out_rate: int) -> None:
    x = _noise(30_000)
    ours = resample(x, in_rate, out_rate)
    ref = reference.resample(x, design(in_rate, out_rate))
    assert ours.shape == ref.shape
    assert np.max(np.abs(ours - ref)) < 2e-6


def test_presets_trade_taps_for_quality() -> None:
    taps = {q: design(22_050, 48_000, q).taps for q in QUALITIES}
    assert taps["fast"] < taps["hq"] < taps["vhq"]
    assert all(t % 16 == 0 for t in taps.values())  # whole SIMD vectors


def test_out_buffer_is_used_without_allocation() -> None:
    r = Resampler(22_050, 48_000)
    out = np.empty(r.max_output(441), np.float32)
    x = _noise(441 * 4)
    for i in range(4):
        got = r.process(x[i * 441 : (i + 1) * 441], out)
        assert np.shares_memory(got, out)
    with pytest.raises(SampleFormatError):
        r.process(x[:441], np.empty(10, np.float32))  # too small for 960


def test_int16_conversions_round_and_clip() -> None:
    pcm = np.array([-32768, -1, 0, 1, 32767], np.int16)
    f = int16_to_float32(pcm)
    assert f.dtype == np.float32 and f[0] == -1.0 and f[2] == 0.0
    assert np.array_equal(float32_to_int16(f), pcm)  # exact round trip
    loud = np.array([1.0, 1.5, -1.0, -2.0, 0.5 / 32768, 1.5 / 32768, -0.49 / 32768], np.float32)
    assert float32_to_int16(loud).tolist() == [32767, 32767, -32768, -32768, 0, 2, 0]
    with pytest.raises(NonFiniteSamples):
        float32_to_int16(np.array([0.1, np.nan], np.float32))
    with pytest.raises(SampleFormatError):
        int16_to_float32(np.zeros(3, np.float32))


def test_int16_conversion_is_the_exact_rounding_of_the_scaled_sample_and_finds_the_first_bad_one() -> None:
    rng = np.random.default_rng(7)
    x = (rng.standard_normal(20_000) * 0.6).astype(np.float32)
    x[:8] = np.array([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 32767.5, -32768.5], np.float32) / 32768  # ties: to even
    expected = np.clip(np.rint(x.astype(np.float64) * 32768), -32768, 32767).astype(np.int16)
    assert np.array_equal(float32_to_int16(x), expected)
    for bad in (np.nan, np.inf, -np.inf):
        y = x.copy()
        y[[4321, 9000]] = bad
        with pytest.raises(NonFiniteSamples) as caught:
            float32_to_int16(y)
        assert caught.value.index == 4321  # the first one


@pytest.mark.parametrize("rate", [0, 11_025, 96_000, -48_000, 48_000.0, "48000", None, True])
def test_unknown_rates_are_refused(rate: object) -> None:
    with pytest.raises(UnsupportedRate) as info:
        Resampler(rate, 48_000)  # type: ignore[arg-type]
    assert isinstance(info.value, ValueError)
    with pytest.raises(UnsupportedRate):
        Resampler(48_000, rate)  # type: ignore[arg-type]


def test_bad_chunks_are_refused_and_lose_nothing() -> None:
    x = _noise(4000)
    clean = Resampler(22_050, 48_000)
    expected = np.concatenate([clean.process(x), clean.flush()])
    r = Resampler(22_050, 48_000)
    first = r.process(x[:2000])
    bad_inputs: list[object] = [
        np.zeros(100, np.float64),
        np.zeros(100, np.int16),
        np.zeros((100, 2), np.float32),
        np.zeros((2, 2, 2), np.float32),
        [0.0] * 100,
        None,
    ]
    for bad in bad_inputs:
        with pytest.raises(SampleFormatError) as info:
            r.process(bad)  # type: ignore[arg-type]
        assert isinstance(info.value, RingAudioError)
    for poison in (np.nan, np.inf, -np.inf):
        chunk = x[2000:2100].copy()
        chunk[37] = poison
        with pytest.raises(NonFiniteSamples) as nonfinite:
            r.process(chunk)
        assert nonfinite.value.index == 37
    rest = np.concatenate([r.process(x[2000:]), r.flush()])
    assert np.array_equal(np.concatenate([first, rest]), expected)  # the refused chunks changed nothing
    with pytest.raises(StreamFinished):
        r.process(x[:10])
    with pytest.raises(StreamFinished):
        r.flush()
    r.reset()
    assert np.array_equal(np.concatenate([r.process(x), r.flush()]), expected)


def test_bad_quality_and_channels() -> None:
    with pytest.raises(UnsupportedRate):
        Resampler(22_050, 48_000, "ultra")
    for channels in (0, 65, 1.5, True):
        with pytest.raises(SampleFormatError):
            Resampler(22_050, 48_000, channels=channels)  # type: ignore[arg-type]


def test_empty_and_tiny_signals() -> None:
    assert resample(np.zeros(0, np.float32), 22_050, 48_000).shape == (0,)
    y = resample(np.ones(1, np.float32), 22_050, 48_000)
    assert y.shape == (3,) and np.all(np.isfinite(y))


def test_warm_compiles_everything_the_first_chunk_needs() -> None:
    from ringaudio.kernels import resample as kernels
    from ringaudio.resample import warm

    warm()
    dispatchers = (kernels.stream_step, kernels.to_int16)
    before = {d: len(d.signatures) for d in dispatchers}
    assert all(before.values())
    for channels in (1, 2):
        r = Resampler(22_050, 48_000, channels=channels)
        r.process(_noise(441, channels))
        r.flush()
    float32_to_int16(_noise(960))
    assert {d: len(d.signatures) for d in dispatchers} == before  # nothing compiled on the audio path
