"""Cutting a stream of float32 samples into exact int16 frames (pure; no clock, no I/O)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from ..errors import ConfigError, NonFiniteSamples
from ..resample.core import to_int16

try:
    from ..kernels._dsp import cut as _cut  # type: ignore[import-not-found]
except ImportError:  # no C compiler at install: the same cut in NumPy
    _cut = None


def _convert(x: np.ndarray, out: np.ndarray) -> None:
    """``float32_to_int16`` for arrays this module made (C-contiguous float32 in, int16 of its size
    out): the kernel alone, without the public function's checks."""
    bad = to_int16(x, out)
    if bad >= 0:
        raise NonFiniteSamples(int(bad))


class Framer:
    """Accumulates samples and hands out whole frames of ``frame_samples`` int16 samples.

    ``push_blocks`` yields every frame completed by the new samples as one ``(k, frame_samples)``
    block (a view of one reusable buffer: copy or write it before the next push; around a bad
    sample, the frames before it, then the error); ``push`` yields the same frames one by one.
    ``flush`` (``flush_blocks``) pads the last partial frame with silence.

    ``keep``: set to k before the next push, the last k frames of the block handed out last are
    moved to the front of the next block, before its new frames (a writer that holds back a frame
    for its successor keeps it here instead of copying every block aside).
    """

    def __init__(self, frame_samples: int) -> None:
        if frame_samples < 1:
            raise ConfigError(f"frame_samples must be positive, got {frame_samples!r}")
        self.frame_samples = frame_samples
        self._pending = np.zeros(frame_samples, np.float32)
        self._have = 0
        self._rows = np.zeros((0, frame_samples), np.int16)  # the frames a push completed, converted at once
        self._last = 0  # rows in the block handed out last
        self.keep = 0
        self.frames = 0

    def push(self, samples: np.ndarray) -> Iterator[np.ndarray]:
        for block in self.push_blocks(samples):  # the same cut, one frame at a time
            yield from block

    def _room(self, rows: int) -> int:
        """Make room for ``rows`` new frames after the kept ones (moved to the front): where they go."""
        keep = self.keep
        if not 0 <= keep <= self._last:
            raise ValueError(f"keep must be in 0..{self._last} (the last block's frames), got {keep!r}")
        old = self._rows
        if len(old) < keep + rows:
            self._rows = np.empty((max(keep + rows, 2 * len(old)), self.frame_samples), np.int16)
        if keep:
            self._rows[:keep] = old[self._last - keep : self._last]
        self.keep = 0
        return keep

    def _hand_out(self, row0: int, rows: int) -> np.ndarray:
        self.frames += rows
        self._last = row0 + rows
        return self._rows[: self._last]

    def push_blocks(self, samples: np.ndarray) -> Iterator[np.ndarray]:
        if samples.ndim != 1:  # (a voice's (1, n) or (n, 1) chunk: its samples in order)
            samples = samples.reshape(-1)
        fs = self.frame_samples
        n = len(samples)
        rows = (self._have + n) // fs  # frames these samples complete
        if _cut is None:
            yield from self._cut_numpy(samples, rows)
            return
        if samples.dtype != np.float32 or not samples.flags.c_contiguous:
            samples = np.ascontiguousarray(samples, np.float32)
        row0 = self._room(rows) if rows else 0
        bad = _cut(samples, self._pending, self._have, self._rows, row0)
        if bad is not None:  # the frames before the bad sample still go, then the error
            good, index = bad
            if good:  # (none: the bad sample is in the begun frame, which stays begun)
                self._have = 0
            yield from self._fail(row0, good, index)
        self._have = (self._have + n) % fs
        if rows:
            yield self._hand_out(row0, rows)

    def _fail(self, row0: int, good: int, index: int) -> Iterator[np.ndarray]:
        if row0 or good:
            yield self._hand_out(row0, good)
        raise NonFiniteSamples(index)

    def _cut_numpy(self, samples: np.ndarray, rows: int) -> Iterator[np.ndarray]:
        """push_blocks where the C kernel is not built: the same cut in NumPy."""
        fs = self.frame_samples
        n = len(samples)
        if rows == 0:
            self._pending[self._have : self._have + n] = samples
            self._have += n
            return
        row0 = self._room(rows)
        out = self._rows
        at, r = 0, row0
        if self._have:  # the frame begun by earlier samples
            at = fs - self._have
            self._pending[self._have :] = samples[:at]
            try:
                _convert(self._pending, out[r])
            except NonFiniteSamples as bad:  # nothing of it goes
                yield from self._fail(row0, 0, bad.index)
            self._have = 0
            r += 1
        block = samples[at : at + (rows - r + row0) * fs]
        if block.dtype != np.float32 or not block.flags.c_contiguous:
            block = np.ascontiguousarray(block, np.float32)
        try:
            _convert(block, out[r : row0 + rows].reshape(-1))
        except NonFiniteSamples as bad:  # the frames before the bad sample still go, then the error
            yield from self._fail(row0, r - row0 + bad.index // fs, bad.index)
        yield self._hand_out(row0, rows)
        at += len(block)
        if n > at:
            self._pending[: n - at] = samples[at:]
        self._have = n - at

    def flush_blocks(self) -> Iterator[np.ndarray]:
        if self._have:
            row0 = self._room(1)
            self._pending[self._have :] = 0.0
            self._have = 0
            _convert(self._pending, self._rows[row0])
            yield self._hand_out(row0, 1)

    def flush(self) -> Iterator[np.ndarray]:
        for block in self.flush_blocks():  # the same padded frame, as a frame
            yield from block

    @property
    def pending(self) -> int:
        return self._have
