"""Polyphase windowed-sinc filter design, per rate pair and quality preset (pure NumPy, cached).

Output sample ``n`` sits at input time ``tau = n * M / L`` (``L/M`` is ``out_rate/in_rate`` in
lowest terms). With ``q = floor(tau)`` and phase ``p = n*M mod L``::

    y[n] = sum_{k=0}^{2K-1} table[p, k] * x[q - K + 1 + k],   table[p, k] = h(p/L + K - 1 - k)

where ``h`` is a Kaiser-windowed sinc low-pass of half-width ``K`` input samples, cut off just
below the lower of the two Nyquist frequencies. The filter is symmetric and centred on ``tau``, so
the output is time-aligned with the input; a streaming resampler needs ``K`` input samples of
look-ahead, which is its whole latency.

Presets are stated against the lower Nyquist frequency ``f_N``: the band up to ``passband`` × f_N
is flat, everything from ``stopband`` × f_N up is attenuated by ``attenuation_db``. Kaiser's
formulas turn that into a window and a length.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from typing import Final

import numpy as np

from ..errors import UnsupportedRate

RATES: Final = (8_000, 16_000, 22_050, 24_000, 32_000, 44_100, 48_000)


@dataclass(frozen=True, slots=True)
class Quality:
    passband: float  # edge of the flat band, × lower Nyquist
    stopband: float  # edge of the rejected band, × lower Nyquist
    attenuation_db: float


QUALITIES: Final = {
    "fast": Quality(passband=0.80, stopband=1.10, attenuation_db=80.0),
    "hq": Quality(passband=0.93, stopband=1.05, attenuation_db=110.0),
    "vhq": Quality(passband=0.95, stopband=1.03, attenuation_db=140.0),
}


@dataclass(frozen=True)
class Design:
    in_rate: int
    out_rate: int
    quality: str
    up: int  # L
    down: int  # M
    half_width: int  # K, input samples of look-ahead (and of history)
    cutoff: float  # Hz
    beta: float
    table: np.ndarray  # (L, 2K) float32, C-contiguous

    @property
    def taps(self) -> int:
        return 2 * self.half_width


def check_rate(rate: object, what: str = "rate") -> int:
    if isinstance(rate, bool) or not isinstance(rate, int | np.integer) or int(rate) not in RATES:
        raise UnsupportedRate(f"{what} must be one of {', '.join(map(str, RATES))} Hz, got {rate!r}")
    return int(rate)


def kaiser_beta(attenuation_db: float) -> float:
    a = attenuation_db
    if a > 50:
        return 0.1102 * (a - 8.7)
    if a >= 21:
        return float(0.5842 * (a - 21) ** 0.4 + 0.07886 * (a - 21))
    return 0.0


def design(in_rate: int, out_rate: int, quality: str = "hq") -> Design:
    """The polyphase table for one rate pair and preset (cached; the table is read-only)."""
    # checked before the cache: 48000.0 == 48000 would otherwise find the int's entry
    in_rate = check_rate(in_rate, "in_rate")
    out_rate = check_rate(out_rate, "out_rate")
    if not isinstance(quality, str) or quality not in QUALITIES:
        raise UnsupportedRate(f"quality must be one of {sorted(QUALITIES)}, got {quality!r}")
    return _design(in_rate, out_rate, quality)


@lru_cache(maxsize=64)
def _design(in_rate: int, out_rate: int, quality: str) -> Design:
    q = QUALITIES[quality]
    if in_rate == out_rate:  # the identity: y[n] = x[n] exactly, one sample of look-ahead
        identity = np.zeros((1, 2), np.float32)
        identity[0, 0] = 1.0
        identity.flags.writeable = False
        return Design(in_rate, out_rate, quality, 1, 1, 1, in_rate / 2, 0.0, identity)
    ratio = Fraction(out_rate, in_rate)
    up, down = ratio.numerator, ratio.denominator
    nyquist = min(in_rate, out_rate) / 2
    cutoff = (q.passband + q.stopband) / 2 * nyquist
    transition = (q.stopband - q.passband) * nyquist  # Hz
    # Kaiser: length N for a transition of dw rad/sample at the input rate
    dw = 2 * math.pi * transition / in_rate
    n = (q.attenuation_db - 7.95) / (2.285 * dw)
    half = max(8, -(-math.ceil(n / 2) // 8) * 8)  # taps a multiple of 16: whole SIMD vectors, no scalar tail
    beta = kaiser_beta(q.attenuation_db)
    phases = np.arange(up, dtype=np.float64)[:, None] / up
    k = np.arange(2 * half, dtype=np.float64)[None, :]
    t = phases + (half - 1) - k  # input-sample offsets of the taps from tau, in (-K, K]
    fc = cutoff / in_rate  # cycles per input sample
    h = 2 * fc * np.sinc(2 * fc * t)
    window = np.i0(beta * np.sqrt(np.clip(1.0 - (t / half) ** 2, 0.0, 1.0))) / np.i0(beta)
    table = np.ascontiguousarray((h * window).astype(np.float32))
    table.flags.writeable = False
    return Design(in_rate, out_rate, quality, up, down, half, cutoff, beta, table)
