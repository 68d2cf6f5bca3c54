"""The streaming resampler: bit-identical to one-shot for any chunking, fixed latency, exact frame
counts, the numba kernel held to the NumPy reference, and typed errors for bad input."""

from __future__ import annotations

import importlib

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
    ("in_rate", "out_rate", "channels", "quality", "stages"),
    [
        (22_050, 48_000, 1, "hq", 2),
        (22_050, 48_000, 1, "hq", 1),
        (22_050, 48_000, 2, "hq", 2),
        (22_050, 48_000, 2, "hq", 1),
        (16_000, 48_000, 1, "fast", 2),
        (16_000, 48_000, 1, "fast", 1),
        (48_000, 16_000, 1, "hq", None),
        (44_100, 48_000, 2, "vhq", None),
        (48_000, 44_100, 1, "hq", None),
        (24_000, 22_050, 1, "hq", None),
        (8_000, 24_000, 3, "hq", 2),
        (24_000, 48_000, 1, "hq", 2),  # stage 2 is a delay
        (8_000, 44_100, 1, "hq", 2),  # stage 2's period is 441 blocks
        (48_000, 48_000, 1, "hq", None),
    ],
)
def test_streaming_is_bit_identical_to_one_shot_for_any_chunking(
    in_rate: int, out_rate: int, channels: int, quality: str, stages: int | None
) -> None:
    x = _noise(60_000, channels)

    def one_shot() -> np.ndarray:
        r = Resampler(in_rate, out_rate, quality, channels=channels, stages=stages)
        return np.concatenate([r.process(x), r.flush()])

    whole = one_shot()
    assert whole.shape[0] == -(-60_000 * out_rate // in_rate)
    if stages is None:
        assert np.array_equal(whole, resample(x, in_rate, out_rate, quality))
    for trial in range(4):
        sizes = list(RNG.integers(1, 5001, size=40)) if trial else [1] * 3000  # tiny chunks too
        r = Resampler(in_rate, out_rate, quality, channels=channels, stages=stages)
        assert (r.design.stages is not None) == (stages == 2)
        streamed = _stream(r, x, [int(s) for s in sizes])
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


@pytest.mark.parametrize(
    ("in_rate", "out_rate", "stages"),
    [
        (22_050, 48_000, 1),
        (22_050, 48_000, 2),
        (16_000, 48_000, 2),
        (24_000, 48_000, 2),
        (8_000, 44_100, 2),
        (48_000, 8_000, 1),
        (44_100, 16_000, 1),
    ],
)
def test_kernels_match_the_numpy_reference(in_rate: int, out_rate: int, stages: int) -> None:
    x = _noise(30_000)
    r = Resampler(in_rate, out_rate, stages=stages)
    ours = np.concatenate([r.process(x), r.flush()])
    ref = reference.resample(x, r.design)
    assert ours.shape == ref.shape
    assert np.max(np.abs(ours - ref)) < 2e-6


def test_two_stages_where_the_kernel_is_built_and_the_ratio_is_2_or_more() -> None:
    from ringaudio.resample import two_stage_available

    assert two_stage_available()  # the suite runs on a build with its C kernels
    assert design(22_050, 48_000).stages is not None  # the voice's rate to the wire's: two stages
    assert design(22_050, 48_000, "vhq").stages is None  # vhq has one stage (float32 reaches ~135 dB in two)
    assert design(44_100, 48_000).stages is None and design(48_000, 22_050).stages is None
    for bad in ((48_000, 16_000, "hq", 2), (44_100, 48_000, "hq", 2), (22_050, 48_000, "vhq", 2)):
        with pytest.raises(UnsupportedRate):
            design(*bad)  # type: ignore[arg-type]
    with pytest.raises(UnsupportedRate):
        design(22_050, 48_000, "hq", 3)
    two = design(22_050, 48_000, "hq", 2).stages
    assert two is not None and two.blocks.shape[0] * 8 == two.shape[7]  # the kernel's period, in blocks of 8
    assert not two.g.flags.writeable and not two.blocks.flags.writeable


def test_without_the_c_kernel_every_design_has_one_stage(monkeypatch: pytest.MonkeyPatch) -> None:
    designs = importlib.import_module("ringaudio.resample.design")  # the module, not the function
    monkeypatch.setattr(designs, "two_stage_available", lambda: False)
    assert design(22_050, 48_000).stages is None
    with pytest.raises(UnsupportedRate, match="C kernel"):
        design(22_050, 48_000, "hq", 2)


def test_the_c_kernel_refuses_a_design_whose_arrays_do_not_fit() -> None:
    from ringaudio.kernels import _dsp  # type: ignore[attr-defined]

    two = design(22_050, 48_000, "hq", 2).stages
    assert two is not None
    args = (two.g, two.blocks, two.offsets, two.shape)
    _dsp.Stream2(*args, 1)

    def shape(word: int, value: int) -> np.ndarray:
        changed = two.shape.copy()
        changed[word] = value
        return changed

    up, half, k2, span = (int(two.shape[i]) for i in (0, 2, 4, 9))
    for bad, error in (
        ((two.g[:-1], *args[1:], 1), ValueError),
        ((*args[:3], shape(9, span - 8), 1), ValueError),  # a span shorter than the blocks' rows
        ((*args[:3], shape(0, 2 * up), 1), ValueError),  # an overall ratio that is not stage 2's twice over
        ((*args[:3], shape(4, k2 + 1), 1), ValueError),  # an odd K2 (its half-width is not whole)
        ((*args[:3], shape(2, half + 1), 1), ValueError),
        ((two.offsets + 1, *args[1:], 1), TypeError),  # int64 where float32 goes
        ((*args, 0), ValueError),
        ((*args, 65), ValueError),
    ):
        with pytest.raises(error):
            _dsp.Stream2(*bad)
    s = _dsp.Stream2(*args, 2)
    with pytest.raises(TypeError):
        s.process(np.zeros(10, np.float32), np.zeros((30, 2), np.float32))  # mono frames for 2 channels
    assert s.process(np.zeros((10, 2), np.float32), np.zeros((30, 2), np.float32)) == 0  # still in the look-ahead


def test_presets_trade_taps_for_quality() -> None:
    one = {q: design(22_050, 48_000, q, stages=1).taps for q in QUALITIES}
    assert one["fast"] < one["hq"] < one["vhq"]
    assert all(t % 16 == 0 for t in one.values())  # whole SIMD vectors for the numba kernel
    two = [design(22_050, 48_000, q, stages=2) for q in ("fast", "hq")]
    assert two[0].taps < two[1].taps
    assert all(d.stages is not None and d.half_width == d.stages.k1 + d.stages.k2 // 2 for d in two)


@pytest.mark.parametrize("stages", [1, 2])
def test_out_buffer_is_used_without_allocation(stages: int) -> None:
    r = Resampler(22_050, 48_000, stages=stages)
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


def test_the_c_and_numba_int16_conversions_agree_bit_for_bit() -> None:
    from ringaudio.kernels import _dsp  # type: ignore[attr-defined]
    from ringaudio.kernels import resample as kernels

    rng = np.random.default_rng(11)
    for n in (0, 1, 7, 8, 960, 4803):
        x = (rng.standard_normal(n) * 0.7).astype(np.float32)  # clipped beyond +-1
        x[: min(n, 8)] = (np.array([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 32767.5, -32768.5], np.float32) / 32768)[:n]
        ours, theirs = np.empty(n, np.int16), np.empty(n, np.int16)
        assert _dsp.to_int16(x, ours) == kernels.to_int16(x, theirs) == -1
        assert np.array_equal(ours, theirs)
        for bad in (np.nan, np.inf, -np.inf):
            for at in {0, n // 2, n - 1} if n else set():
                y = x.copy()
                y[at] = bad
                assert _dsp.to_int16(y, ours) == kernels.to_int16(y, theirs) == at
    with pytest.raises(TypeError):
        _dsp.to_int16(np.zeros(4, np.float32), np.zeros(3, np.int16))


@pytest.mark.parametrize("rate", [0, 11_025, 96_000, -48_000, 48_000.0, "48000", None, True])
def test_unknown_rates_are_refused(rate: object) -> None:
    with pytest.raises(UnsupportedRate) as info:
        Resampler(rate, 48_000)  # type: ignore[arg-type]
    assert isinstance(info.value, ValueError)
    with pytest.raises(UnsupportedRate):
        Resampler(48_000, rate)  # type: ignore[arg-type]


@pytest.mark.parametrize("stages", [1, 2])
def test_bad_chunks_are_refused_and_lose_nothing(stages: int) -> None:
    x = _noise(4000)
    clean = Resampler(22_050, 48_000, stages=stages)
    expected = np.concatenate([clean.process(x), clean.flush()])
    r = Resampler(22_050, 48_000, stages=stages)
    out = np.empty(r.max_output(100), np.float32)
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
        for target in (None, out):  # with an out buffer the kernel is asked first: its refusal is typed too
            with pytest.raises(SampleFormatError) as info:
                r.process(bad, target)  # type: ignore[arg-type]
            assert isinstance(info.value, RingAudioError)
    frozen = np.empty(400, np.float32)
    frozen.flags.writeable = False
    for bad_out in (np.empty(100, np.float64), np.empty(400, np.float32)[::2], np.empty(10, np.float32), frozen):
        with pytest.raises(SampleFormatError):
            r.process(x[2000:2100], bad_out)  # not float32, not contiguous, too small, read-only
    for bad_chunk in (np.float32(0.5), np.array(0.5, np.float32)):
        with pytest.raises(SampleFormatError):
            r.process(bad_chunk, out)  # type: ignore[arg-type]
    for poison in (np.nan, np.inf, -np.inf):
        chunk = x[2000:2100].copy()
        chunk[37] = poison
        for target in (None, out):
            with pytest.raises(NonFiniteSamples) as nonfinite:
                r.process(chunk, target)
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

    pairs = ((22_050, 48_000), (48_000, 16_000))  # two stages (C) and one (numba)
    warm(pairs)
    from ringaudio.resample.core import to_int16

    # the numba kernels the audio path calls (float32 -> int16 is C where built)
    dispatchers = (kernels.stream_step, *([to_int16] if to_int16 is kernels.to_int16 else []))
    before = {d: len(d.signatures) for d in dispatchers}
    assert all(before.values())
    for pair in pairs:
        for channels in (1, 2):
            r = Resampler(*pair, channels=channels)
            r.process(_noise(441, channels))
            r.flush()
    float32_to_int16(_noise(960))
    assert {d: len(d.signatures) for d in dispatchers} == before  # nothing compiled on the audio path
