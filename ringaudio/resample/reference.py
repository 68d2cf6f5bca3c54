"""NumPy reference of the resampler's kernels: slow, float64, obviously right. Tests hold the numba
kernel (:mod:`ringaudio.kernels.resample`) and the two-stage C kernel (``ringaudio/kernels/_dsp.c``)
to it."""

from __future__ import annotations

import numpy as np

from .design import Design


def polyphase(x: np.ndarray, d: Design, n0: int, count: int) -> np.ndarray:
    """Outputs ``n0 .. n0+count-1`` of a mono signal ``x`` (input index 0 = ``x[0]``, zeros outside)."""
    return _rows(x, d.up, d.down, d.half_width, d.table, n0, count)


def _rows(x: np.ndarray, up: int, down: int, half: int, table: np.ndarray, n0: int, count: int) -> np.ndarray:
    n = np.arange(n0, n0 + count, dtype=np.int64)
    q = (n * down) // up
    p = (n * down) % up
    taps = 2 * half
    idx = q[:, None] - half + 1 + np.arange(taps)[None, :]
    padded = np.concatenate([np.zeros(taps), np.asarray(x, np.float64), np.zeros(taps)])
    windows = padded[idx + taps]
    result: np.ndarray = np.einsum("ij,ij->i", windows, table[p].astype(np.float64))
    return result


def half_band(x: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Stage 1 of the two-stage form: ``x`` at twice its rate, to the last sample its tail reaches."""
    k1 = len(g) // 2
    n = len(x)
    z = np.zeros(2 * (n + k1))
    z[0 : 2 * n : 2] = x
    padded = np.concatenate([np.zeros(k1), np.asarray(x, np.float64), np.zeros(2 * k1)])
    for k, gk in enumerate(np.asarray(g, np.float64)):  # z[2m+1] = sum_k g[k] x[m - K1 + 1 + k]
        z[1::2] += gk * padded[k + 1 : k + 1 + n + k1]
    return z


def resample(x: np.ndarray, d: Design) -> np.ndarray:
    """The whole one-shot output: every ``n`` with ``n * M / L < len(x)``."""
    total = -(-len(x) * d.up // d.down)
    two = d.stages
    if two is None:
        return polyphase(x, d, 0, total)
    return _rows(half_band(x, two.g), two.up2, two.down2, two.k2, two.table2, 0, total)
