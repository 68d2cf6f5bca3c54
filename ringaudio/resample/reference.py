"""NumPy reference of the polyphase kernel: slow, float64, obviously right. Tests hold the numba
kernel (:mod:`ringaudio.kernels.resample`) to it."""

from __future__ import annotations

import numpy as np

from .design import Design


def polyphase(x: np.ndarray, d: Design, n0: int, count: int) -> np.ndarray:
    """Outputs ``n0 .. n0+count-1`` of a mono signal ``x`` (input index 0 = ``x[0]``, zeros outside)."""
    n = np.arange(n0, n0 + count, dtype=np.int64)
    q = (n * d.down) // d.up
    p = (n * d.down) % d.up
    idx = q[:, None] - d.half_width + 1 + np.arange(d.taps)[None, :]
    padded = np.concatenate([np.zeros(d.taps), np.asarray(x, np.float64), np.zeros(d.taps)])
    windows = padded[idx + d.taps]
    result: np.ndarray = np.einsum("ij,ij->i", windows, d.table[p].astype(np.float64))
    return result


def resample(x: np.ndarray, d: Design) -> np.ndarray:
    """The whole one-shot output: every ``n`` with ``n * M / L < len(x)``."""
    total = -(-len(x) * d.up // d.down)
    return polyphase(x, d, 0, total)
