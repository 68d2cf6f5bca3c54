"""TTS backends: the small interface a speech engine implements, and the two we ship.

A backend turns a piece of text into float32 mono audio at its native rate, **streamed**: it yields
chunks as it synthesizes, so the worker can resample, frame and write the first of them before the
rest exists. Closing the generator early (a cancel) must stop the engine promptly.

- ``espeak``: real speech from the espeak-ng program (22 050 Hz), read from its stdout as it speaks.
- ``synthetic``: built in and deterministic: speech-like audio (a voiced pitch contour through vowel
  formants, noise for fricatives, pauses at punctuation) whose length is proportional to the text,
  at a configurable native rate and real-time factor, for tests and benchmarks.
"""

from __future__ import annotations

import shutil
import subprocess
import time
import zlib
from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import ClassVar

import numpy as np

from ..errors import BackendError, BackendUnavailable, ConfigError

__all__ = [
    "Backend",
    "BackendError",
    "BackendUnavailable",
    "EspeakBackend",
    "SyntheticBackend",
    "default_backend_name",
]


class Backend(ABC):
    """What a speech engine implements to plug into the workers."""

    name: ClassVar[str]
    native_rate: int
    model_id: str

    @abstractmethod
    def synthesize(self, text: str, voice: str | None = None) -> Iterator[np.ndarray]:
        """Yield float32 mono chunks at ``native_rate`` as they are produced."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release whatever the engine holds (called when the worker stops)."""


# -- espeak-ng ------------------------------------------------------------------------------------


class EspeakBackend(Backend):
    name = "espeak"
    native_rate = 22_050
    CHUNK_BYTES = 2 * 1102  # 50 ms of 16-bit mono

    def __init__(self, voice: str = "en", speed: int = 175, program: str = "espeak-ng") -> None:
        path = shutil.which(program)
        if path is None:
            raise BackendUnavailable(f"{program} is not installed (apt-get install espeak-ng)")
        self.program = path
        self.voice = voice
        self.speed = int(speed)
        self.model_id = f"espeak-ng:{voice}"

    @staticmethod
    def available(program: str = "espeak-ng") -> bool:
        return shutil.which(program) is not None

    def synthesize(self, text: str, voice: str | None = None) -> Iterator[np.ndarray]:
        voice = voice or self.voice
        if not voice.replace("-", "").replace("+", "").replace("_", "").isalnum():
            raise BackendError(f"voice {voice!r} is not a voice name")
        cmd = [self.program, "--stdout", "-b", "1", "-v", voice, "-s", str(self.speed)]
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        try:
            proc.stdin.write(text.encode("utf-8"))
            proc.stdin.close()
            header = proc.stdout.read(44)
            if len(header) < 44:
                proc.wait(5)
                err = proc.stderr.read().decode("utf-8", "replace").strip()
                raise BackendError(f"espeak-ng produced no audio (exit {proc.returncode}): {err or 'empty output'}")
            if header[:4] != b"RIFF" or header[8:12] != b"WAVE":
                raise BackendError("espeak-ng wrote something that is not a WAV stream")
            rate = int.from_bytes(header[24:28], "little")
            if rate != self.native_rate:
                raise BackendError(f"espeak-ng speaks at {rate} Hz, expected {self.native_rate}")
            carry = b""
            while True:
                data = proc.stdout.read1(self.CHUNK_BYTES) if hasattr(proc.stdout, "read1") else b""
                if not data:
                    break
                data = carry + data
                usable = len(data) - len(data) % 2
                carry = data[usable:]
                if usable:
                    yield np.frombuffer(data[:usable], "<i2").astype(np.float32) / np.float32(32768)
            if proc.wait(10) != 0:
                err = proc.stderr.read().decode("utf-8", "replace").strip()
                raise BackendError(f"espeak-ng failed (exit {proc.returncode}): {err}")
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            for stream in (proc.stdout, proc.stderr):
                stream.close()


# -- synthetic ------------------------------------------------------------------------------------

_VOWELS = {
    "a": (730, 1090, 2440),
    "e": (530, 1840, 2480),
    "i": (270, 2290, 3010),
    "o": (570, 840, 2410),
    "u": (300, 870, 2240),
    "y": (300, 2000, 2700),
}
_VOICED = set("bdgjlmnrvwz")
_PAUSES = {",": 0.15, ";": 0.2, ":": 0.2, ".": 0.3, "!": 0.3, "?": 0.3, "\n": 0.3}


class _Shared:
    """One generation of a text, read by any number of jobs: segments are made once, on demand."""

    def __init__(self, parts: Iterator[np.ndarray]) -> None:
        self._source: Iterator[np.ndarray] | None = parts
        self.parts: list[np.ndarray] = []
        self.failed = False
        self.whole: np.ndarray | None = None  # every part in one array, once the generation is complete

    def __iter__(self) -> Iterator[np.ndarray]:
        i = 0
        while True:
            if i < len(self.parts):
                yield self.parts[i]
                i += 1
                continue
            if self._source is None:
                return
            try:
                part = next(self._source, None)
            except BaseException:
                self._source = None
                self.failed = True  # the synthesizer evicts it: the next job starts afresh
                raise
            if part is None:
                self._source = None
                self.whole = np.concatenate(self.parts) if self.parts else np.zeros(0, np.float32)
                return
            self.parts.append(part)


class SyntheticBackend(Backend):
    """Deterministic speech-like audio; ``rtf`` sets how long synthesis takes per second of audio."""

    name = "synthetic"

    def __init__(self, native_rate: int = 22_050, rtf: float = 0.05, chars_per_second: float = 14.0) -> None:
        if rtf < 0 or chars_per_second <= 0:
            raise ConfigError(f"need rtf >= 0 and chars_per_second > 0, got {rtf!r} and {chars_per_second!r}")
        self.native_rate = int(native_rate)
        self.rtf = float(rtf)
        self.chars_per_second = float(chars_per_second)
        self.model_id = f"synthetic-{self.native_rate}-rtf{self.rtf:g}"
        self._cache: dict[str, _Shared] = {}  # text -> audio: the same text costs only its pacing

    def segments(self, text: str) -> list[tuple[str, float]]:
        """(kind, seconds) for each character: a vowel, 'voiced', 'noise', 'gap' or 'pause'."""
        out: list[tuple[str, float]] = []
        unit = 1.0 / self.chars_per_second
        for ch in text.lower():
            if ch in _PAUSES:
                out.append(("pause", _PAUSES[ch]))
            elif ch in _VOWELS:
                out.append((ch, unit))
            elif ch in _VOICED:
                out.append(("voiced", unit))
            elif ch.isalnum():
                out.append(("noise", unit))
            else:
                out.append(("gap", unit * 0.5))
        return out

    def duration(self, text: str) -> float:
        """Seconds of audio this text becomes (what the tests expect)."""
        return sum(round(s * self.native_rate) for _, s in self.segments(text)) / self.native_rate

    def synthesize(self, text: str, voice: str | None = None) -> Iterator[np.ndarray]:
        # 10 ms chunks when pacing a model's speed (a cancel never waits behind a long sleep);
        # 100 ms at full speed, where there is no sleep and fewer, larger chunks cost less
        chunk = self.native_rate // (100 if self.rtf > 0 else 10)
        audio = self._cache.get(text)
        if audio is None:
            if len(self._cache) >= 16:
                self._cache.pop(next(iter(self._cache)))
            audio = self._cache[text] = _Shared(self._generate(text))
        started = time.monotonic()
        at = 0
        if audio.whole is not None:  # said before, whole: its chunks are views of it
            whole = audio.whole
            for at in range(0, len(whole), chunk):
                yield self._paced(whole[at : at + chunk], at, started)
            return
        pending = np.zeros(0, np.float32)
        # a text heard before is a copy; a new one streams as it is generated, segment by segment
        # (and every job saying it at once shares that one generation), so the first chunk leaves
        # after the first sound, not after the whole clause
        try:
            for segment in audio:
                pending = np.concatenate([pending, segment]) if len(pending) else segment
                while len(pending) >= chunk:
                    yield self._paced(pending[:chunk], at, started)
                    at += chunk
                    pending = pending[chunk:]
        finally:
            if audio.failed and self._cache.get(text) is audio:
                del self._cache[text]  # never keep a truncated generation
        if len(pending):
            yield self._paced(pending, at, started)

    def _paced(self, audio: np.ndarray, at: int, started: float) -> np.ndarray:
        """Play a model of this speed: audio of d seconds costs rtf * d seconds to make."""
        lag = self.rtf * (at + len(audio)) / self.native_rate - (time.monotonic() - started)
        if lag > 0:
            time.sleep(lag)
        return audio

    def _generate(self, text: str) -> Iterator[np.ndarray]:
        rate = self.native_rate
        rng = np.random.default_rng(zlib.crc32(text.encode("utf-8")))
        segs = self.segments(text)
        total = sum(round(s * rate) for _, s in segs)
        phase = 0.0
        produced = 0
        pitch_base = 110.0 + 40.0 * rng.random()
        for kind, seconds in segs:
            n = round(seconds * rate)
            if n == 0:
                continue
            t = (produced + np.arange(n)) / rate
            if kind == "pause" or kind == "gap":
                audio = np.zeros(n, np.float32)
            elif kind == "noise":
                noise = rng.standard_normal(n + 1)
                audio = (np.diff(noise) * 0.05).astype(np.float32)
            else:
                formants = _VOWELS.get(kind, (400, 1500, 2500))
                level = 0.25 if kind in _VOWELS else 0.12
                f0 = pitch_base * (1.3 - 0.3 * produced / max(total, 1)) * (1 + 0.02 * np.sin(2 * np.pi * 5 * t))
                phases = phase + np.cumsum(2 * np.pi * f0 / rate)
                phase = float(phases[-1]) % (2 * np.pi)
                harmonics = np.arange(1, 1 + int(4000 / f0.max()))
                freqs = harmonics[None, :] * f0[:, None]
                gains = sum(np.exp(-(((freqs - f) / 120.0) ** 2)) / (i + 1) for i, f in enumerate(formants))
                audio = (level * np.sum(gains * np.sin(harmonics[None, :] * phases[:, None]), axis=1)).astype(
                    np.float32
                )
            ramp = min(n // 2, rate // 200)  # 5 ms fades: no clicks between segments
            if ramp:
                fade = np.linspace(0.0, 1.0, ramp, dtype=np.float32)
                audio[:ramp] *= fade
                audio[-ramp:] *= fade[::-1]
            produced += n
            yield audio


def default_backend_name() -> str:
    """``espeak`` when the program is installed, else ``synthetic``."""
    return "espeak" if EspeakBackend.available() else "synthetic"
