"""Configuration: defaults, then ``configs/*.yaml``, then environment variables; one object, passed along.

Keys keep the operators' names (``transport.websocket.frame_queue_size``, ``audio.frame_duration_ms``,
``audio.output_sample_rate``, ...). Any key can be overridden from the environment as
``RINGAUDIO__<PATH>`` with ``__`` between levels, e.g. ``RINGAUDIO__AUDIO__FRAME_DURATION_MS=40`` or
``RINGAUDIO__WORKER__WORKERS=2``; ``LOG_LEVEL`` sets ``log_level``. Values are parsed as YAML scalars.
Unknown keys and wrong types are refused with :class:`~ringaudio.errors.ConfigError`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError

DEFAULTS: dict[str, Any] = {
    "log_level": "INFO",
    "transport": {"websocket": {"frame_queue_size": 50, "compress": False}},
    "server": {
        "prebuffer_ms": 200,  # burst sent at the start of a stream, then real time
        "max_sessions": 256,  # rings in the arena: one per connection
        "max_message_bytes": 65_536,  # larger client messages close the connection (1009)
        "max_queued_utterances": 16,
        "send_buffer_frames": 25,  # a client with more unsent than this is "not consuming"
        "allowed_origins": [],  # empty: any Origin (and none); else the list
        "tick_ms": 5,
    },
    "audio": {
        "frame_duration_ms": 20,
        "output_sample_rate": 48_000,
        "adaptive_quality": False,
        "quality_levels": [
            {"sample_rate": 48_000, "frame_duration_ms": 20},
            {"sample_rate": 24_000, "frame_duration_ms": 40},
        ],
    },
    "worker": {
        "workers": "auto",  # auto: one per core, at least 1
        "backend": "auto",  # auto: espeak when espeak-ng is installed, else synthetic
        "voice": "en",
        "speed": 175,
        "resample_quality": "hq",
        "max_text_chars": 5_000,
        "clause_chars": 80,
        "synthetic_rtf": 0.05,
        "synthetic_rate": 22_050,
        "overflow": "block",
        "high_watermark": 0.8,
        "low_watermark": 0.5,
    },
}
FILES = ("orchestrator.yaml", "worker.yaml")


@dataclass(frozen=True)
class WorkerSettings:
    workers: int
    backend: str
    voice: str
    speed: int
    resample_quality: str
    max_text_chars: int
    clause_chars: int
    synthetic_rtf: float
    synthetic_rate: int
    overflow: str
    high_watermark: float
    low_watermark: float


@dataclass(frozen=True)
class ServerSettings:
    prebuffer_ms: int
    max_sessions: int
    max_message_bytes: int
    max_queued_utterances: int
    send_buffer_frames: int
    allowed_origins: tuple[str, ...]
    tick_ms: int


@dataclass(frozen=True)
class Config:
    frame_queue_size: int
    compress: bool
    frame_duration_ms: int
    output_sample_rate: int
    worker: WorkerSettings
    server: ServerSettings
    log_level: str = "INFO"
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False)

    @property
    def frame_samples(self) -> int:
        return self.output_sample_rate * self.frame_duration_ms // 1000


def _merge(base: dict[str, Any], over: Mapping[str, Any], path: str = "") -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        where = f"{path}{key}"
        if key not in base:
            raise ConfigError(f"unknown configuration key {where!r}")
        if isinstance(base[key], dict):
            if not isinstance(value, Mapping):
                raise ConfigError(f"{where!r} must be a mapping, got {value!r}")
            out[key] = _merge(base[key], value, where + ".")
        else:
            out[key] = value
    return out


def _env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for name, text in environ.items():
        if name == "LOG_LEVEL":
            tree["log_level"] = text
        if not name.startswith("RINGAUDIO__"):
            continue
        path = [p.lower() for p in name[len("RINGAUDIO__") :].split("__")]
        node = tree
        for part in path[:-1]:
            node = node.setdefault(part, {})
        try:
            node[path[-1]] = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{name}: {exc}") from None
    return tree


def _typed(value: Any, kind: type, where: str) -> Any:
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ConfigError(f"{where} must be {kind.__name__}, got {value!r}")
    return value


def load(config_dir: str | os.PathLike[str] | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """Defaults ← ``config_dir/*.yaml`` (those present) ← environment."""
    tree = DEFAULTS
    if config_dir is not None:
        folder = Path(config_dir)
        if not folder.is_dir():
            raise ConfigError(f"configuration folder {str(folder)!r} does not exist")
        for name in FILES:
            path = folder / name
            if path.exists():
                try:
                    data = yaml.safe_load(path.read_text()) or {}
                except yaml.YAMLError as exc:
                    raise ConfigError(f"{path}: {exc}") from None
                if not isinstance(data, Mapping):
                    raise ConfigError(f"{path}: the top level must be a mapping")
                tree = _merge(tree, data)
    tree = _merge(tree, _env_overrides(os.environ if environ is None else environ))
    ws = tree["transport"]["websocket"]
    audio = tree["audio"]
    w = tree["worker"]
    frame_ms = _typed(audio["frame_duration_ms"], int, "audio.frame_duration_ms")
    if frame_ms not in (20, 40):
        raise ConfigError(f"audio.frame_duration_ms must be 20 or 40, got {frame_ms}")
    rate = _typed(audio["output_sample_rate"], int, "audio.output_sample_rate")
    if rate not in (48_000, 24_000, 16_000):
        raise ConfigError(f"audio.output_sample_rate must be 48000, 24000 or 16000, got {rate}")
    queue = _typed(ws["frame_queue_size"], int, "transport.websocket.frame_queue_size")
    if not 2 <= queue <= 100_000:
        raise ConfigError(f"transport.websocket.frame_queue_size must be in 2..100000, got {queue}")
    workers = w["workers"]
    if workers == "auto":
        workers = max(1, os.cpu_count() or 1)
    workers = _typed(workers, int, "worker.workers")
    if not 1 <= workers <= 64:
        raise ConfigError(f"worker.workers must be 'auto' or 1..64, got {workers}")
    backend = _typed(w["backend"], str, "worker.backend")
    if backend not in ("auto", "espeak", "synthetic"):
        raise ConfigError(f"worker.backend must be auto, espeak or synthetic, got {backend!r}")
    settings = WorkerSettings(
        workers=workers,
        backend=backend,
        voice=_typed(w["voice"], str, "worker.voice"),
        speed=_typed(w["speed"], int, "worker.speed"),
        resample_quality=_typed(w["resample_quality"], str, "worker.resample_quality"),
        max_text_chars=_typed(w["max_text_chars"], int, "worker.max_text_chars"),
        clause_chars=_typed(w["clause_chars"], int, "worker.clause_chars"),
        synthetic_rtf=_typed(w["synthetic_rtf"], float, "worker.synthetic_rtf"),
        synthetic_rate=_typed(w["synthetic_rate"], int, "worker.synthetic_rate"),
        overflow=_typed(w["overflow"], str, "worker.overflow"),
        high_watermark=_typed(w["high_watermark"], float, "worker.high_watermark"),
        low_watermark=_typed(w["low_watermark"], float, "worker.low_watermark"),
    )
    srv = tree["server"]
    origins = srv["allowed_origins"]
    if not isinstance(origins, list) or not all(isinstance(o, str) for o in origins):
        raise ConfigError("server.allowed_origins must be a list of origins")
    server = ServerSettings(
        prebuffer_ms=_typed(srv["prebuffer_ms"], int, "server.prebuffer_ms"),
        max_sessions=_typed(srv["max_sessions"], int, "server.max_sessions"),
        max_message_bytes=_typed(srv["max_message_bytes"], int, "server.max_message_bytes"),
        max_queued_utterances=_typed(srv["max_queued_utterances"], int, "server.max_queued_utterances"),
        send_buffer_frames=_typed(srv["send_buffer_frames"], int, "server.send_buffer_frames"),
        allowed_origins=tuple(origins),
        tick_ms=_typed(srv["tick_ms"], int, "server.tick_ms"),
    )
    for name in ("max_sessions", "max_message_bytes", "max_queued_utterances", "send_buffer_frames", "tick_ms"):
        if getattr(server, name) < 1:
            raise ConfigError(f"server.{name} must be at least 1")
    level = _typed(tree["log_level"], str, "log_level").upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise ConfigError(f"log_level must be DEBUG, INFO, WARNING, ERROR or CRITICAL, got {level!r}")
    return Config(
        frame_queue_size=queue,
        compress=_typed(ws["compress"], bool, "transport.websocket.compress"),
        frame_duration_ms=frame_ms,
        output_sample_rate=rate,
        worker=settings,
        server=server,
        log_level=level,
        raw=tree,
    )
