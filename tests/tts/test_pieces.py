"""The pure parts of the workers: text splitting, framing, configuration, the synthetic backend."""

from __future__ import annotations

import numpy as np
import pytest

from ringaudio import config
from ringaudio.errors import ConfigError
from ringaudio.tts import Framer, SyntheticBackend, split_text


def test_split_text_at_sentences_and_long_clauses() -> None:
    assert split_text("Hello there. How are you?  Fine!") == ["Hello there.", "How are you?", "Fine!"]
    long = "This first sentence goes on, and on, and on for a good while, well past the clause limit; then stops."
    pieces = split_text(long, clause_chars=30)
    assert len(pieces) > 2 and all(len(p) <= 40 for p in pieces[:-1])
    assert " ".join(pieces) == long  # nothing lost, nothing reordered
    assert split_text("   \n\n  ") == []
    assert split_text("one\n\ntwo") == ["one", "two"]


def test_framer_cuts_exact_frames_and_pads_the_last() -> None:
    framer = Framer(960)
    x = np.linspace(-0.5, 0.5, 2500, dtype=np.float32)
    frames = [f.copy() for chunk in np.array_split(x, 7) for f in framer.push(chunk)]
    assert len(frames) == 2 and framer.pending == 2500 - 1920
    tail = [f.copy() for f in framer.flush()]
    assert len(tail) == 1 and framer.frames == 3
    joined = np.concatenate(frames + tail)
    assert joined.dtype == np.int16 and len(joined) == 2880
    assert np.array_equal(joined[:2500], np.rint(x * 32768).astype(np.int16))
    assert not joined[2500:].any()


def test_synthetic_backend_is_deterministic_speech_length_and_voiced() -> None:
    b = SyntheticBackend(native_rate=16_000, rtf=0.0)
    text = "Hello there, general. How are you?"
    a = np.concatenate(list(b.synthesize(text)))
    again = np.concatenate(list(b.synthesize(text)))
    assert np.array_equal(a, again)
    assert len(a) == round(b.duration(text) * 16_000)
    assert 1.5 < b.duration(text) < 4.0  # speech length for a short sentence
    assert np.sqrt(np.mean(a**2)) > 0.02 and np.max(np.abs(a)) <= 1.0
    # pauses at punctuation are silent: the 0.3 s after the full stop holds a stretch of zeros
    runs = np.diff(np.flatnonzero(np.abs(a) > 1e-4))
    assert runs.max() > 0.25 * 16_000


def test_synthetic_backend_plays_a_slow_model() -> None:
    import time

    b = SyntheticBackend(rtf=1.5)
    t0 = time.monotonic()
    n = sum(len(c) for c in b.synthesize("Hi."))
    took = time.monotonic() - t0
    assert took >= 1.4 * n / b.native_rate  # RTF 1.5: slower than real time


def test_config_defaults_files_and_environment(tmp_path: object) -> None:
    import pathlib

    folder = pathlib.Path(str(tmp_path))
    cfg = config.load(None, environ={})
    assert (cfg.frame_queue_size, cfg.frame_duration_ms, cfg.output_sample_rate, cfg.frame_samples) == (
        50,
        20,
        48_000,
        960,
    )
    (folder / "orchestrator.yaml").write_text("transport:\n  websocket:\n    frame_queue_size: 25\n")
    (folder / "worker.yaml").write_text("audio:\n  frame_duration_ms: 40\n  output_sample_rate: 24000\n")
    cfg = config.load(folder, environ={"RINGAUDIO__WORKER__WORKERS": "3", "LOG_LEVEL": "debug"})
    assert (cfg.frame_queue_size, cfg.frame_samples, cfg.worker.workers, cfg.log_level) == (25, 960, 3, "DEBUG")
    assert config.load("configs", environ={}).frame_queue_size == 50  # the shipped files load


@pytest.mark.parametrize(
    "environ",
    [
        {"RINGAUDIO__AUDIO__FRAME_DURATION_MS": "30"},
        {"RINGAUDIO__AUDIO__OUTPUT_SAMPLE_RATE": "44100"},
        {"RINGAUDIO__AUDIO__NOPE": "1"},
        {"RINGAUDIO__WORKER__WORKERS": "zero"},
        {"RINGAUDIO__TRANSPORT__WEBSOCKET__FRAME_QUEUE_SIZE": "1"},
        {"RINGAUDIO__WORKER__BACKEND": "festival"},
        {"LOG_LEVEL": "LOUD"},
    ],
)
def test_bad_configuration_is_refused(environ: dict[str, str]) -> None:
    with pytest.raises(ConfigError):
        config.load(None, environ=environ)


def test_missing_config_folder_is_refused() -> None:
    with pytest.raises(ConfigError):
        config.load("/nonexistent/configs", environ={})
