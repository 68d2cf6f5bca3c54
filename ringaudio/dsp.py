"""Small signal-processing pieces shared by the worker's level stage and the client: NumPy only."""

from __future__ import annotations

import functools

import numpy as np

TAPS_PER_PHASE = 24  # half-length of a filter in samples of the lower rate (48 taps each side at M = 2)


@functools.cache
def lowpass(m: int) -> np.ndarray:
    """A linear-phase low-pass for a rate change by the integer ``m``: ``2 * TAPS_PER_PHASE * m + 1``
    taps, cutoff at 0.9 of the lower rate's Nyquist frequency, Kaiser window (β 8), unity DC gain."""
    half = TAPS_PER_PHASE * m
    n = np.arange(-half, half + 1)
    cutoff = 0.45 / m  # of the higher rate
    h: np.ndarray = 2 * cutoff * np.sinc(2 * cutoff * n) * np.kaiser(2 * half + 1, 8.0)
    return h / float(h.sum())


class Upsampler:
    """int16 at ``rate`` in, int16 at ``m × rate`` out, without delay: the filter's half-length is
    dropped at the start and supplied (from silence) by :meth:`flush`, so ``n`` samples in make
    exactly ``m × n`` out."""

    def __init__(self, m: int) -> None:
        self.m = m
        self.h = lowpass(m) * m  # zero-stuffing divides the level by m
        self.half = (len(self.h) - 1) // 2
        self._history = np.zeros(len(self.h) - 1)
        self._skip = self.half

    def prime(self, before: np.ndarray) -> None:
        """What came before, at the lower rate (the last samples of the stream it continues), instead
        of silence: no transient where the stream changed rate."""
        need = -(-(len(self.h) - 1) // self.m)
        up = np.zeros(need * self.m)
        tail = before[-need:].astype(np.float64)
        up[self.m * (need - len(tail)) :: self.m] = tail
        self._history = up[len(up) - (len(self.h) - 1) :]

    def finish_with(self, after: np.ndarray) -> np.ndarray:
        """The last ``half`` samples, computed from what comes next (at the lower rate) instead of
        silence; the upsampler is done then."""
        need = -(-self.half // self.m)
        ahead = np.zeros(need)
        ahead[: min(need, len(after))] = after[:need]
        return self.push(ahead)[: self.half]

    def push(self, x: np.ndarray) -> np.ndarray:
        up = np.zeros(len(x) * self.m)
        up[:: self.m] = x
        buf = np.concatenate([self._history, up])
        y = np.convolve(buf, self.h, "valid")
        self._history = buf[len(buf) - (len(self.h) - 1) :]
        if self._skip:
            dropped = min(self._skip, len(y))
            y, self._skip = y[dropped:], self._skip - dropped
        return np.clip(np.rint(y), -32768, 32767).astype(np.int16)

    def flush(self) -> np.ndarray:
        tail = self.push(np.zeros(-(-self.half // self.m), np.int16))
        return tail[: self.half]
