"""Local playback: the jitter buffer (pure), the PortAudio callback driven by a fake stream (no audio
device), and `python -m ringaudio.say` writing a WAV or refusing to play without a device."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import tracemalloc
import wave
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ringaudio import playback
from ringaudio.playback import DeviceSink, JitterBuffer

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
    assert (playing.worker.lead_ms, playing.worker.workers, playing.worker.backend) == (400, 1, "auto")


def test_a_producer_and_a_card_on_two_threads_keep_every_sample_in_order_across_the_wrap() -> None:
    """The ring wraps hundreds of times; the card pulls odd sizes; the producer waits when it is full
    (woken by the card, or after RECHECK_S at most): nothing lost, nothing repeated."""
    buf = JitterBuffer(frame_samples=8, target_frames=1, capacity_frames=3)
    total = 400

    def produce() -> None:
        for k in range(total):
            assert buf.push(np.arange(k * 8, k * 8 + 8, dtype=np.int16), timeout=10)
        buf.finish()

    producer = threading.Thread(target=produce, daemon=True)
    producer.start()
    played: list[np.ndarray] = []
    out = np.empty(7, np.int16)
    deadline = time.monotonic() + 20
    while not buf.drained.is_set():
        assert time.monotonic() < deadline
        buf.pull(out)
        played.append(out.copy())
        time.sleep(0.0002)
    producer.join(5)
    audio = np.concatenate(played)
    assert buf.samples_out == total * 8 and buf.frames_in == total
    # underruns play silence (zeros); the rest is every sample once, in order (0 is the first one)
    assert np.array_equal(audio[audio != 0], np.arange(1, total * 8, dtype=np.int16))


def test_bad_sizes_are_refused() -> None:
    with pytest.raises(ValueError):
        JitterBuffer(8, target_frames=5, capacity_frames=4)


class Flags:
    """What sounddevice hands the callback as ``status`` (a CallbackFlags): false when no flag is set."""

    def __init__(self, output_underflow: bool = False, output_overflow: bool = False) -> None:
        self.output_underflow = output_underflow
        self.output_overflow = output_overflow

    def __bool__(self) -> bool:
        return self.output_underflow or self.output_overflow


class FakeStream:
    """sounddevice.OutputStream without a device: the test calls its callback, as PortAudio would."""

    def __init__(self, *, callback: Any, blocksize: int, **_: Any) -> None:
        self.callback = callback
        self.blocksize = blocksize
        self.running = False

    def start(self) -> None:
        self.running = True

    def stop(self) -> None:
        self.running = False

    def close(self) -> None:
        pass

    def period(self, status: Flags | None = None) -> np.ndarray:
        outdata = np.full((self.blocksize, 1), 99, np.int16)
        self.callback(outdata, self.blocksize, None, status or Flags())
        return outdata[:, 0]


class FakeSoundDevice:
    PortAudioError = OSError
    OutputStream = FakeStream

    @staticmethod
    def query_devices(device: object, kind: str) -> dict[str, object]:
        return {"name": "fake card", "max_output_channels": 2}


@pytest.fixture
def sink(monkeypatch: pytest.MonkeyPatch) -> DeviceSink:
    monkeypatch.setattr(playback, "_sounddevice", lambda: FakeSoundDevice)
    return DeviceSink(48_000, 960, target_frames=1)


def test_the_callback_counts_the_status_flags_it_is_given(sink: DeviceSink) -> None:
    stream: FakeStream = sink._stream
    assert stream.running and sink.name == "fake card"
    stream.period(Flags(output_underflow=True))
    stream.period(Flags(output_underflow=True, output_overflow=True))
    stream.period()
    assert (sink.output_underflows, sink.output_overflows) == (2, 1)
    assert sink.stats()["output_underflows"] == 2 and sink.stats()["underruns"] == 0  # not playing yet


def test_the_callback_plays_what_was_written_and_never_waits_for_the_producers_lock(sink: DeviceSink) -> None:
    stream: FakeStream = sink._stream
    sink.write(frame(0, 960))
    sink.write(frame(1, 960))
    held, release = threading.Event(), threading.Event()

    def producer_holding_the_lock() -> None:
        with sink.buffer._cond:
            held.set()
            release.wait(5)

    threading.Thread(target=producer_holding_the_lock, daemon=True).start()
    assert held.wait(5)
    try:
        t0 = time.monotonic()
        played = [stream.period().copy() for _ in range(3)]
        assert time.monotonic() - t0 < 0.5  # it did not wait for the lock
    finally:
        release.set()
    assert np.array_equal(played[0], frame(0, 960)) and np.array_equal(played[1], frame(1, 960))
    assert not played[2].any() and sink.buffer.underruns == 1  # then silence, counted once


def test_the_callback_allocates_no_buffer(sink: DeviceSink) -> None:
    stream: FakeStream = sink._stream
    outdata = np.empty((960, 1), np.int16)
    for k in range(8):
        sink.write(frame(k, 960))
    stream.callback(outdata, 960, None, Flags())  # warm: first calls
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(6):
            stream.callback(outdata, 960, None, Flags(output_underflow=True))
        peak = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    assert peak < 960 * 2  # less than one frame's samples: views and counters, no array
    assert np.array_equal(outdata[:, 0], frame(6, 960))  # the seventh frame, in the seventh period


def test_close_plays_out_what_is_buffered_then_stops(sink: DeviceSink) -> None:
    stream: FakeStream = sink._stream
    sink.write(frame(3, 960))
    closer = threading.Thread(target=sink.close)
    closer.start()
    time.sleep(0.05)
    assert closer.is_alive()  # waiting for the card to play the last frame
    assert np.array_equal(stream.period(), frame(3, 960))
    stream.period()  # the card finds the end: drained
    closer.join(5)
    assert not closer.is_alive() and not stream.running


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
