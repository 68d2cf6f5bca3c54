"""Measured quality of the hq preset against analytic signals, for every pair of supported rates."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from ringaudio.resample import RATES, Resampler, design

# every pair in its default form, and the pairs that have two stages also in their one-stage form
PAIRS = [(a, b, None) for a, b in itertools.product(RATES, RATES) if a != b]
PAIRS += [(a, b, 1) for a, b, _ in PAIRS if b >= 2 * a]
IDS = [f"{a}-{b}" + ("" if s is None else f"-{s}") for a, b, s in PAIRS]


def resample(x: np.ndarray, in_rate: int, out_rate: int, stages: int | None) -> np.ndarray:
    r = Resampler(in_rate, out_rate, stages=stages)
    return np.concatenate([r.process(x), r.flush()])


def _tone(freq: float, rate: int, n: int) -> np.ndarray:
    return np.sin(2 * np.pi * freq * np.arange(n) / rate)


def _fit(y: np.ndarray, freq: float, rate: int) -> tuple[float, np.ndarray]:
    """Amplitude of the tone at ``freq`` in ``y`` (least squares) and what is left without it."""
    t = np.arange(len(y)) / rate
    basis = np.stack([np.sin(2 * np.pi * freq * t), np.cos(2 * np.pi * freq * t)], axis=1)
    coef, *_ = np.linalg.lstsq(basis, y.astype(np.float64), rcond=None)
    return float(np.hypot(*coef)), y - basis @ coef


def _steady(y: np.ndarray, in_rate: int, out_rate: int) -> np.ndarray:
    """Drop the filter's start and end transients (its half-width, in output samples, with margin)."""
    edge = int(max(design(in_rate, out_rate, stages=s).half_width for s in (None, 1)) * out_rate / in_rate) * 2 + 16
    return y[edge:-edge]


def _db(ratio: float) -> float:
    return 20 * np.log10(ratio)


@pytest.mark.parametrize(("in_rate", "out_rate", "stages"), PAIRS, ids=IDS)
def test_1khz_snr_against_the_analytic_sine(in_rate: int, out_rate: int, stages: int | None) -> None:
    n = in_rate // 4
    x = _tone(1000, in_rate, n).astype(np.float32)
    y = resample(x, in_rate, out_rate, stages).astype(np.float64)
    assert len(y) == -(-n * out_rate // in_rate)
    exact = _tone(1000, out_rate, len(y))  # float64: the analytic sine at the output instants
    err = _steady(y - exact, in_rate, out_rate)
    sig = _steady(exact, in_rate, out_rate)
    snr = 10 * np.log10(np.sum(sig**2) / np.sum(err**2))
    assert snr >= 120, f"{in_rate}->{out_rate}: SNR {snr:.1f} dB"


@pytest.mark.parametrize(("in_rate", "out_rate", "stages"), PAIRS, ids=IDS)
def test_passband_is_flat_and_wide(in_rate: int, out_rate: int, stages: int | None) -> None:
    nyquist = min(in_rate, out_rate) / 2
    n = in_rate // 5
    worst = 0.0
    for frac in np.linspace(0.02, 0.90, 12):
        f = frac * nyquist
        y = _steady(resample(_tone(f, in_rate, n).astype(np.float32), in_rate, out_rate, stages), in_rate, out_rate)
        gain, _ = _fit(y, f, out_rate)
        worst = max(worst, abs(_db(gain)))
    assert worst <= 0.01, f"{in_rate}->{out_rate}: passband ripple {worst:.4f} dB"
    f = 0.93 * nyquist  # the response falls monotonically past the passband: -3 dB lies beyond 0.93
    y = _steady(resample(_tone(f, in_rate, n).astype(np.float32), in_rate, out_rate, stages), in_rate, out_rate)
    gain, _ = _fit(y, f, out_rate)
    assert _db(gain) >= -3.0, f"{in_rate}->{out_rate}: {_db(gain):.2f} dB at 0.93 Nyquist"


@pytest.mark.parametrize(("in_rate", "out_rate", "stages"), PAIRS, ids=IDS)
def test_images_and_aliases_of_a_tone_near_nyquist(in_rate: int, out_rate: int, stages: int | None) -> None:
    f = 0.95 * min(in_rate, out_rate) / 2
    x = _tone(f, in_rate, in_rate // 4).astype(np.float32)
    y = _steady(resample(x, in_rate, out_rate, stages), in_rate, out_rate)
    gain, rest = _fit(y, f, out_rate)
    # everything but the tone itself - images, aliases and noise - relative to a full-scale tone
    level = _db(np.sqrt(2 * np.mean(rest**2)))
    assert gain > 0.1
    assert level <= -110, f"{in_rate}->{out_rate}: {level:.1f} dB beside a tone at 0.95 Nyquist"


def test_9500_hz_from_22050_to_16000_is_rejected() -> None:
    x = _tone(9500, 22_050, 22_050 // 2).astype(np.float32)
    y = _steady(resample(x, 22_050, 16_000, None), 22_050, 16_000)
    level = _db(np.sqrt(2 * np.mean(y.astype(np.float64) ** 2)))
    assert level <= -110, f"{level:.1f} dB of a 9.5 kHz tone leaks into 16 kHz output"
