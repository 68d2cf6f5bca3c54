"""Cutting a stream of float32 samples into exact int16 frames (pure; no clock, no I/O)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from ..errors import ConfigError
from ..resample import float32_to_int16


class Framer:
    """Accumulates samples and hands out whole frames of ``frame_samples`` int16 samples.

    ``push`` yields every frame completed by the new samples (views of one reusable buffer: copy
    or write them before the next ``push``); ``flush`` pads the last partial frame with silence.
    """

    def __init__(self, frame_samples: int) -> None:
        if frame_samples < 1:
            raise ConfigError(f"frame_samples must be positive, got {frame_samples!r}")
        self.frame_samples = frame_samples
        self._pending = np.zeros(frame_samples, np.float32)
        self._have = 0
        self._frame = np.zeros(frame_samples, np.int16)
        self.frames = 0

    def push(self, samples: np.ndarray) -> Iterator[np.ndarray]:
        at = 0
        n = len(samples)
        while at < n:
            take = min(self.frame_samples - self._have, n - at)
            self._pending[self._have : self._have + take] = samples[at : at + take]
            self._have += take
            at += take
            if self._have == self.frame_samples:
                self._have = 0
                self.frames += 1
                yield float32_to_int16(self._pending, self._frame)

    def flush(self) -> Iterator[np.ndarray]:
        if self._have:
            self._pending[self._have :] = 0.0
            self._have = 0
            self.frames += 1
            yield float32_to_int16(self._pending, self._frame)

    @property
    def pending(self) -> int:
        return self._have
