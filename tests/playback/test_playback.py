"""Local playback: the jitter buffer (pure), and `python -m ringaudio.say` writing a WAV or refusing
to play without a device."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import wave
from pathlib import Path

import numpy as np
import pytest

from ringaudio.playback import JitterBuffer

ROOT = Path(__file__).resolve().parents[2]


def frame(value: int, n: int = 8) -> np.ndarray:
    return np.arange(value * n, value * n + n, dtype=np.int16)


def test_playback_starts_at_target_and_keeps_every_sample_in_order() -> None:
    buf = JitterBuffer(frame_samples=8, target_frames=2, capacity_frames=4)
    out = np.full(5, 99, np.int16)
    buf.push(frame(0))
    buf.pull(out)
    assert not out.any()  # below target: silence, and that is not an underrun
    assert buf.underruns == 0
    buf.push(frame(1))
    played = []
    for _ in range(3):  # 15 samples pulled in odd sizes across frame boundaries
        buf.pull(out)
        played.append(out.copy())
    assert np.array_equal(np.concatenate(played), np.arange(15, dtype=np.int16))
    assert buf.level == 1


def test_underrun_plays_silence_counts_once_and_rebuffers() -> None:
    buf = JitterBuffer(frame_samples=8, target_frames=1, capacity_frames=4)
    buf.push(frame(0))
    out = np.empty(12, np.int16)
    buf.pull(out)
    assert np.array_equal(out[:8], frame(0)) and not out[8:].any()
    assert buf.underruns == 1
    buf.pull(out)  # still empty, no longer playing: not a second underrun
    assert buf.underruns == 1 and not out.any()
    buf.push(frame(1))
    buf.pull(out)
    assert np.array_equal(out[:8], frame(1))


def test_a_full_buffer_makes_the_producer_wait_not_drop() -> None:
    buf = JitterBuffer(frame_samples=8, target_frames=1, capacity_frames=2)
    assert buf.push(frame(0)) and buf.push(frame(1))
    assert not buf.push(frame(2), timeout=0.05)  # still full after the timeout: refused, counted
    assert buf.overruns == 1
    out = np.empty(8, np.int16)
    threading.Timer(0.1, buf.pull, args=(out,)).start()
    t0 = time.monotonic()
    assert buf.push(frame(2), timeout=5)  # waits until the card has taken a frame
    assert time.monotonic() - t0 >= 0.05
    rest = np.empty(16, np.int16)
    buf.pull(rest)
    assert np.array_equal(out, frame(0)) and np.array_equal(rest, np.concatenate([frame(1), frame(2)]))


def test_finish_plays_out_below_target_then_reports_drained() -> None:
    buf = JitterBuffer(frame_samples=8, target_frames=3, capacity_frames=4)
    buf.push(frame(0))
    buf.finish()
    out = np.empty(10, np.int16)
    buf.pull(out)
    assert np.array_equal(out[:8], frame(0)) and not out[8:].any()
    assert buf.drained.is_set() and buf.underruns == 0


def test_say_renders_unpaced_and_quietly_unless_the_environment_says_otherwise() -> None:
    from ringaudio import say

    rendering = say.parser().parse_args(["Hello.", "--out", "hello.wav", "--backend", "synthetic"])
    cfg = say.configure(rendering, {})
    assert (cfg.worker.lead_ms, cfg.log_level, cfg.worker.workers, cfg.worker.backend) == (0, "WARNING", 1, "synthetic")
    cfg = say.configure(rendering, {"RINGAUDIO__WORKER__LEAD_MS": "400", "LOG_LEVEL": "debug"})
    assert (cfg.worker.lead_ms, cfg.log_level) == (400, "DEBUG")
    playing = say.configure(say.parser().parse_args(["Hello."]), {"RINGAUDIO__WORKER__WORKERS": "4"})
    assert (playing.worker.lead_ms, playing.worker.workers, playing.worker.backend) == (300, 1, "auto")


def test_bad_sizes_are_refused() -> None:
    with pytest.raises(ValueError):
        JitterBuffer(8, target_frames=5, capacity_frames=4)


def run_say(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "RINGAUDIO__WORKER__SYNTHETIC_RTF": "0"}
    return subprocess.run(
        [sys.executable, "-m", "ringaudio.say", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env=env,
    )


def test_say_writes_a_wav(tmp_path: Path) -> None:
    out = tmp_path / "hello.wav"
    done = run_say("Hello there.", "And goodbye.", "--out", str(out), "--backend", "synthetic")
    assert done.returncode == 0, done.stderr
    with wave.open(str(out)) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, 48_000)
        audio = np.frombuffer(w.readframes(w.getnframes()), np.int16)
    seconds = len(audio) / 48_000
    assert 1.0 < seconds < 6.0 and len(audio) % 960 == 0  # whole 20 ms frames of two short sentences
    assert np.sqrt(np.mean(audio.astype(np.float64) ** 2)) > 100


def test_say_without_a_device_says_so_and_fails() -> None:
    shm = Path("/dev/shm")
    before = set(shm.iterdir()) if shm.is_dir() else set()
    done = run_say("Hello.", "--device", "9999", "--backend", "synthetic", timeout=60)
    assert (set(shm.iterdir()) if shm.is_dir() else set()) == before  # not even PortAudio's JACK probe
    assert done.returncode == 2
    assert "no audio output" in done.stderr and "--out" in done.stderr
