"""``python -m ringaudio.say "Hello" [--device N] [--out file.wav]``: speak through the sound card.

The engine runs in this process tree (no server, no socket); frames go through a jitter buffer to
PortAudio, or into a WAV file with ``--out``. On a machine with no audio device it says so and exits
with status 2 unless ``--out`` is given.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path

from . import config as config_mod
from . import logs
from .config import Config
from .engine import Engine, Event, Frame
from .errors import RingAudioError
from .playback import DeviceSink, NoAudioDevice, Sink, WavSink, check_output_device

EXIT_NO_DEVICE = 2


def _device(value: str | None) -> int | str | None:
    if value is None:
        return None
    return int(value) if value.lstrip("-").isdigit() else value


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m ringaudio.say", description="speak text through the sound card")
    parser.add_argument("text", nargs="+", help="one or more utterances, spoken back to back")
    parser.add_argument("--out", type=Path, help="write a WAV file instead of playing")
    parser.add_argument("--device", help="PortAudio output device (index or name); default: the system's")
    parser.add_argument("--voice", help="voice of the backend (espeak: en, de, fr, ...)")
    parser.add_argument("--backend", choices=config_mod.BACKENDS, help="overrides worker.backend")
    default_configs = Path("configs") if Path("configs").is_dir() else None
    parser.add_argument("--config", type=Path, default=default_configs, help="folder with worker.yaml")
    parser.add_argument("--buffer-frames", type=int, default=3, help="jitter buffer before playback starts")
    return parser


def configure(args: argparse.Namespace, environ: Mapping[str, str]) -> Config:
    """The configuration for these arguments; ConfigError for a bad value in any layer."""
    # what this tool chooses for itself, over the files, unless the environment says otherwise
    chosen: dict[str, object] = {"log_level": "WARNING"}  # a command line tool: quiet unless asked
    if args.out is not None:  # rendering a file: as fast as synthesis goes, no real-time pacing
        chosen["worker.lead_ms"] = 0
    overrides = {k: v for k, v in chosen.items() if config_mod.env_name(k) not in environ}
    overrides["worker.workers"] = 1  # one voice speaking: one worker
    if args.backend is not None:
        overrides["worker.backend"] = args.backend
    return config_mod.load(args.config, environ, overrides)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    device = _device(args.device)
    if args.out is None:
        try:
            name = check_output_device(device)  # fail before starting any worker
        except NoAudioDevice as exc:
            print(f"ringaudio.say: no audio output: {exc}. Use --out FILE.wav to write a file.", file=sys.stderr)
            return EXIT_NO_DEVICE
        print(f"playing on {name}", file=sys.stderr)
    try:
        cfg = configure(args, os.environ)
    except RingAudioError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 1
    logs.setup(cfg.log_level, stream=sys.stderr)  # a command-line tool: its logs with its other messages
    failed = False
    stats: dict[str, object] = {}
    try:
        with Engine(cfg) as engine:
            sink: Sink
            if args.out is not None:
                sink = WavSink(args.out, engine.sample_rate)
            else:
                sink = DeviceSink(engine.sample_rate, engine.frame_samples, device, args.buffer_frames)
            try:
                t0 = time.monotonic()
                stream = engine.open_stream()
                for text in args.text:
                    stream.say(text, voice=args.voice)
                frames = 0
                for item in stream:
                    if isinstance(item, Frame):
                        if frames == 0:
                            stats["first_audio_ms"] = round((time.monotonic() - t0) * 1000, 1)
                        sink.write(item.pcm)
                        frames += 1
                    elif isinstance(item, Event) and item.type in ("error", "overrun"):
                        failed = failed or item.type == "error"
                        print(json.dumps(item.to_dict()), file=sys.stderr)
                stats["frames"] = frames
                stats["seconds"] = round(frames * engine.frame_ms / 1000, 2)
            finally:
                sink.close()
            if isinstance(sink, DeviceSink):
                stats.update(sink.stats())
    except NoAudioDevice as exc:
        print(f"ringaudio.say: no audio output: {exc}. Use --out FILE.wav to write a file.", file=sys.stderr)
        return EXIT_NO_DEVICE
    except RingAudioError as exc:
        print(f"ringaudio.say: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    if args.out is not None:
        stats["out"] = str(args.out)
    print(json.dumps(stats), file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
