"""Local playback: a jitter buffer between the engine's frames and the sound card, and two sinks.

The sound card pulls samples at its own clock from a PortAudio callback; frames arrive from the
engine at the worker's pace. :class:`JitterBuffer` sits between them: playback starts once
``target`` frames are buffered, an empty buffer plays silence and counts an *underrun* (then
re-buffers to ``target``), and a full one makes the producer wait and counts an *overrun* (under
``block`` the ring then fills and the worker waits: nothing is lost). The buffer is pure (no
device), so tests drive it directly.
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import threading
import wave
from collections import deque
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from .errors import ConfigError, NoAudioDevice

__all__ = ["DeviceSink", "JitterBuffer", "NoAudioDevice", "Sink", "WavSink", "check_output_device"]


class Sink(Protocol):
    def write(self, pcm: np.ndarray) -> None: ...

    def close(self) -> None: ...


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
        self.samples_out = 0
        self._chunks: deque[np.ndarray] = deque()
        self._head = 0  # samples of _chunks[0] already played
        self._level = 0  # samples buffered
        self._playing = False
        self._finished = False
        self._cond = threading.Condition()
        self.drained = threading.Event()

    @property
    def level(self) -> int:
        """Samples buffered."""
        return self._level

    def push(self, pcm: np.ndarray, timeout: float | None = None) -> bool:
        """Add one frame (copied); waits while full. False if it is still full after ``timeout``."""
        frame = np.array(pcm, dtype=np.int16, copy=True).reshape(-1)
        with self._cond:
            if self._level + len(frame) > self.capacity:
                self.overruns += 1
                if not self._cond.wait_for(lambda: self._level + len(frame) <= self.capacity, timeout):
                    return False
            self._chunks.append(frame)
            self._level += len(frame)
            self.frames_in += 1
            if self._level >= self.target:
                self._playing = True
        return True

    def finish(self) -> None:
        """No more frames: play out what is buffered (even below ``target``), then set ``drained``."""
        with self._cond:
            self._finished = True
            self._playing = True
            if self._level == 0:
                self.drained.set()

    def pull(self, out: np.ndarray) -> None:
        """Fill ``out`` (int16 samples) for the card: buffered audio, then silence if there is none."""
        n = len(out)
        filled = 0
        with self._cond:
            if self._playing:
                while filled < n and self._chunks:
                    head = self._chunks[0]
                    take = min(n - filled, len(head) - self._head)
                    out[filled : filled + take] = head[self._head : self._head + take]
                    filled += take
                    self._head += take
                    if self._head == len(head):
                        self._chunks.popleft()
                        self._head = 0
                self._level -= filled
                self.samples_out += filled
                if filled < n:
                    if self._finished:
                        self.drained.set()
                    else:
                        self.underruns += 1
                        self._playing = False  # re-buffer to target before playing on
                self._cond.notify_all()
        out[filled:] = 0

    def stats(self) -> dict[str, int]:
        return {
            "frames": self.frames_in,
            "underruns": self.underruns,
            "overruns": self.overruns,
            "samples_played": self.samples_out,
        }


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
    """The sound card through PortAudio, fed from a :class:`JitterBuffer` in its callback."""

    def __init__(
        self, sample_rate: int, frame_samples: int, device: int | str | None = None, target_frames: int = 3
    ) -> None:
        sd = _sounddevice()
        self.name = check_output_device(device)
        self.buffer = JitterBuffer(frame_samples, target_frames, max(10, 2 * target_frames))
        self.frame_samples = frame_samples
        self.sample_rate = sample_rate

        def callback(outdata: np.ndarray, frames: int, time: Any, status: Any) -> None:
            self.buffer.pull(outdata[:, 0])

        try:
            self._stream = sd.OutputStream(
                samplerate=sample_rate,
                channels=1,
                dtype="int16",
                blocksize=frame_samples,
                device=device,
                callback=callback,
            )
            self._stream.start()
        except (ValueError, sd.PortAudioError) as exc:
            raise NoAudioDevice(f"cannot open {self.name!r}: {exc}") from exc

    def write(self, pcm: np.ndarray) -> None:
        self.buffer.push(pcm)

    def close(self) -> None:
        self.buffer.finish()
        seconds = self.buffer.level / self.sample_rate + 1.0
        self.buffer.drained.wait(seconds)
        self._stream.stop()
        self._stream.close()
