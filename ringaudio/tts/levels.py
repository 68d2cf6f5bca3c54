"""Quality levels at frame boundaries: the worker's frames at the base rate in, frames at the current
level out (``audio.quality_levels``, e.g. 48 kHz / 20 ms or 24 kHz / 40 ms). Pure: NumPy only.

A lower level's rate divides the base rate (M = base / rate: 1, 2, 3); its frames are decimated by
a linear-phase low-pass FIR that is *centred* on each output sample: it reads ``half`` samples of
history and ``half`` samples of look-ahead, so its output has no delay. That is what lets the level
change at any frame boundary without losing or repeating audio: every level consumes the base
samples in order, each output frame covers exactly the base samples ``[pos, pos + n)`` of its
duration, whatever came before it. The stage therefore holds back ``half`` base samples (< 1 ms)
until the look-ahead exists (the end of the text supplies zeros).
"""

from __future__ import annotations

import numpy as np

from ..dsp import TAPS_PER_PHASE, lowpass
from ..errors import ConfigError

__all__ = ["LevelStage", "lowpass"]


class LevelStage:
    """Base-rate int16 frames in (:meth:`push`), frames at the current :attr:`level` out, each as
    ``(pcm int16, rate, frame_us)``. Set :attr:`level` (a ``(rate, frame_ms)`` pair) at any time:
    it applies from the next frame out."""

    def __init__(self, base_rate: int, level: tuple[int, int]) -> None:
        self.base_rate = base_rate
        self._check(level)
        self.level = level
        self._history = TAPS_PER_PHASE * 3  # enough for M up to 3
        self._buf = np.zeros(self._history, np.float64)  # what came before the text: silence
        self._pos = self._history  # the next base sample to go out

    def _check(self, level: tuple[int, int]) -> None:
        rate, frame_ms = level
        if rate <= 0 or self.base_rate % rate or self.base_rate // rate > 3 or frame_ms <= 0:
            raise ConfigError(f"a level of {rate} Hz / {frame_ms} ms does not divide {self.base_rate} Hz by 1, 2 or 3")

    def set_level(self, level: tuple[int, int]) -> None:
        self._check(level)
        self.level = level

    def push(self, frame: np.ndarray) -> list[tuple[np.ndarray, int, int]]:
        self._buf = np.concatenate([self._buf, frame.astype(np.float64)])
        return self._drain(final=False)

    def flush(self) -> list[tuple[np.ndarray, int, int]]:
        """The text is done: what is left, the last frame padded with silence."""
        need = self.base_rate * self.level[1] // 1000
        left = len(self._buf) - self._pos
        if left <= 0:
            return []
        pad = (-left) % need + TAPS_PER_PHASE * 3
        self._buf = np.concatenate([self._buf, np.zeros(pad)])
        out = self._drain(final=True)
        self._pos = len(self._buf)
        return out

    def _drain(self, final: bool) -> list[tuple[np.ndarray, int, int]]:
        out = []
        while True:
            rate, frame_ms = self.level
            m = self.base_rate // rate
            n = self.base_rate * frame_ms // 1000  # base samples this frame covers
            half = TAPS_PER_PHASE * m if m > 1 else 0
            if len(self._buf) - self._pos < n + half or (final and len(self._buf) - self._pos < n):
                break
            start = self._pos
            if m == 1:
                pcm = self._buf[start : start + n]
            else:
                window = self._buf[start - half : start + n + half]
                taps = np.lib.stride_tricks.sliding_window_view(window, 2 * half + 1)[::m]
                pcm = taps[: n // m] @ lowpass(m)
            out.append((np.clip(np.rint(pcm), -32768, 32767).astype(np.int16), rate, frame_ms * 1000))
            self._pos = start + n
        keep = self._pos - self._history  # drop what no filter will look at again
        if keep > 0:
            self._buf = self._buf[keep:]
            self._pos -= keep
        return out
