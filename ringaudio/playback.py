"""Local playback: a jitter buffer between the engine's frames and the sound card, and two sinks.

The sound card pulls samples at its own clock from a PortAudio callback; frames arrive from the
engine at the worker's pace. :class:`JitterBuffer` sits between them: playback starts once
``target`` frames are buffered, an empty buffer plays silence and counts an *underrun* (then
re-buffers to ``target``), and a full one makes the producer wait and counts an *overrun* (under
``block`` the ring then fills and the worker waits: nothing is lost). The buffer is pure (no
device), so tests drive it directly.

Real-time rules of the callback (:meth:`JitterBuffer.pull`, :meth:`DeviceSink._callback`): it runs
on PortAudio's audio thread, and whatever time it loses is heard as a click, so it never waits for
a lock (the producer may hold one for as long as the scheduler likes), never allocates a buffer (a
collection could start there), and does no I/O. The buffer is a preallocated ring of samples with
one writer (``push``) and one reader (``pull``): each side moves only its own counter, published
after its copy, so neither needs the other's lock. Only a producer waiting for room takes a lock;
the callback wakes it if it can take that lock without waiting, and a wake-up missed that way costs
the producer at most ``RECHECK_S``. The flags PortAudio hands the callback (the card found nothing
to play, or the stream lost samples) are counted on the :class:`DeviceSink`.
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import threading
import time
import wave
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from .errors import ConfigError, NoAudioDevice

__all__ = ["DeviceSink", "JitterBuffer", "NoAudioDevice", "Sink", "WavSink", "check_output_device"]

RECHECK_S = 0.01  # the longest a waiting producer sleeps between looks (a wake-up may be missed)


class Sink(Protocol):
    def write(self, pcm: np.ndarray) -> None: ...

    def close(self) -> None: ...


class _Signal:
    """``threading.Event``'s ``set``/``is_set``/``wait``, but ``set`` never waits for a lock (the
    callback sets it)."""

    def __init__(self, wake: Callable[[], None], wait_for: Callable[[Callable[[], bool], float | None], bool]) -> None:
        self._set = False
        self._wake = wake
        self._wait_for = wait_for

    def set(self) -> None:
        self._set = True
        self._wake()

    def is_set(self) -> bool:
        return self._set

    def wait(self, timeout: float | None = None) -> bool:
        return self._wait_for(self.is_set, timeout)


class JitterBuffer:
    def __init__(self, frame_samples: int, target_frames: int = 3, capacity_frames: int = 10) -> None:
        if not 1 <= target_frames <= capacity_frames:
            raise ConfigError(f"need 1 <= target_frames <= capacity_frames, got {target_frames!r}, {capacity_frames!r}")
        self.frame_samples = frame_samples
        self.target = target_frames * frame_samples
        self.capacity = capacity_frames * frame_samples
        self.underruns = 0  # times the card found the buffer empty mid-stream
        self.overruns = 0  # times a producer found it full and had to wait
        self.frames_in = 0
        self._ring = np.zeros(self.capacity, np.int16)
        self._written = 0  # samples pushed: only push() moves it, after its copy
        self._read = 0  # samples played: only pull() moves it, after its copy
        self._playing = False  # only pull() changes it
        self._finished = False  # set by finish(), after the last push
        self._waiting = False  # a producer is (about to be) asleep on _cond
        self._cond = threading.Condition(threading.Lock())
        self.drained = _Signal(self._wake, self._wait_for)

    @property
    def level(self) -> int:
        """Samples buffered."""
        return self._written - self._read

    @property
    def samples_out(self) -> int:
        """Samples played (silence not counted)."""
        return self._read

    def push(self, pcm: np.ndarray, timeout: float | None = None) -> bool:
        """Add one frame (copied); waits while full. False if it is still full after ``timeout``."""
        frame = np.asarray(pcm).reshape(-1)
        n = len(frame)
        if self.capacity - self.level < n:
            self.overruns += 1
            if not self._wait_for(lambda: self.capacity - self.level >= n, timeout):
                return False
        at = self._written % self.capacity
        first = min(n, self.capacity - at)
        np.copyto(self._ring[at : at + first], frame[:first], casting="unsafe")
        np.copyto(self._ring[: n - first], frame[first:], casting="unsafe")
        self._written += n  # published after the copy: the callback never reads a half-written frame
        self.frames_in += 1
        return True

    def finish(self) -> None:
        """No more frames: play out what is buffered (even below ``target``), then set ``drained``."""
        self._finished = True
        if self.level == 0:
            self.drained.set()

    def pull(self, out: np.ndarray) -> None:
        """Fill ``out`` (int16 samples) for the card: buffered audio, then silence if there is none.

        The callback's path: no lock, no allocation (copies into ``out``)."""
        n = len(out)
        finished = self._finished  # before the level: a finished producer has pushed its last frame
        level = self._written - self._read
        filled = 0
        if not self._playing and (level >= self.target or finished):
            self._playing = True
        if self._playing:
            filled = min(n, level)
            at = self._read % self.capacity
            first = min(filled, self.capacity - at)
            np.copyto(out[:first], self._ring[at : at + first])
            np.copyto(out[first:filled], self._ring[: filled - first])
            self._read += filled  # published after the copy: the producer may now write there
            if filled < n:
                if finished:
                    self.drained.set()
                else:
                    self.underruns += 1
                    self._playing = False  # re-buffer to target before playing on
            self._wake()
        out[filled:] = 0

    def stats(self) -> dict[str, int]:
        return {
            "frames": self.frames_in,
            "underruns": self.underruns,
            "overruns": self.overruns,
            "samples_played": self.samples_out,
        }

    def _wake(self) -> None:
        """Wake a waiting producer if the lock is free now; never wait for it (the callback calls this)."""
        if self._waiting and self._cond.acquire(blocking=False):
            try:
                self._cond.notify_all()
            finally:
                self._cond.release()

    def _wait_for(self, ready: Callable[[], bool], timeout: float | None) -> bool:
        """The producer's wait, in slices of RECHECK_S: a wake-up the callback could not deliver
        (the lock was held) is never waited for longer than that."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            self._waiting = True
            try:
                while not ready():
                    left = RECHECK_S if deadline is None else min(RECHECK_S, deadline - time.monotonic())
                    if left <= 0:
                        return False
                    self._cond.wait(left)
                return True
            finally:
                self._waiting = False


class WavSink:
    """16-bit mono WAV file."""

    def __init__(self, path: str | Path, sample_rate: int) -> None:
        self.path = Path(path)
        self._wav = wave.open(str(self.path), "wb")  # noqa: SIM115 - closed by close()
        self._wav.setnchannels(1)
        self._wav.setsampwidth(2)
        self._wav.setframerate(sample_rate)
        self.frames = 0

    def write(self, pcm: np.ndarray) -> None:
        self._wav.writeframes(np.ascontiguousarray(pcm, dtype="<i2").tobytes())
        self.frames += 1

    def close(self) -> None:
        self._wav.close()


def _jack_litter() -> None:
    """PortAudio probes JACK when it starts, and libjack leaves a metadata folder in /dev/shm
    (``jack_db-<uid>``) even with no JACK server; take it away at exit if it was not there before."""
    litter = Path("/dev/shm") / f"jack_db-{os.getuid()}" if hasattr(os, "getuid") else None
    if litter is None or litter.exists():
        return

    def clean() -> None:
        shutil.rmtree(litter, ignore_errors=True)

    atexit.register(clean)


def _sounddevice() -> Any:
    if "sounddevice" not in sys.modules:
        _jack_litter()
    try:
        import sounddevice  # type: ignore[import-untyped]
    except ImportError as exc:
        raise NoAudioDevice("the sounddevice package is not installed (pip install sounddevice)") from exc
    except OSError as exc:  # the package is there, the PortAudio library is not
        raise NoAudioDevice(f"{exc} (install libportaudio2)") from exc
    return sounddevice


def check_output_device(device: int | str | None = None) -> str:
    """The name of the output device that would play, or NoAudioDevice saying why there is none."""
    sd = _sounddevice()
    try:
        info = sd.query_devices(device, kind="output")
    except (ValueError, sd.PortAudioError) as exc:
        which = "the default output device" if device is None else f"output device {device!r}"
        raise NoAudioDevice(f"{which} is not available: {exc}") from exc
    if int(info.get("max_output_channels", 0)) < 1:
        raise NoAudioDevice(f"device {info.get('name')!r} has no output channels")
    return str(info.get("name"))


class DeviceSink:
    """The sound card through PortAudio, fed from a :class:`JitterBuffer` in its callback.

    ``output_underflows`` and ``output_overflows`` count the callbacks whose status flags said the
    card ran dry (it played a gap) or samples were lost, which the buffer cannot see itself."""

    def __init__(
        self, sample_rate: int, frame_samples: int, device: int | str | None = None, target_frames: int = 3
    ) -> None:
        sd = _sounddevice()
        self.name = check_output_device(device)
        self.buffer = JitterBuffer(frame_samples, target_frames, max(10, 2 * target_frames))
        self.frame_samples = frame_samples
        self.sample_rate = sample_rate
        self.output_underflows = 0
        self.output_overflows = 0
        try:
            self._stream = sd.OutputStream(
                samplerate=sample_rate,
                channels=1,
                dtype="int16",
                blocksize=frame_samples,
                device=device,
                callback=self._callback,
            )
            self._stream.start()
        except (ValueError, sd.PortAudioError) as exc:
            raise NoAudioDevice(f"cannot open {self.name!r}: {exc}") from exc

    def _callback(self, outdata: np.ndarray, frames: int, time: Any, status: Any) -> None:
        """PortAudio's audio thread: see the module's real-time rules."""
        if status:
            if status.output_underflow:
                self.output_underflows += 1
            if status.output_overflow:
                self.output_overflows += 1
        self.buffer.pull(outdata[:, 0])

    def write(self, pcm: np.ndarray) -> None:
        self.buffer.push(pcm)

    def stats(self) -> dict[str, int]:
        return {
            **self.buffer.stats(),
            "output_underflows": self.output_underflows,
            "output_overflows": self.output_overflows,
        }

    def close(self) -> None:
        self.buffer.finish()
        seconds = self.buffer.level / self.sample_rate + 1.0
        self.buffer.drained.wait(seconds)
        self._stream.stop()
        self._stream.close()
