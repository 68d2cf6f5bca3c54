"""``python -m ringaudio.server [--host 127.0.0.1] [--port 8080] [--config configs/] [--workers N]
[--backend auto|espeak|synthetic] [--log-level LEVEL] [--processes N] [--instance NAME]``."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import re
import signal
import sys
from pathlib import Path

from .. import config as config_mod
from .. import logs
from ..config import Config
from ..errors import ConfigError, RingAudioError
from .app import App
from .instances import FAMILY_ENV, check_instance
from .supervise import Supervisor


def _loop_factory() -> type[asyncio.AbstractEventLoop] | None:
    try:
        import uvloop

        return uvloop.Loop  # type: ignore[no-any-return]
    except ImportError:  # pragma: no cover - uvloop is a dependency, but not on every platform
        return None


def configure(argv: list[str] | None = None) -> tuple[argparse.Namespace, Config]:
    """The arguments and the configuration they select; ConfigError for a bad value in any layer."""
    parser = argparse.ArgumentParser(
        prog="python -m ringaudio.server", description="ringaudio WebSocket server", allow_abbrev=False
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (loopback unless you say otherwise)")
    parser.add_argument("--port", type=int, default=8080, help="0 picks a free port (logged at start)")
    default_configs = Path("configs") if Path("configs").is_dir() else None
    parser.add_argument(
        "--config", type=Path, default=default_configs, help="folder with orchestrator.yaml, worker.yaml"
    )
    parser.add_argument("--workers", type=int, help="worker processes (overrides worker.workers)")
    parser.add_argument("--backend", choices=config_mod.BACKENDS, help="overrides worker.backend")
    parser.add_argument("--log-level", help="DEBUG, INFO, WARNING, ERROR (overrides LOG_LEVEL)")
    parser.add_argument(
        "--processes", type=int, default=1, help="server processes on one port (SO_REUSEPORT), each with its workers"
    )
    parser.add_argument("--instance", default="", help="this server's name: its session ids start with it")
    parser.add_argument("--siblings", default=None, help=argparse.SUPPRESS)  # set by --processes for its processes
    args = parser.parse_args(argv)
    if not 1 <= args.processes <= 64:
        raise ConfigError(f"--processes: {args.processes} is not within 1..64")
    if args.instance:
        check_instance(args.instance)
    if args.siblings is not None and args.processes > 1:
        raise ConfigError("--processes: a process of a --processes server cannot start processes of its own")
    args.family = os.environ.get(FAMILY_ENV, "") if args.siblings is not None else ""
    if not re.fullmatch(r"[0-9a-f]{0,32}", args.family):
        raise ConfigError(f"{FAMILY_ENV}: not a token of up to 32 hex digits")
    args.siblings = tuple(check_instance(n) for n in args.siblings.split(",") if n) if args.siblings else ()
    flags = {"worker.workers": args.workers, "worker.backend": args.backend, "log_level": args.log_level}
    # the flags given are the last layer, checked like the others
    return args, config_mod.load(args.config, overrides={k: v for k, v in flags.items() if v is not None})


def main(argv: list[str] | None = None) -> int:
    try:
        args, cfg = configure(argv)
    except RingAudioError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    logs.setup(cfg.log_level)
    if args.processes > 1:
        try:
            argv = sys.argv[1:] if argv is None else argv
            supervisor = Supervisor(argv, args.host, args.port, args.processes, args.instance)
        except OSError as exc:
            logging.getLogger("ringaudio.server").error("cannot serve: %s", exc)
            return 1
        return supervisor.run()
    # the WebSocket library's DEBUG lines trace every frame it sends: "frame sent" is ours, once
    logging.getLogger("ringaudio.websockets").setLevel(max(logging.INFO, logging.getLogger("ringaudio").level))
    app = App(
        cfg,
        host=args.host,
        port=args.port,
        instance=args.instance,
        siblings=args.siblings,
        family=args.family,
        own_process=True,
    )

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, app.request_stop)
        await app.run()

    try:
        factory = _loop_factory()
        if factory is not None:
            with asyncio.Runner(loop_factory=factory) as runner:
                runner.run(serve())
        else:
            asyncio.run(serve())
    except RingAudioError as exc:
        logging.getLogger("ringaudio.server").error("server failed: %s", exc)
        return 1
    except OSError as exc:
        logging.getLogger("ringaudio.server").error("cannot serve: %s", exc)
        return 1
    return app.exit_code


if __name__ == "__main__":
    sys.exit(main())
