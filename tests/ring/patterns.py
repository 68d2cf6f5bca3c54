"""Frame contents derived from the sequence number, and their checks (numba, so checking is cheap)."""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True)
def fill(frame, seq):  # type: ignore[no-untyped-def]
    """Frame ``seq``: every sample depends on both the sequence and its index."""
    flat = frame.reshape(-1)
    for i in range(flat.shape[0]):
        flat[i] = (seq * 7919 + i * 31) % 32749


@njit(cache=True)
def bad(frame, seq):  # type: ignore[no-untyped-def]
    """Number of samples of ``frame`` that are not those of frame ``seq``."""
    flat = frame.reshape(-1)
    n = 0
    for i in range(flat.shape[0]):
        if flat[i] != (seq * 7919 + i * 31) % 32749:
            n += 1
    return n


@njit(cache=True)
def bad_block(frames, seq0):  # type: ignore[no-untyped-def]
    """Number of frames of ``frames`` (from ``seq0`` on) that are not exactly theirs."""
    n = 0
    for j in range(frames.shape[0]):
        if bad(frames[j], seq0 + j):
            n += 1
    return n


def frame(seq: int, shape: tuple[int, ...] = (960,), dtype: str = "int16") -> np.ndarray:
    out = np.empty(shape, dtype=dtype)
    fill(out, seq)
    return out


# Compiled (or loaded from the cache) at import, for the common frame type: a reader that checks its
# first frame must not stall there while a writer in another process laps it.
bad_block(frame(0)[None, :], 0)
