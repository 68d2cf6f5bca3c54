"""``config.load``: every key is checked by value, and a bad one is refused on one line naming it."""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from ringaudio import config
from ringaudio.config import Config, QualityLevel, ServerSettings
from ringaudio.errors import ConfigError
from ringaudio.ring import layout

ROOT = Path(__file__).resolve().parents[1]
NAN = float("nan")
INF = float("inf")


def at(key: str, value: Any) -> dict[str, Any]:
    """``{"a": {"b": value}}`` for ``"a.b"``."""
    tree: Any = value
    for part in reversed(key.split(".")):
        tree = {part: tree}
    return dict(tree)


def levels(*items: Any) -> dict[str, Any]:
    return {"audio": {"quality_levels": list(items)}}


def write(folder: Path, tree: dict[str, Any]) -> Path:
    """Server keys go to orchestrator.yaml, the rest to worker.yaml, as the shipped files have them."""
    server = {k: v for k, v in tree.items() if k in ("server", "transport")}
    worker = {k: v for k, v in tree.items() if k not in server}
    for name in config.FILES:
        (folder / name).unlink(missing_ok=True)
    if server:
        (folder / "orchestrator.yaml").write_text(yaml.safe_dump(server))
    if worker:
        (folder / "worker.yaml").write_text(yaml.safe_dump(worker))
    return folder


def refused(folder: Path, tree: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as info:
        config.load(write(folder, tree), environ={})
    message = str(info.value)
    assert "\n" not in message and message.strip() == message, repr(message)
    return message


MIB16 = 16 * 1024 * 1024
RATES = "8000, 16000, 22050, 24000, 32000, 44100, 48000"

BAD: list[tuple[dict[str, Any], str, str]] = [
    # (the YAML, the dotted key the message must name, the allowed values it must state)
    *[(at("worker.resample_quality", v), "worker.resample_quality", "fast, hq, vhq") for v in ("ultra", "HQ", 1)],
    *[(at("worker.synthetic_rate", v), "worker.synthetic_rate", RATES) for v in (12345, "22050", 22050.0, True)],
    *[(at("worker.overflow", v), "worker.overflow", "block, drop_oldest") for v in ("drop", "", None)],
    *[(at("worker.high_watermark", v), "worker.high_watermark", "0..1") for v in (1.5, -0.1, NAN, INF, "0.8", True)],
    *[(at("worker.low_watermark", v), "worker.low_watermark", "0..1") for v in (-0.5, NAN, "0.5", False)],
    (at("worker.speed", 79), "worker.speed", "80..500"),
    (at("worker.speed", 501), "worker.speed", "80..500"),
    (at("worker.speed", "175"), "worker.speed", "80..500"),
    (at("worker.speed", 175.0), "worker.speed", "80..500"),
    (at("worker.speed", True), "worker.speed", "80..500"),
    *[(at("worker.voice", v), "worker.voice", "1..64 of A-Z a-z 0-9 _ . + / -") for v in ("", "x" * 65, "en us")],
    *[(at("worker.voice", v), "worker.voice", "1..64 of A-Z a-z 0-9 _ . + / -") for v in ("en;rm", "ü", 5, None)],
    *[(at("worker.max_text_chars", v), "worker.max_text_chars", "1..100000") for v in (0, 100_001, "5000")],
    *[(at("worker.clause_chars", v), "worker.clause_chars", "10..10000") for v in (9, 10_001, 80.5)],
    *[(at("worker.synthetic_rtf", v), "worker.synthetic_rtf", "0..10") for v in (-0.01, 10.5, NAN, INF, -INF)],
    *[(at("worker.synthetic_rtf", v), "worker.synthetic_rtf", "0..10") for v in ("0.05", True, [0.05])],
    *[(at("worker.workers", v), "worker.workers", "auto or an integer in 1..64") for v in (0, 65, "many", True, 2.0)],
    (at("worker.backend", "festival"), "worker.backend", "auto, espeak, synthetic"),
    *[(at("audio.adaptive_quality", v), "audio.adaptive_quality", "true or false") for v in ("banana", 1, "true")],
    *[
        (at("audio.quality_levels", v), "audio.quality_levels", "non-empty list")
        for v in (5, list[int](), "48000", None)
    ],
    (at("audio.quality_levels", {"sample_rate": 48_000, "frame_duration_ms": 20}), "audio.quality_levels", "list"),
    (levels("48000"), "audio.quality_levels[0]", "exactly sample_rate and frame_duration_ms"),
    (levels({"sample_rate": 48_000}), "audio.quality_levels[0]", "exactly sample_rate and frame_duration_ms"),
    (
        levels({"sample_rate": 48_000, "frame_duration_ms": 20}, {"sample_rate": 48_000, "frame_ms": 20}),
        "audio.quality_levels[1]",
        "exactly sample_rate and frame_duration_ms",
    ),
    (
        levels({"sample_rate": 48_000, "frame_duration_ms": 20, "bitrate": 1}),
        "audio.quality_levels[0]",
        "exactly sample_rate and frame_duration_ms",
    ),
    (
        levels({"sample_rate": 48_000, "frame_duration_ms": 20}, {"sample_rate": 44_100, "frame_duration_ms": 20}),
        "audio.quality_levels[1].sample_rate",
        "48000, 24000, 16000",
    ),
    (
        levels({"sample_rate": "48000", "frame_duration_ms": 20}),
        "audio.quality_levels[0].sample_rate",
        "48000, 24000, 16000",
    ),
    (
        levels({"sample_rate": 16_000, "frame_duration_ms": 30}),
        "audio.quality_levels[0].frame_duration_ms",
        "20, 40",
    ),
    *[(at("audio.frame_duration_ms", v), "audio.frame_duration_ms", "20, 40") for v in (30, "20", 20.0)],
    *[(at("audio.output_sample_rate", v), "audio.output_sample_rate", "48000, 24000, 16000") for v in (44_100, 48e3)],
    *[(at("transport.websocket.compress", v), "transport.websocket.compress", "true or false") for v in ("yes", 0)],
    (at("transport.websocket.frame_queue_size", 1), "transport.websocket.frame_queue_size", "2..100000"),
    (at("transport.websocket.frame_queue_size", "50"), "transport.websocket.frame_queue_size", "2..100000"),
    # the default ring: 50 frames of 20 ms
    *[(at("server.prebuffer_ms", v), "server.prebuffer_ms", "0..1000") for v in (-1, 1001, "200", 200.0)],
    *[(at("server.max_sessions", v), "server.max_sessions", "1..10000") for v in (0, 10_001, True)],
    *[(at("server.max_message_bytes", v), "server.max_message_bytes", "256..16777216") for v in (255, MIB16 + 1)],
    *[(at("server.max_queued_utterances", v), "server.max_queued_utterances", "1..1000") for v in (0, 1001)],
    *[(at("server.send_buffer_frames", v), "server.send_buffer_frames", "1..10000") for v in (0, 10_001)],
    *[(at("server.tick_ms", v), "server.tick_ms", "1..100") for v in (0, 101, "20", 5.0)],
    *[(at("server.allowed_origins", v), "server.allowed_origins", "list of origins") for v in ("x", [1], None)],
    *[(at("server.idle_timeout_s", v), "server.idle_timeout_s", "0 (never) or") for v in (0.5, -1, 86_401)],
    *[(at("server.idle_timeout_s", v), "server.idle_timeout_s", "1..86400") for v in ("60", True, False, NAN, INF)],
    *[(at("server.public_metrics", v), "server.public_metrics", "true or false") for v in ("no", 0, None)],
    *[(at("server.send_budget_kb", v), "server.send_budget_kb", "16..65536") for v in (15, 65_537, 256.0, "256")],
    *[(at("server.close_timeout_s", v), "server.close_timeout_s", "0.1..30") for v in (0.05, 0, 31, INF, NAN, "2")],
    *[(at("log_level", v), "log_level", "DEBUG, INFO, WARNING, ERROR, CRITICAL") for v in ("LOUD", 10)],
]


@pytest.mark.parametrize(("tree", "key", "allowed"), BAD, ids=[f"{key}={tree!r}" for tree, key, _ in BAD])
def test_a_bad_value_is_refused_on_one_line_naming_the_key(
    tmp_path: Path, tree: dict[str, Any], key: str, allowed: str
) -> None:
    message = refused(tmp_path, tree)
    assert message.startswith(f"{key} must be "), message
    assert allowed in message
    assert ", got " in message  # ... and what was given


@pytest.mark.parametrize(
    "worker",
    [
        {"low_watermark": 0.8},  # equal to the high one
        {"high_watermark": 0.3},  # below the low one
        {"high_watermark": 0.0, "low_watermark": 0.0},
        {"high_watermark": 0.5, "low_watermark": 0.9},
    ],
)
def test_watermarks_out_of_order_name_both_keys(tmp_path: Path, worker: dict[str, Any]) -> None:
    message = refused(tmp_path, {"worker": worker})
    assert "worker.low_watermark" in message and "worker.high_watermark" in message
    assert "0 <= low_watermark < high_watermark <= 1" in message


def test_prebuffer_is_bounded_by_the_configured_ring(tmp_path: Path) -> None:
    tree = {"transport": {"websocket": {"frame_queue_size": 10}}, "audio": {"frame_duration_ms": 40}}
    assert (
        config.load(write(tmp_path, {**tree, "server": {"prebuffer_ms": 400}}), environ={}).server.prebuffer_ms == 400
    )
    message = refused(tmp_path, {**tree, "server": {"prebuffer_ms": 401}})
    assert "server.prebuffer_ms must be an integer in 0..400" in message
    with pytest.raises(ConfigError, match=r"^server\.prebuffer_ms must be an integer in 0\.\.40 "):
        config.load(
            None,
            environ={
                "RINGAUDIO__TRANSPORT__WEBSOCKET__FRAME_QUEUE_SIZE": "2",
                "RINGAUDIO__SERVER__PREBUFFER_MS": "200",
            },
        )


def test_the_default_prebuffer_is_not_held_against_a_tiny_ring() -> None:
    # 2 frames of 20 ms: the 200 ms default burst is simply what the ring holds (tests/engine runs this)
    cfg = config.load(None, environ={"RINGAUDIO__TRANSPORT__WEBSOCKET__FRAME_QUEUE_SIZE": "2"})
    assert (cfg.frame_queue_size, cfg.server.prebuffer_ms) == (2, 200)


def test_unknown_keys_name_the_key_and_what_is_known(tmp_path: Path) -> None:
    message = refused(tmp_path, at("server.idle_timeout", 5))
    assert "'server.idle_timeout'" in message and "idle_timeout_s" in message and "close_timeout_s" in message
    message = refused(tmp_path, {"sever": {}})
    assert "'sever'" in message and "server" in message
    message = refused(tmp_path, {"worker": "espeak"})
    assert message.startswith("worker must be a mapping of workers, backend,")


def test_a_yaml_syntax_error_is_one_line_naming_the_file(tmp_path: Path) -> None:
    (tmp_path / "worker.yaml").write_text("worker:\n  voice: en\n   speed: [175\n")
    with pytest.raises(ConfigError) as info:
        config.load(tmp_path, environ={})
    message = str(info.value)
    assert "\n" not in message and "worker.yaml" in message and "line " in message


def test_environment_values_are_checked_the_same_way() -> None:
    for environ, key in [
        ({"RINGAUDIO__WORKER__RESAMPLE_QUALITY": "ultra"}, "worker.resample_quality"),
        ({"RINGAUDIO__AUDIO__ADAPTIVE_QUALITY": "banana"}, "audio.adaptive_quality"),
        ({"RINGAUDIO__SERVER__TICK_MS": "'20'"}, "server.tick_ms"),
        ({"RINGAUDIO__WORKER__SYNTHETIC_RTF": ".nan"}, "worker.synthetic_rtf"),
        (
            {"RINGAUDIO__AUDIO__QUALITY_LEVELS": "[{sample_rate: 8000, frame_duration_ms: 20}]"},
            "audio.quality_levels[0]",
        ),
        ({"LOG_LEVEL": "loud"}, "log_level"),
    ]:
        with pytest.raises(ConfigError, match=rf"^{re.escape(key)}[. ]"):
            config.load(None, environ=environ)
    with pytest.raises(ConfigError, match="RINGAUDIO__AUDIO"):  # a section and a key under it both set
        config.load(None, environ={"RINGAUDIO__AUDIO": "1", "RINGAUDIO__AUDIO__FRAME_DURATION_MS": "20"})


def test_the_defaults_load() -> None:
    cfg = config.load(None, environ={})
    assert (cfg.frame_queue_size, cfg.frame_duration_ms, cfg.output_sample_rate, cfg.compress) == (
        50,
        20,
        48_000,
        False,
    )
    assert cfg.adaptive_quality is False
    assert cfg.quality_levels == (QualityLevel(48_000, 20), QualityLevel(24_000, 40))
    w = cfg.worker
    assert (w.backend, w.voice, w.speed, w.resample_quality, w.overflow) == ("auto", "en", 175, "hq", "block")
    assert (w.max_text_chars, w.clause_chars, w.synthetic_rtf, w.synthetic_rate) == (5_000, 80, 0.05, 22_050)
    assert (w.high_watermark, w.low_watermark) == (0.8, 0.5)
    assert 1 <= w.workers <= max(1, os.cpu_count() or 1)
    s = cfg.server
    assert (s.prebuffer_ms, s.max_sessions, s.max_message_bytes, s.max_queued_utterances) == (200, 256, 65_536, 16)
    assert (s.send_buffer_frames, s.allowed_origins, s.tick_ms) == (25, (), 5)
    assert (s.idle_timeout_s, s.public_metrics, s.send_budget_kb, s.close_timeout_s) == (60.0, False, 256, 2.0)
    assert isinstance(s.idle_timeout_s, float) and isinstance(s.close_timeout_s, float)
    assert cfg.log_level == "INFO"


def test_the_shipped_configs_load_and_match_the_defaults() -> None:
    shipped = config.load(ROOT / "configs", environ={})
    defaults = config.load(None, environ={})
    files: dict[str, Any] = {}
    for name in config.FILES:
        data = yaml.safe_load((ROOT / "configs" / name).read_text())
        assert not set(data) & set(files)  # each section in one file
        files.update(data)
    # every default is in the files, with the same value (log_level is left to LOG_LEVEL)
    assert files == {key: value for key, value in config.DEFAULTS.items() if key != "log_level"}
    assert shipped == defaults


def test_edge_values_are_accepted(tmp_path: Path) -> None:
    tree = {
        "transport": {"websocket": {"frame_queue_size": 2, "compress": True}},
        "server": {
            "prebuffer_ms": 0,
            "max_sessions": 10_000,
            "max_message_bytes": MIB16,
            "max_queued_utterances": 1000,
            "send_buffer_frames": 10_000,
            "allowed_origins": ["https://home.example"],
            "tick_ms": 100,
            "idle_timeout_s": 0,
            "public_metrics": True,
            "send_budget_kb": 16,
            "close_timeout_s": 0.1,
        },
        "audio": {
            "frame_duration_ms": 40,
            "output_sample_rate": 16_000,
            "adaptive_quality": True,
            "quality_levels": [{"sample_rate": 16_000, "frame_duration_ms": 40}],
        },
        "worker": {
            "workers": 64,
            "backend": "synthetic",
            "voice": "gmw/en-US+f3_1.x",
            "speed": 500,
            "resample_quality": "vhq",
            "max_text_chars": 100_000,
            "clause_chars": 10,
            "synthetic_rtf": 0,  # an int where a float belongs is fine
            "synthetic_rate": 8_000,
            "overflow": "drop_oldest",
            "high_watermark": 1,
            "low_watermark": 0,
        },
        "log_level": "warning",
    }
    cfg = config.load(write(tmp_path, tree), environ={})
    assert cfg.adaptive_quality is True and cfg.quality_levels == (QualityLevel(16_000, 40),)
    assert (cfg.server.idle_timeout_s, cfg.server.close_timeout_s, cfg.server.public_metrics) == (0.0, 0.1, True)
    assert (cfg.worker.synthetic_rtf, cfg.worker.high_watermark, cfg.worker.low_watermark) == (0.0, 1.0, 0.0)
    assert isinstance(cfg.worker.synthetic_rtf, float)
    assert (cfg.worker.voice, cfg.worker.workers, cfg.log_level) == ("gmw/en-US+f3_1.x", 64, "WARNING")
    assert cfg.frame_samples == 640
    other = {"speed": 80, "high_watermark": 0.01, "low_watermark": 0.0, "synthetic_rtf": 10, "voice": "x" * 64}
    edge = {"worker": other, "server": {"idle_timeout_s": 86_400, "close_timeout_s": 30, "send_budget_kb": 65_536}}
    cfg = config.load(write(tmp_path, edge), environ={"RINGAUDIO__SERVER__IDLE_TIMEOUT_S": "1"})
    assert (cfg.worker.speed, cfg.server.idle_timeout_s, cfg.server.close_timeout_s) == (80, 1.0, 30.0)


@pytest.mark.parametrize("capacity", [2, 3, 7, 50, 100_000])
@pytest.mark.parametrize(("high", "low"), [(0.8, 0.5), (1.0, 0.0), (0.01, 0.0), (0.51, 0.5), (1.0, 0.999)])
def test_watermarks_that_load_suit_every_ring(capacity: int, high: float, low: float) -> None:
    # what RingArena.create does with them: pause at hi >= 1 frames, resume at lo < hi
    cfg = config.load(
        None, environ={"RINGAUDIO__WORKER__HIGH_WATERMARK": str(high), "RINGAUDIO__WORKER__LOW_WATERMARK": str(low)}
    )
    hi, lo = layout.watermark_frames(capacity, cfg.worker.high_watermark, cfg.worker.low_watermark)
    assert 0 <= lo < hi <= capacity


def test_settings_built_by_hand_still_construct() -> None:
    # the fields added since keep defaults: a Config built from the original fields works
    defaults = config.load(None, environ={})
    s = defaults.server
    server = ServerSettings(
        prebuffer_ms=s.prebuffer_ms,
        max_sessions=s.max_sessions,
        max_message_bytes=s.max_message_bytes,
        max_queued_utterances=s.max_queued_utterances,
        send_buffer_frames=s.send_buffer_frames,
        allowed_origins=s.allowed_origins,
        tick_ms=s.tick_ms,
    )
    assert server == s
    cfg = Config(
        frame_queue_size=50,
        compress=False,
        frame_duration_ms=20,
        output_sample_rate=48_000,
        worker=defaults.worker,
        server=server,
    )
    assert (cfg.adaptive_quality, cfg.quality_levels, cfg.log_level) == (False, defaults.quality_levels, "INFO")
    assert not math.isnan(cfg.worker.synthetic_rtf)


@pytest.mark.parametrize(
    ("worker_yaml", "key"),
    [
        ("worker:\n  resample_quality: ultra\n", "worker.resample_quality"),
        ("audio:\n  adaptive_quality: banana\n", "audio.adaptive_quality"),
    ],
)
def test_the_server_exits_2_naming_the_key(tmp_path: Path, worker_yaml: str, key: str) -> None:
    (tmp_path / "worker.yaml").write_text(worker_yaml)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RINGAUDIO") and k != "LOG_LEVEL"}
    cmd = [sys.executable, "-m", "ringaudio.server", "--port", "0", "--backend", "synthetic", "--config", str(tmp_path)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=30, env=env, cwd=ROOT)
    assert done.returncode == 2, done.stderr
    assert f"configuration error: {key} must be " in done.stderr


def test_the_lead_is_checked_against_the_prebuffer_and_the_high_watermark() -> None:
    assert config.load(None, environ={}).worker.lead_ms == 400
    assert config.load(None, environ={"RINGAUDIO__WORKER__LEAD_MS": "0"}).worker.lead_ms == 0  # unpaced
    for bad in ("100", "900", "true", "300.5"):  # below the 200 ms prebuffer, above 0.8 × 1 s, not integers
        with pytest.raises(ConfigError, match=r"^worker\.lead_ms must be 0 \(no pacing"):
            config.load(None, environ={"RINGAUDIO__WORKER__LEAD_MS": bad})
    # a default lead follows a larger prebuffer and fits a small ring
    assert config.load(None, environ={"RINGAUDIO__SERVER__PREBUFFER_MS": "400"}).worker.lead_ms == 600
    small = {"RINGAUDIO__TRANSPORT__WEBSOCKET__FRAME_QUEUE_SIZE": "10", "RINGAUDIO__SERVER__PREBUFFER_MS": "100"}
    assert config.load(None, environ=small).worker.lead_ms == 160


def test_a_programs_flags_are_the_last_layer_and_checked_like_the_others(tmp_path: Path) -> None:
    write(tmp_path, {"worker": {"workers": 4}})
    environ = {"RINGAUDIO__WORKER__WORKERS": "3", "LOG_LEVEL": "ERROR"}
    assert config.load(tmp_path, environ).worker.workers == 3  # the environment over the files
    cfg = config.load(tmp_path, environ, {"worker.workers": 2, "log_level": "debug"})
    assert (cfg.worker.workers, cfg.log_level) == (2, "DEBUG")  # the flags over the environment
    assert config.load(None, {}, {"worker.lead_ms": 0}).worker.lead_ms == 0
    for overrides, message in [
        ({"worker.workers": 0}, "worker.workers must be auto or an integer in 1..64, got 0"),
        ({"worker.workers": "2"}, "worker.workers must be auto or an integer in 1..64, got '2'"),  # not parsed
        ({"worker.lead_ms": 100}, "worker.lead_ms must be 0 (no pacing"),  # checked against the prebuffer
        ({"worker.wrokers": 2}, "unknown configuration key 'worker.wrokers'"),
    ]:
        with pytest.raises(ConfigError) as info:
            config.load(None, {}, overrides)
        assert str(info.value).startswith(message) and "\n" not in str(info.value)


def test_env_name_is_the_variable_that_sets_a_key() -> None:
    assert config.env_name("worker.lead_ms") == "RINGAUDIO__WORKER__LEAD_MS"
    assert (
        config.env_name("transport.websocket.frame_queue_size") == "RINGAUDIO__TRANSPORT__WEBSOCKET__FRAME_QUEUE_SIZE"
    )
    assert config.env_name("log_level") == "LOG_LEVEL"
    assert config.load(None, {config.env_name("worker.speed"): "90"}).worker.speed == 90


def test_config_defaults_files_and_environment(tmp_path: Path) -> None:
    folder = tmp_path
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
    assert config.load(ROOT / "configs", environ={}).frame_queue_size == 50  # the shipped files load


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


def test_adaptive_quality_needs_levels_the_worker_can_make() -> None:
    from ringaudio import config as config_mod

    ok = config_mod.load(None, overrides={"audio.adaptive_quality": True})
    assert ok.adaptive_quality and ok.quality_times == (2.0, 10.0, 5.0)
    bad = {
        "include audio.output_sample_rate/audio.frame_duration_ms": [{"sample_rate": 24_000, "frame_duration_ms": 40}],
        "would not fit the ring's slots": [
            {"sample_rate": 48_000, "frame_duration_ms": 20},
            {"sample_rate": 48_000, "frame_duration_ms": 40},
        ],
    }
    with pytest.raises(ConfigError, match=r"quality_levels\[1\]\.sample_rate must divide 24000 by 1, 2 or 3"):
        levels_24 = [{"sample_rate": 24_000, "frame_duration_ms": 20}, {"sample_rate": 16_000, "frame_duration_ms": 20}]
        config_mod.load(
            None,
            overrides={
                "audio.adaptive_quality": True,
                "audio.output_sample_rate": 24_000,
                "audio.quality_levels": levels_24,
            },
        )
    for message, levels in bad.items():
        with pytest.raises(ConfigError, match=message):
            config_mod.load(None, overrides={"audio.adaptive_quality": True, "audio.quality_levels": levels})
    # without adaptive quality the levels are only checked for their own values
    assert not config_mod.load(
        None, overrides={"audio.quality_levels": bad["would not fit the ring's slots"]}
    ).adaptive_quality
    with pytest.raises(ConfigError, match=r"audio\.quality_hold_s must be a number"):
        config_mod.load(None, overrides={"audio.quality_hold_s": 0})
