"""The level stage: frames at any level, changed at any frame boundary, cover the input exactly
(no sample lost or repeated) and match the ideal signal at each level's rate."""

from __future__ import annotations

import numpy as np
import pytest

from ringaudio.errors import ConfigError
from ringaudio.tts.levels import LevelStage, lowpass

BASE = 48_000


def tone(seconds: float, hz: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * BASE)) / BASE
    return (10_000 * np.sin(2 * np.pi * hz * t)).astype(np.int16)


@pytest.mark.parametrize(
    "schedule",
    [
        {},
        {10: (24_000, 40)},
        {10: (24_000, 40), 30: (48_000, 20), 50: (16_000, 20), 60: (24_000, 20), 70: (48_000, 20)},
        {0: (16_000, 40), 1: (48_000, 20), 2: (24_000, 40), 3: (48_000, 20)},  # a change every frame
    ],
)
def test_every_change_lands_on_a_frame_boundary_and_loses_nothing(schedule: dict[int, tuple[int, int]]) -> None:
    x = tone(2.0)
    stage = LevelStage(BASE, (48_000, 20))
    out = []
    for i, frame in enumerate(x.reshape(-1, 960)):
        if i in schedule:
            stage.set_level(schedule[i])
        out += stage.push(frame)
    out += stage.flush()
    position, worst = 0.0, 0.0
    for pcm, rate, frame_us in out:
        assert len(pcm) == rate * frame_us // 1_000_000 and pcm.dtype == np.int16
        t = position + np.arange(len(pcm)) / rate
        if position + frame_us / 1e6 <= 2.0 - 0.002:  # the end is padded with silence
            worst = max(worst, float(np.abs(pcm - 10_000 * np.sin(2 * np.pi * 440 * t)).max()))
        position += frame_us / 1e6
    assert abs(position - 2.0) < 0.041  # exactly the input, the last frame padded
    assert worst <= 2.0  # within 2 LSB of the ideal tone at every level, across every change


def test_the_filter_keeps_speech_and_stops_aliases() -> None:
    for m in (2, 3):
        h = lowpass(m)
        response = np.abs(np.fft.rfft(h, 8192))
        freqs = np.fft.rfftfreq(8192, 1 / BASE)
        nyquist = BASE / m / 2
        assert response[freqs < 0.8 * nyquist].min() > 0.99  # flat where speech is
        assert response[freqs > 1.1 * nyquist].max() < 1e-3  # -60 dB where it would alias


def test_levels_it_cannot_make_are_refused() -> None:
    with pytest.raises(ConfigError, match="does not divide"):
        LevelStage(BASE, (44_100, 20))
    stage = LevelStage(BASE, (48_000, 20))
    with pytest.raises(ConfigError, match="does not divide"):
        stage.set_level((12_000, 20))  # 4: beyond what the stage decimates
    assert stage.flush() == []  # nothing pushed: nothing out


def test_the_client_writes_a_stream_that_changed_rate_at_its_first_rate() -> None:
    """What the client's WAV holds across two level changes: the tone, at 48 kHz, sample for sample
    in time (within the filters' ripple), as long as the input."""
    from ringaudio.client import _Payload

    x = tone(2.0)
    stage = LevelStage(BASE, (48_000, 20))
    payload, wav, current = _Payload(BASE), [], (48_000, 20)
    for i, frame in enumerate(x.reshape(-1, 960)):
        if i in (20, 60):
            stage.set_level((24_000, 40) if i == 20 else (48_000, 20))
        for pcm, rate, frame_us in stage.push(frame) + ([] if i < 99 else stage.flush()):
            if (rate, frame_us // 1000) != current:
                current = (rate, frame_us // 1000)
                wav.append(payload.follow({"encoding": "s16le", "sample_rate": rate}))
            wav.append(payload.pcm(pcm.tobytes()))
    wav.append(payload.finish())
    out = np.frombuffer(b"".join(wav), np.int16)
    assert len(out) == len(x)
    inner = slice(2000, len(x) - 2000)
    error = np.abs(out[inner].astype(int) - x[inner])
    assert error.max() <= 150  # ≤ 1.5 % of the tone, for a few samples right at a change ...
    assert (error > 20).sum() <= 16  # ... and within 0.2 % everywhere else (no click: it was 30 % with silence)


def test_the_pacing_clock_keeps_its_lead_across_a_level_change() -> None:
    from ringaudio.tts.job import PlaybackClock

    clock = PlaybackClock(lead=15, period=0.02)  # 300 ms ahead of playback, in 20 ms frames
    assert clock.due(0, 0.0, lambda: 0) == pytest.approx(-0.3)
    assert clock.due(100, 1.0, lambda: 50) == pytest.approx(2.0 - 0.3)  # frame 100 plays at 2.0 s
    clock.retime(100, 0.04, 7)  # 40 ms frames from 100 on: still ~300 ms ahead, and 100 still plays at 2.0 s
    assert clock.due(100, 1.0, lambda: 50) == pytest.approx(2.0 - 0.28)
    assert clock.due(110, 1.0, lambda: 50) == pytest.approx(2.4 - 0.28)
