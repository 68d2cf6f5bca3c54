"""``python -m ringaudio.wyoming [--uri tcp://127.0.0.1:10200] [--config configs] [--workers N]
[--backend auto|espeak|synthetic] [--rate HZ]``: the Wyoming protocol (Home Assistant's) on
ringaudio's Engine. ``--rate`` is what clients get (default: the engine's audio.output_sample_rate;
Home Assistant satellites commonly take 16000 or 22050), resampled by ringaudio's own resampler.

Frames go out as fast as synthesis makes them and the client reads them (``--lead-ms 0`` by
default, whatever ``worker.lead_ms`` says: a Wyoming client buffers what it plays); the watermarks
hold the worker back from a client that reads slowly.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import logging
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlparse

from wyoming.info import Attribution, Info, TtsProgram, TtsVoice

from .. import __version__, logs
from .. import config as config_mod
from ..engine import Engine
from ..errors import RingAudioError
from ..resample import RATES
from .framing import MAX_HEADER
from .service import Connection

log = logging.getLogger("ringaudio.wyoming")
ESPEAK = Attribution(name="eSpeak NG", url="https://github.com/espeak-ng/espeak-ng")
RINGAUDIO = Attribution(name="ringaudio", url="https://github.com/ringaudio/ringaudio")


def espeak_voices() -> list[TtsVoice]:
    """espeak-ng's installed voices, with their languages."""
    program = shutil.which("espeak-ng")
    if program is None:
        return []
    listed = subprocess.run([program, "--voices"], capture_output=True, text=True, timeout=10).stdout
    voices = []
    for line in listed.splitlines()[1:]:
        cols = line.split()
        if len(cols) >= 5:  # Pty Language Age/Gender VoiceName File [Other Languages]
            languages = [cols[1], *(c.strip("()") for c in cols[5:] if not c[0].isdigit())]
            voices.append(
                TtsVoice(
                    name=cols[1],
                    description=cols[3].replace("_", " "),
                    attribution=ESPEAK,
                    installed=True,
                    version=None,
                    languages=languages,
                )
            )
    return voices


def info(backend: str) -> Info:
    if backend == "espeak":
        voices = espeak_voices()
    else:
        synthetic = TtsVoice(
            name="synthetic",
            description="ringaudio's synthetic voice (speech-like tones, for tests)",
            attribution=RINGAUDIO,
            installed=True,
            version=__version__,
            languages=["en"],
        )
        voices = [synthetic]
    program = TtsProgram(
        name="ringaudio",
        description=f"ringaudio {__version__}: {backend} voices, streamed from shared memory as they are made",
        attribution=RINGAUDIO,
        installed=True,
        version=__version__,
        voices=voices,
        supports_synthesize_streaming=True,
    )
    return Info(tts=[program])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ringaudio.wyoming", description="Wyoming TTS on ringaudio")
    parser.add_argument("--uri", default="tcp://127.0.0.1:10200", help="tcp://HOST:PORT (port 0: a free one)")
    default_configs = Path("configs") if Path("configs").is_dir() else None
    parser.add_argument("--config", type=Path, default=default_configs)
    parser.add_argument("--workers", type=int)
    parser.add_argument("--backend", choices=config_mod.BACKENDS)
    parser.add_argument("--rate", type=int, help="the audio's sample rate (default: the engine's)")
    parser.add_argument("--log-level")
    parser.add_argument("--lead-ms", type=int, default=0, help="the worker's pacing (0: as fast as it synthesizes)")
    args = parser.parse_args(argv)
    uri = urlparse(args.uri)
    if uri.scheme != "tcp" or uri.hostname is None or uri.port is None:
        print(f"configuration error: --uri must be tcp://HOST:PORT, got {args.uri}", file=sys.stderr)
        return 2
    flags = {
        "worker.workers": args.workers,
        "worker.backend": args.backend,
        "log_level": args.log_level,
        "worker.lead_ms": args.lead_ms,
    }
    try:
        cfg = config_mod.load(args.config, overrides={k: v for k, v in flags.items() if v is not None})
    except RingAudioError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    rate = args.rate or cfg.output_sample_rate
    if rate not in RATES:
        print(f"configuration error: --rate must be one of {', '.join(map(str, RATES))}, got {rate}", file=sys.stderr)
        return 2
    logs.setup(cfg.log_level)
    engine = Engine(cfg)
    try:
        engine.start()
    except RingAudioError as exc:
        log.error("wyoming service failed: %s", exc)
        return 1
    if rate != cfg.output_sample_rate:  # the clients' resampler, loaded now rather than on a first speech
        from ..resample import warm

        warm(((cfg.output_sample_rate, rate),))
    backend = engine.pool.backend if engine.pool is not None else "synthetic"
    try:
        asyncio.run(serve(engine, info(backend), rate, uri.hostname, uri.port))
    except OSError as exc:
        log.error("cannot serve: %s", exc)
        return 1
    finally:
        engine.close()
    return 0


async def serve(engine: Engine, description: Info, rate: int, host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    # every stream's waits run in the executor: room for all of them at once
    loop.set_default_executor(concurrent.futures.ThreadPoolExecutor(engine.config.server.max_sessions + 4))
    stopping = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    connections: set[asyncio.Task[None]] = set()

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        connections.add(task)
        try:
            await Connection(engine, description, rate, reader, writer).run()
        finally:
            connections.discard(task)

    server = await asyncio.start_server(accept, host, port, limit=MAX_HEADER)
    bound = server.sockets[0].getsockname()
    logs.event(
        log, logging.INFO, "wyoming listening", None, host=bound[0], port=bound[1], rate=rate, version=__version__
    )
    async with server:
        await stopping.wait()
        logs.event(log, logging.INFO, "wyoming stopping", None, connections=len(connections))
        server.close()
        for task in list(connections):
            task.cancel()
        await asyncio.gather(*connections, return_exceptions=True)
    logs.event(log, logging.INFO, "wyoming stopped", None)


if __name__ == "__main__":
    sys.exit(main())
