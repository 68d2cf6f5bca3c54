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

Up-conversion by 2× or more (a voice's 22 050 or 16 000 Hz to the wire's 48 000) has a cheaper
two-stage form at ``fast`` and ``hq``, used where its C kernel is built (:func:`two_stage_available`):

1. a half-band interpolator to ``2 × in_rate``: its transition band sits symmetrically about the
   input's Nyquist frequency f_N, from ``1 - half_band`` to ``1 + half_band`` × f_N, so every other
   coefficient is zero and the even outputs are the input samples themselves; only the odd ones
   cost a dot product (``2 K1`` taps), with one coefficient vector that stays in cache;
2. a polyphase filter from ``2 × in_rate`` to ``out_rate`` whose transition band is a whole
   ``in_rate`` wide (the signal's images start only at ``2 in_rate - (1 + half_band) f_N``), so it
   needs only ``2 K2`` taps (20 at ``hq``) and a table of a few kilobytes.

For 22 050 → 48 000 at ``hq`` that is 441 × 190 + 960 × 20 multiply-adds per 20 ms instead of
960 × 128, with tables in L1 instead of 160 KB of rows read from L2, and a narrower transition
band (flat to 0.96 f_N, −116 dB from 1.04 f_N) than the one-stage ``hq``. The latency is
``K1 + K2 / 2`` input samples (``half_width``; 100 at ``hq``, 4.5 ms at 22 050 Hz): an output at
input time τ is computed once input ``τ + half_width`` has arrived, as for one stage.
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
    # The two-stage form's stage 1: flat to 1 - half_band, rejecting from 1 + half_band (× f_N),
    # by half_band_db. None: this preset has one stage only (vhq: two stages in float32 reach
    # about 135 dB, one stage 140).
    half_band: float | None = None
    half_band_db: float = 0.0


QUALITIES: Final = {
    "fast": Quality(passband=0.80, stopband=1.10, attenuation_db=80.0, half_band=0.10, half_band_db=80.0),
    "hq": Quality(passband=0.93, stopband=1.05, attenuation_db=110.0, half_band=0.04, half_band_db=116.0),
    "vhq": Quality(passband=0.95, stopband=1.03, attenuation_db=140.0),
}


@dataclass(frozen=True)
class TwoStage:
    """The two-stage form's filters, and stage 2's rows laid out for the kernel (blocks of 8 outputs)."""

    k1: int  # stage 1: the odd outputs' dot product has 2 K1 taps
    g: np.ndarray  # (2 K1,) float32: g[k] weighs input m - K1 + 1 + k for output 2m + 1
    up2: int  # stage 2: 2 in_rate -> out_rate is up2 / down2
    down2: int
    k2: int  # stage 2's half-width, in intermediate samples (even)
    table2: np.ndarray  # (up2, 2 K2) float32, as Design.table for stage 2
    blocks: np.ndarray  # (period / 8, span, 8) float32: lane l's row, shifted to where its window starts
    offsets: np.ndarray  # (period / 8,) int64: where block r's first output's window lies in the period
    shape: np.ndarray  # int64 words the kernel reads: up, down, half, K1, K2, up2, down2, period, advance, span


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
    table: np.ndarray  # (L, 2K) float32, C-contiguous (a two-stage design: stage 2's rows)
    stages: TwoStage | None = None  # the two-stage form, or None: one polyphase stage

    @property
    def taps(self) -> int:
        """Input samples one output's computation spans (one stage: its taps)."""
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


def two_stage_available() -> bool:
    """Whether the two-stage kernel is built (it is C only; without it every design has one stage)."""
    try:
        from ..kernels import _dsp  # type: ignore[attr-defined]  # noqa: F401
    except ImportError:
        return False
    return True


def design(in_rate: int, out_rate: int, quality: str = "hq", stages: int | None = None) -> Design:
    """The filters for one rate pair and preset (cached; the tables are read-only).

    ``stages``: 2 for the two-stage form (up-conversion by 2× or more only), 1 for one polyphase
    stage, None for two where they apply and the kernel is built.
    """
    # checked before the cache: 48000.0 == 48000 would otherwise find the int's entry
    in_rate = check_rate(in_rate, "in_rate")
    out_rate = check_rate(out_rate, "out_rate")
    if not isinstance(quality, str) or quality not in QUALITIES:
        raise UnsupportedRate(f"quality must be one of {sorted(QUALITIES)}, got {quality!r}")
    if stages not in (None, 1, 2):
        raise UnsupportedRate(f"stages must be 1, 2 or None, got {stages!r}")
    can = out_rate >= 2 * in_rate and QUALITIES[quality].half_band is not None
    if stages == 2 and not two_stage_available():
        raise UnsupportedRate("two stages need the C kernel, which was not built (no C compiler at install?)")
    if stages == 2 and not can:
        raise UnsupportedRate(
            "two stages need out_rate >= 2 x in_rate and a preset that has them (fast, hq), "
            f"got {in_rate} -> {out_rate}, {quality}"
        )
    if stages is None:
        stages = 2 if can and two_stage_available() else 1
    return _design_two(in_rate, out_rate, quality) if stages == 2 else _design(in_rate, out_rate, quality)


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
    n = kaiser_length(q.attenuation_db, transition / in_rate)
    half = max(8, -(-math.ceil(n / 2) // 8) * 8)  # taps a multiple of 16: whole SIMD vectors, no scalar tail
    beta = kaiser_beta(q.attenuation_db)
    table = _rows(up, half, cutoff / in_rate, beta)
    return Design(in_rate, out_rate, quality, up, down, half, cutoff, beta, table)


def kaiser_length(attenuation_db: float, transition: float) -> float:
    """Kaiser's filter length for a transition band ``transition`` cycles per sample wide."""
    return (attenuation_db - 7.95) / (2.285 * 2 * math.pi * transition)


def _window(t: np.ndarray, half: float, beta: float) -> np.ndarray:
    w: np.ndarray = np.i0(beta * np.sqrt(np.clip(1.0 - (t / half) ** 2, 0.0, 1.0))) / np.i0(beta)
    return w


def _rows(up: int, half: int, fc: float, beta: float) -> np.ndarray:
    """Polyphase rows: ``table[p, k] = h(p / up + half - 1 - k)``, ``h`` the windowed sinc cut at ``fc``
    cycles per input sample (read-only float32)."""
    phases = np.arange(up, dtype=np.float64)[:, None] / up
    k = np.arange(2 * half, dtype=np.float64)[None, :]
    t = phases + (half - 1) - k  # input-sample offsets of the taps from tau, in (-K, K]
    h = 2 * fc * np.sinc(2 * fc * t)
    table = np.ascontiguousarray((h * _window(t, half, beta)).astype(np.float32))
    table.flags.writeable = False
    return table


LANES: Final = 8
# Stage 2's ripple, unlike a long filter's, is spread over its whole passband (a 1 kHz tone meets
# all of it): its attenuation is the preset's and this much more, which costs it a few taps
STAGE2_MARGIN_DB: Final = 30.0  # outputs per block of the two-stage kernel


@lru_cache(maxsize=64)
def _design_two(in_rate: int, out_rate: int, quality: str) -> Design:
    q = QUALITIES[quality]
    assert q.half_band is not None
    a = q.half_band_db
    beta = kaiser_beta(a)
    mid = 2 * in_rate
    # stage 1: transition from 1 - half_band to 1 + half_band x f_N, symmetric about f_N = mid / 4
    stopband = 1 + q.half_band
    delta = q.half_band * in_rate / 2  # Hz either side of f_N
    k1 = max(4, math.ceil(kaiser_length(a, 2 * delta / mid) / 4))
    t = 2 * k1 - 1 - 2 * np.arange(2 * k1, dtype=np.float64)  # odd offsets from the odd output
    g = (np.sinc(t / 2) * _window(t, 2 * k1, beta)).astype(np.float32)
    g = np.ascontiguousarray((g + g[::-1]) / 2)  # exactly symmetric (the kernel folds its taps)
    g.flags.writeable = False
    # stage 2: flat to (2 - stopband) f_N, images from mid - stopband f_N on: a whole in_rate between
    ratio = Fraction(out_rate, mid)
    up2, down2 = ratio.numerator, ratio.denominator
    if up2 == down2:  # out_rate == 2 in_rate: stage 2 is a delay (one row, one tap of 1)
        k2 = 2
        table2 = np.zeros((1, 4), np.float32)
        table2[0, 1] = 1.0
        table2.flags.writeable = False
    else:
        a2 = q.attenuation_db + STAGE2_MARGIN_DB
        k2 = 2 * math.ceil(kaiser_length(a2, in_rate / mid) / 4)
        table2 = _rows(up2, k2, (3 - stopband) * in_rate / 2 / mid, kaiser_beta(a2))
    period = math.lcm(up2, LANES)
    advance = period * down2 // up2
    nb = period // LANES
    # lane l of block r: its window starts this many intermediate samples after lane 0's
    first = [r * LANES * down2 // up2 for r in range(nb)]
    shifts = [[(r * LANES + lane) * down2 // up2 - first[r] for lane in range(LANES)] for r in range(nb)]
    span = 2 * k2 + max(max(s) for s in shifts)
    blocks = np.zeros((nb, span, LANES), np.float32)
    offsets = np.zeros(nb, np.int64)
    for r in range(nb):
        offsets[r] = first[r]
        for lane in range(LANES):
            p = ((r * LANES + lane) * down2) % up2
            blocks[r, shifts[r][lane] : shifts[r][lane] + 2 * k2, lane] = table2[p]
    ratio = Fraction(out_rate, in_rate)
    up, down = ratio.numerator, ratio.denominator
    half = k1 + k2 // 2
    shape = np.array([up, down, half, k1, k2, up2, down2, period, advance, span], np.int64)
    for arr in (blocks, offsets, shape):
        arr.flags.writeable = False
    stages = TwoStage(k1, g, up2, down2, k2, table2, blocks, offsets, shape)
    return Design(in_rate, out_rate, quality, up, down, half, in_rate / 2, beta, table2, stages)
