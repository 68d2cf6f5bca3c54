"""Streaming and one-shot resampling between the speech and wire sample rates.

``Resampler(in_rate, out_rate, quality="hq", channels=1)`` takes float32 chunks of any size
(``(n,)`` mono or ``(n, channels)``), returns every output sample it can already compute, and
``flush()`` returns the rest. The concatenated output is bit-identical to :func:`resample` of the
whole signal, whatever the chunking; it is time-aligned with the input, and the price of that is a
fixed look-ahead of ``latency_samples`` output samples (``latency_seconds``).

Real-time rules: one kernel call per chunk (numba for one stage, C for the two-stage form);
nothing is allocated but the returned array (pass ``out=`` to avoid that too:
:meth:`Resampler.max_output` sizes it); NaN and infinity are refused, not spread through the
filter, and a refused chunk leaves the stream as it was.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np

from ..errors import NonFiniteSamples, SampleFormatError, StreamFinished
from .design import RATES, Design, design

try:
    from ..kernels import _dsp  # type: ignore[attr-defined]
except ImportError:  # no C compiler at install: every design has one stage (design() knows)
    _dsp = None

_numba: ModuleType | None = None


def _kernels() -> ModuleType:
    """The one-stage numba kernels, imported on first use: a process whose streams all have two
    stages (a worker with a 22 050 or 16 000 Hz voice, where the C kernel is built) never loads
    numba and LLVM (about 120 MB)."""
    global _numba
    if _numba is None:
        from ..kernels import resample

        _numba = resample
    return _numba


def to_int16(x: np.ndarray, out: np.ndarray) -> int:
    """float32 -> int16 into ``out``: -1, or the index of the first non-finite sample (numba's kernel
    where the C one is not built)."""
    return int(_kernels().to_int16(x, out))


if _dsp is not None and hasattr(_dsp, "to_int16"):  # C where built: a call costs less, and no numba
    to_int16 = _dsp.to_int16

_F32 = np.dtype(np.float32)

__all__ = ["RATES", "Resampler", "float32_to_int16", "int16_to_float32", "resample", "warm"]


class Resampler:
    """A streaming polyphase resampler for one stream of ``channels`` channels."""

    def __init__(
        self, in_rate: int, out_rate: int, quality: str = "hq", *, channels: int = 1, stages: int | None = None
    ) -> None:
        if isinstance(channels, bool) or not isinstance(channels, int) or not 1 <= channels <= 64:
            raise SampleFormatError(f"channels must be an int in 1..64, got {channels!r}")
        self.design: Design = design(in_rate, out_rate, quality, stages)
        self.in_rate = self.design.in_rate
        self.out_rate = self.design.out_rate
        self.quality = quality
        self.channels = channels
        self._finished = False
        self.reset()

    def reset(self) -> None:
        """Forget the stream: the next chunk starts a new one (sequence and history from zero)."""
        half = self.design.half_width
        self._finished = False
        two = self.design.stages
        if two is not None:  # the C kernel holds the history at both rates
            self._kernel = _dsp.Stream2(two.g, two.blocks, two.offsets, two.shape, self.channels)
            return
        self._kernel = None
        k = _kernels()
        self._hist = np.zeros((self.channels, max(4096, 4 * half)), np.float32)
        self._state = np.zeros(4, np.int64)  # base, fill, next output, inputs so far
        self._state[k.BASE] = -(half - 1)  # column 0 is the input index before the stream's zeros
        self._state[k.FILL] = half - 1

    @property
    def _next(self) -> int:
        return int(self._state[_kernels().NEXT]) if self._kernel is None else int(self._kernel.next)

    @property
    def _total_in(self) -> int:
        return int(self._state[_kernels().TOTAL]) if self._kernel is None else int(self._kernel.total)

    # -- what the caller may want to know --------------------------------------------------------
    @property
    def latency_samples(self) -> float:
        """Output samples of look-ahead: the stream's output lags its input by this much."""
        return self.design.half_width * self.out_rate / self.in_rate

    @property
    def latency_seconds(self) -> float:
        return self.design.half_width / self.in_rate

    @property
    def samples_out(self) -> int:
        """Output samples returned so far."""
        return self._next

    def max_output(self, n_in: int) -> int:
        """An upper bound of what :meth:`process` returns for a chunk of ``n_in`` samples."""
        return -(-n_in * self.design.up // self.design.down) + 1

    # -- streaming ------------------------------------------------------------------------------
    def process(self, chunk: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Feed a chunk; return the output samples that can now be computed (maybe none)."""
        if self._finished:
            raise StreamFinished("this resampler was flushed; call reset() to start a new stream")
        kernel = self._kernel
        if (
            kernel is not None
            and chunk.__class__ is np.ndarray
            and chunk.ndim == 1
            and chunk.dtype == _F32
            and self.channels == 1
            and (out is None or out.__class__ is np.ndarray)
        ):
            # the common case in one call: the kernel checks the buffers (if it refuses them, the long
            # way below says what is wrong)
            if out is None:
                out = np.empty(-(-len(chunk) * self.design.up // self.design.down) + 1, _F32)
            try:
                r = kernel.process(chunk, out)
            except (TypeError, ValueError, BufferError):
                pass
            else:
                if r >= 0:
                    return out[:r] if out.ndim == 1 else out.reshape(-1)[:r]
        frames = self._as_frames(chunk)
        target = self._target(out, self.max_output(frames.shape[0]))
        return self._step(frames, target)

    def flush(self, out: np.ndarray | None = None) -> np.ndarray:
        """Return the last output samples (the look-ahead, computed against silence) and finish."""
        if self._finished:
            raise StreamFinished("this resampler was already flushed")
        d = self.design
        # K samples of silence after the end bring exactly the outputs up to the last input's instant
        end = -(-self._total_in * d.up // d.down)
        target = self._target(out, max(0, end - self._next))
        result = self._step(np.zeros((d.half_width, self.channels), np.float32), target)
        self._finished = True
        return result

    # -- internals ------------------------------------------------------------------------------
    def _as_frames(self, chunk: Any) -> np.ndarray:
        if not isinstance(chunk, np.ndarray):
            raise SampleFormatError(f"audio must be a numpy array, got {type(chunk).__name__}")
        if chunk.dtype != np.float32:
            raise SampleFormatError(f"audio must be float32, got {chunk.dtype} (int16_to_float32() converts PCM)")
        if chunk.ndim == 1 and self.channels == 1:
            return chunk.reshape(-1, 1)
        if chunk.ndim == 2 and chunk.shape[1] == self.channels:
            return chunk
        want = "(n,) or (n, 1)" if self.channels == 1 else f"(n, {self.channels})"
        raise SampleFormatError(f"audio of shape {chunk.shape} does not fit {want}")

    def _target(self, out: np.ndarray | None, count: int) -> np.ndarray:
        if out is None:
            return np.empty((count, self.channels), np.float32)
        if (
            not isinstance(out, np.ndarray)
            or out.dtype != np.float32
            or not out.flags.c_contiguous
            or not out.flags.writeable
        ):
            raise SampleFormatError("out must be a writable C-contiguous float32 array")
        if out.size % self.channels or (out.ndim > 1 and out.shape[-1] != self.channels):
            raise SampleFormatError(f"out of shape {out.shape} does not hold {self.channels} channels")
        return out.reshape(-1, self.channels)

    def _step(self, frames: np.ndarray, target: np.ndarray) -> np.ndarray:
        d = self.design
        if d.stages is not None:
            return self._step_two(frames, target)
        k = _kernels()
        while True:
            r = k.stream_step(self._hist, self._state, frames, d.table, d.up, d.down, d.half_width, target)
            if r != k.NEED_ROOM:
                break
            grown = np.zeros((self.channels, 2 * self._hist.shape[1] + frames.shape[0]), np.float32)
            grown[:, : self._hist.shape[1]] = self._hist
            self._hist = grown
        return self._result(r, target, k.OUT_TOO_SMALL, k.NON_FINITE)

    def _step_two(self, frames: np.ndarray, target: np.ndarray) -> np.ndarray:
        assert self._kernel is not None
        r = self._kernel.process(np.ascontiguousarray(frames), target)
        return self._result(r, target, _dsp.OUT_TOO_SMALL, _dsp.NON_FINITE)

    def _result(self, r: int, target: np.ndarray, too_small: int, non_finite: int) -> np.ndarray:
        """Either kernel's result: the outputs written to ``target``, or its refusal as a typed error."""
        if r == too_small:
            raise SampleFormatError(f"out has room for {target.shape[0]} frames, more are ready")
        if r <= non_finite:
            raise NonFiniteSamples(non_finite - r)
        result = target[:r]
        return result.reshape(r) if self.channels == 1 else result


def resample(x: np.ndarray, in_rate: int, out_rate: int, quality: str = "hq") -> np.ndarray:
    """Resample a whole float32 signal ((n,) or (n, channels)) in one call, time-aligned."""
    channels = x.shape[1] if isinstance(x, np.ndarray) and x.ndim == 2 else 1
    r = Resampler(in_rate, out_rate, quality, channels=channels)
    head = r.process(x)
    tail = r.flush()
    return np.concatenate([head, tail])


def int16_to_float32(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """PCM int16 to float32 in [-1, 1): ``x / 32768``."""
    if not isinstance(x, np.ndarray) or x.dtype != np.int16:
        raise SampleFormatError("int16_to_float32 takes an int16 array")
    result: np.ndarray = np.multiply(x, np.float32(1 / 32768), out=out, dtype=np.float32)
    return result


def float32_to_int16(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """float32 to PCM int16: ``round(x * 32768)`` (half to even), clipped to [-32768, 32767]."""
    if not isinstance(x, np.ndarray) or x.dtype != np.float32:
        raise SampleFormatError("float32_to_int16 takes a float32 array")
    if out is None:
        out = np.empty(x.shape, np.int16)
    elif out.dtype != np.int16 or out.shape != x.shape or not out.flags.c_contiguous:
        raise SampleFormatError(f"out must be a C-contiguous int16 array of shape {x.shape}")
    bad = to_int16(np.ascontiguousarray(x), out)
    if bad >= 0:
        raise NonFiniteSamples(int(bad))
    return out


def warm(pairs: tuple[tuple[int, int], ...] = ((22_050, 48_000),), quality: str = "hq") -> None:
    """Compile (or load from numba's cache) the kernels and design the filters, off the audio path."""
    for in_rate, out_rate in pairs:
        for channels in (1, 2):
            r = Resampler(in_rate, out_rate, quality, channels=channels)
            shape = (64,) if channels == 1 else (64, channels)
            r.process(np.zeros(shape, np.float32))
            r.flush()
    float32_to_int16(np.zeros(4, np.float32))
