"""Configuration: defaults ← ``configs/*.yaml`` ← environment variables ← command line; one object, passed along.

Keys keep the operators' names (``transport.websocket.frame_queue_size``, ``audio.frame_duration_ms``,
``audio.output_sample_rate``, ...). Any key can be overridden from the environment as
``RINGAUDIO__<PATH>`` with ``__`` between levels, e.g. ``RINGAUDIO__AUDIO__FRAME_DURATION_MS=40`` or
``RINGAUDIO__WORKER__WORKERS=2``; ``LOG_LEVEL`` sets ``log_level``. Values are parsed as YAML scalars.
A program's own flags (``--workers 2``) are the last layer, ``overrides`` of :func:`load`, given by
dotted key with their values as they are (``{"worker.workers": 2}``).

Every key is validated by type and by value when loaded, whichever layer set it: unknown keys, wrong
types (a number given as a string, a boolean where a number belongs, NaN or infinity) and values out
of range are refused with :class:`~ringaudio.errors.ConfigError`, whose message is one line naming the
dotted key, what was given and what is allowed, e.g. ``worker.resample_quality must be one of fast,
hq, vhq, got 'ultra'`` (the checks are :mod:`ringaudio.checks`). So a value the server would trip
over later (a worker that cannot build its resampler, a ring arena that refuses its watermarks)
stops it at start instead. Not checked here: what depends on the machine (is espeak-ng installed,
does it know the voice, does ``/dev/shm`` hold ``max_sessions`` rings of ``frame_queue_size`` frames).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from . import checks as c
from .errors import ConfigError
from .resample import QUALITIES, RATES
from .ring.layout import POLICIES

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
        "idle_timeout_s": 60,  # a connection that neither synthesizes nor listens this long is closed; 0: never
        "public_metrics": False,  # with a token set, /metrics and /healthz need it unless this is true
        "send_budget_kb": 256,  # KiB of outbound messages a session may have queued before it is closed
        "close_timeout_s": 2,  # a closing handshake longer than this aborts the transport
        "kernel_lanes": True,  # steady sessions served by one C call per pass (false: each pumped in Python)
    },
    "audio": {
        "frame_duration_ms": 20,
        "output_sample_rate": 48_000,
        "adaptive_quality": False,
        "opus_bitrate": 32_000,  # bit/s of a session that asks for Opus
        "quality_down_s": 2.0,  # adaptive quality: congested this long -> one level down
        "quality_up_s": 10.0,  # ... healthy this long -> one level up
        "quality_hold_s": 5.0,  # ... and at most one change per this many seconds
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
        "lead_ms": 400,  # the worker writes at most this far ahead of its stream's real playback time
    },
}
FILES = ("orchestrator.yaml", "worker.yaml")

SAMPLE_RATES = (48_000, 24_000, 16_000)  # audio.output_sample_rate and each quality level's
FRAME_DURATIONS_MS = (20, 40)  # audio.frame_duration_ms and each quality level's
BACKENDS = ("auto", "espeak", "synthetic")  # worker.backend, and the programs' --backend


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
    lead_ms: int = 400


@dataclass(frozen=True)
class ServerSettings:
    prebuffer_ms: int
    max_sessions: int
    max_message_bytes: int
    max_queued_utterances: int
    send_buffer_frames: int
    allowed_origins: tuple[str, ...]
    tick_ms: int
    idle_timeout_s: float = 60.0  # 0: never
    public_metrics: bool = False
    send_budget_kb: int = 256
    close_timeout_s: float = 2.0
    kernel_lanes: bool = True


@dataclass(frozen=True)
class QualityLevel:
    """One rung of ``audio.quality_levels``."""

    sample_rate: int
    frame_duration_ms: int


DEFAULT_QUALITY_LEVELS = (QualityLevel(48_000, 20), QualityLevel(24_000, 40))


@dataclass(frozen=True)
class Config:
    frame_queue_size: int
    compress: bool
    frame_duration_ms: int
    output_sample_rate: int
    worker: WorkerSettings
    server: ServerSettings
    log_level: str = "INFO"
    adaptive_quality: bool = False
    quality_levels: tuple[QualityLevel, ...] = DEFAULT_QUALITY_LEVELS
    opus_bitrate: int = 32_000
    quality_times: tuple[float, ...] = (2.0, 10.0, 5.0)  # audio.quality_down_s, quality_up_s, quality_hold_s

    @property
    def frame_samples(self) -> int:
        return self.output_sample_rate * self.frame_duration_ms // 1000


def _merge(base: dict[str, Any], over: Mapping[str, Any], path: str = "") -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        where = f"{path}{key}"
        if key not in base:
            section = path.rstrip(".") or "the top level"
            raise ConfigError(f"unknown configuration key {where!r} ({section} has {', '.join(map(str, base))})")
        if isinstance(base[key], dict):
            if not isinstance(value, Mapping):
                raise ConfigError(f"{where} must be a mapping of {', '.join(base[key])}, got {c.show(value)}")
            out[key] = _merge(base[key], value, where + ".")
        else:
            out[key] = value
    return out


def _yaml_error(where: object, exc: yaml.YAMLError) -> ConfigError:
    """A YAML syntax error on one line: where, line and column, the problem."""
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        return ConfigError(f"{where}: line {mark.line + 1}, column {mark.column + 1}: {exc.problem}")
    return ConfigError(f"{where}: {' '.join(str(exc).split())}")


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
            if not isinstance(node, dict):
                raise ConfigError(f"{name}: {'.'.join(path[:-1])} is also set to a single value")
        try:
            node[path[-1]] = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise _yaml_error(name, exc) from None
    return tree


def _quality_levels(value: Any, where: str) -> tuple[QualityLevel, ...]:
    if not isinstance(value, list) or not value:
        c.refuse(where, "a non-empty list of mappings of sample_rate and frame_duration_ms", value)
    levels = []
    for index, item in enumerate(value):
        at = f"{where}[{index}]"
        if not isinstance(item, Mapping) or set(item) != {"sample_rate", "frame_duration_ms"}:
            c.refuse(at, "a mapping of exactly sample_rate and frame_duration_ms", item)
        rate = c.choice(item["sample_rate"], f"{at}.sample_rate", SAMPLE_RATES)
        frame_ms = c.choice(item["frame_duration_ms"], f"{at}.frame_duration_ms", FRAME_DURATIONS_MS)
        levels.append(QualityLevel(rate, frame_ms))
    return tuple(levels)


def _fit_levels(levels: tuple[QualityLevel, ...], rate: int, frame_ms: int) -> None:
    """Adaptive quality starts at the configured format, and every level must fit its ring slot and
    be made from it by an integer decimation (the worker's level stage)."""
    where = "audio.quality_levels"
    if QualityLevel(rate, frame_ms) not in levels:
        raise ConfigError(
            f"{where} must include audio.output_sample_rate/audio.frame_duration_ms ({rate}/{frame_ms}): "
            "adaptive quality starts there"
        )
    for index in range(1, len(levels)):
        if levels[index].sample_rate > levels[index - 1].sample_rate:
            raise ConfigError(
                f"{where} must go from the best level down: [{index}] has a higher rate than [{index - 1}]"
            )
    for index, level in enumerate(levels):
        if rate % level.sample_rate or rate // level.sample_rate > 3:
            raise ConfigError(f"{where}[{index}].sample_rate must divide {rate} by 1, 2 or 3, got {level.sample_rate}")
        if level.sample_rate * level.frame_duration_ms > rate * frame_ms:
            raise ConfigError(
                f"{where}[{index}] ({level.sample_rate}/{level.frame_duration_ms}) holds more samples per frame "
                f"than audio.output_sample_rate/audio.frame_duration_ms ({rate}/{frame_ms}): its frames would not fit "
                "the ring's slots"
            )


def env_name(key: str) -> str:
    """The environment variable that sets a dotted key: ``worker.lead_ms`` -> ``RINGAUDIO__WORKER__LEAD_MS``."""
    return "LOG_LEVEL" if key == "log_level" else "RINGAUDIO__" + key.upper().replace(".", "__")


def _nest(overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``{"worker.workers": 2}`` -> ``{"worker": {"workers": 2}}``: the shape of a file's layer."""
    tree: dict[str, Any] = {}
    for key, value in overrides.items():
        *sections, name = key.split(".")
        node = tree
        for part in sections:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{key}: {part} is also set to a single value")
        node[name] = value
    return tree


def _layers(
    config_dir: str | os.PathLike[str] | None, environ: Mapping[str, str], overrides: Mapping[str, Any]
) -> Iterator[Mapping[str, Any]]:
    """What each layer sets, lowest first: the files of ``config_dir`` that exist, the environment,
    the overrides (each is read once the ones below it have merged, so the first bad one is named)."""
    if config_dir is not None:
        folder = Path(config_dir)
        if not folder.is_dir():
            raise ConfigError(f"configuration folder {str(folder)!r} does not exist")
        yield from _files(folder)
    yield _env_overrides(environ)
    yield _nest(overrides)


def _files(folder: Path) -> Iterator[Mapping[str, Any]]:
    for name in FILES:
        path = folder / name
        if path.exists():
            try:
                data = yaml.safe_load(path.read_text()) or {}
            except yaml.YAMLError as exc:
                raise _yaml_error(path, exc) from None
            if not isinstance(data, Mapping):
                raise ConfigError(f"{path}: the top level must be a mapping")
            yield data


def load(
    config_dir: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """Defaults ← ``config_dir/*.yaml`` (those present) ← environment ← ``overrides`` (a program's own
    flags, by dotted key); every value checked, with the same one-line ConfigError whichever layer set it."""
    tree = DEFAULTS
    layers: list[Mapping[str, Any]] = []  # what each layer set, for the checks that ask who set a key
    for layer in _layers(config_dir, os.environ if environ is None else environ, overrides or {}):
        layers.append(layer)
        tree = _merge(tree, layer)
    ws = tree["transport"]["websocket"]
    audio = tree["audio"]
    w = tree["worker"]
    srv = tree["server"]

    frame_ms = c.choice(audio["frame_duration_ms"], "audio.frame_duration_ms", FRAME_DURATIONS_MS)
    rate = c.choice(audio["output_sample_rate"], "audio.output_sample_rate", SAMPLE_RATES)
    adaptive = c.boolean(audio["adaptive_quality"], "audio.adaptive_quality")
    opus_bitrate = c.integer(audio["opus_bitrate"], "audio.opus_bitrate", 6_000, 256_000)
    quality_times = tuple(
        c.number(audio[key], f"audio.{key}", 0.1, 3600) for key in ("quality_down_s", "quality_up_s", "quality_hold_s")
    )
    levels = _quality_levels(audio["quality_levels"], "audio.quality_levels")
    if adaptive:
        _fit_levels(levels, rate, frame_ms)
    queue = c.integer(ws["frame_queue_size"], "transport.websocket.frame_queue_size", 2, 100_000)
    compress = c.boolean(ws["compress"], "transport.websocket.compress")

    high, low = c.watermarks(w["high_watermark"], w["low_watermark"], "worker")
    settings = WorkerSettings(
        workers=c.workers(w["workers"], "worker.workers"),
        backend=c.choice(w["backend"], "worker.backend", BACKENDS),
        voice=c.voice(w["voice"], "worker.voice"),
        speed=c.integer(w["speed"], "worker.speed", 80, 500),
        resample_quality=c.choice(w["resample_quality"], "worker.resample_quality", tuple(QUALITIES)),
        max_text_chars=c.integer(w["max_text_chars"], "worker.max_text_chars", 1, 100_000),
        clause_chars=c.integer(w["clause_chars"], "worker.clause_chars", 10, 10_000),
        synthetic_rtf=c.number(w["synthetic_rtf"], "worker.synthetic_rtf", 0, 10),
        synthetic_rate=c.choice(w["synthetic_rate"], "worker.synthetic_rate", RATES),
        overflow=c.choice(w["overflow"], "worker.overflow", tuple(POLICIES)),
        high_watermark=high,
        low_watermark=low,
    )

    # A prebuffer longer than the ring is refused when someone sets it; the default (200 ms) is not
    # held against a shorter ring (frame_queue_size below 10): the burst is then what the ring holds.
    ring_ms = queue * frame_ms
    prebuffer = srv["prebuffer_ms"]
    given = any("prebuffer_ms" in layer.get("server", {}) for layer in layers)
    limit = ring_ms if given else max(ring_ms, DEFAULTS["server"]["prebuffer_ms"])
    if not c.is_int(prebuffer) or not 0 <= prebuffer <= limit:
        c.refuse(
            "server.prebuffer_ms",
            f"an integer in 0..{ring_ms} (transport.websocket.frame_queue_size × audio.frame_duration_ms)",
            prebuffer,
        )
    # The lead paces the worker against real time; the watermarks are backpressure, so a healthy
    # stream (which holds about the lead) must stay below the high one, and the server's first
    # burst (the prebuffer) must fit in the lead. A default lead is fitted to a small ring.
    high_ms = int(high * queue) * frame_ms
    lead = w["lead_ms"]
    if any("lead_ms" in layer.get("worker", {}) for layer in layers):
        if not c.is_int(lead) or not (lead == 0 or max(frame_ms, prebuffer) <= lead <= high_ms):
            c.refuse(
                "worker.lead_ms",
                f"0 (no pacing: as fast as the watermarks let it) or an integer in {max(frame_ms, prebuffer)}.."
                f"{high_ms} (from server.prebuffer_ms, and at most worker.high_watermark × frame_queue_size × "
                "frame_duration_ms)",
                lead,
            )
    else:
        lead = max(frame_ms, min(max(lead, prebuffer + 200), high_ms))
    settings = dataclasses.replace(settings, lead_ms=lead)
    server = ServerSettings(
        prebuffer_ms=prebuffer,
        max_sessions=c.integer(srv["max_sessions"], "server.max_sessions", 1, 10_000),
        max_message_bytes=c.integer(srv["max_message_bytes"], "server.max_message_bytes", 256, 16 << 20),
        max_queued_utterances=c.integer(srv["max_queued_utterances"], "server.max_queued_utterances", 1, 1_000),
        send_buffer_frames=c.integer(srv["send_buffer_frames"], "server.send_buffer_frames", 1, 10_000),
        allowed_origins=c.origins(srv["allowed_origins"], "server.allowed_origins"),
        tick_ms=c.integer(srv["tick_ms"], "server.tick_ms", 1, 100),
        idle_timeout_s=c.idle_timeout(srv["idle_timeout_s"], "server.idle_timeout_s"),
        public_metrics=c.boolean(srv["public_metrics"], "server.public_metrics"),
        send_budget_kb=c.integer(srv["send_budget_kb"], "server.send_budget_kb", 16, 65_536),
        close_timeout_s=c.number(srv["close_timeout_s"], "server.close_timeout_s", 0.1, 30),
        kernel_lanes=c.boolean(srv["kernel_lanes"], "server.kernel_lanes"),
    )
    return Config(
        frame_queue_size=queue,
        compress=compress,
        frame_duration_ms=frame_ms,
        output_sample_rate=rate,
        worker=settings,
        server=server,
        log_level=c.log_level(tree["log_level"], "log_level"),
        adaptive_quality=adaptive,
        quality_levels=levels,
        opus_bitrate=opus_bitrate,
        quality_times=quality_times,
    )
