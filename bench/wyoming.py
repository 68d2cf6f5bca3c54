"""The Wyoming service against the WebSocket server on the same text: ``python -m bench.wyoming``.

For each backend (synthetic, and espeak-ng where it is installed): first-chunk latency of the same
sentence, 10 runs each, through ``python -m ringaudio.wyoming`` (the ``wyoming`` package's client)
and through ``python -m ringaudio.server`` (``ringaudio.client``); then CPU per stream: 10 concurrent
Wyoming clients, the service's and its workers' CPU seconds per second of audio delivered.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import time

import psutil

from ringaudio import client

from .common import LoggedProcess, machine

TEXT = "Turning on the kitchen lights. It is twenty one degrees inside."


class Wyoming(LoggedProcess):
    def __init__(self, backend: str) -> None:
        cmd = [sys.executable, "-m", "ringaudio.wyoming", "--uri", "tcp://127.0.0.1:0", "--backend", backend]
        env = {**os.environ, "LOG_LEVEL": "INFO"}
        super().__init__([*cmd, "--workers", "1"], env, what="wyoming service", ready="wyoming listening")


class Server(LoggedProcess):
    def __init__(self, backend: str) -> None:
        cmd = [sys.executable, "-m", "ringaudio.server", "--port", "0", "--backend", backend, "--workers", "1"]
        super().__init__(cmd, {**os.environ, "LOG_LEVEL": "INFO"})


async def wyoming_once(port: int, text: str) -> tuple[float, float]:
    from wyoming.audio import AudioChunk, AudioStart, AudioStop
    from wyoming.client import AsyncTcpClient
    from wyoming.tts import Synthesize

    async with AsyncTcpClient("127.0.0.1", port) as c:
        t0 = time.monotonic()
        await c.write_event(Synthesize(text=text).event())
        first, samples, rate = None, 0, 1
        while True:
            ev = await c.read_event()
            assert ev is not None
            if AudioStart.is_type(ev.type):
                rate = AudioStart.from_event(ev).rate
            elif AudioChunk.is_type(ev.type):
                first = first if first is not None else (time.monotonic() - t0) * 1000
                samples += len(ev.payload or b"") // 2
            elif AudioStop.is_type(ev.type):
                assert first is not None
                return first, samples / rate


def cpu(proc: LoggedProcess) -> float:
    p = psutil.Process(proc.proc.pid)
    return sum(sum(x.cpu_times()[:2]) for x in [p, *p.children(recursive=True)])


def run(backend: str, repeats: int) -> dict[str, float]:
    row: dict[str, float] = {}
    wy = Wyoming(backend)
    try:
        asyncio.run(wyoming_once(wy.port, TEXT))  # warm
        firsts = [asyncio.run(wyoming_once(wy.port, TEXT))[0] for _ in range(repeats)]
        row["wyoming_first_ms_p50"] = round(statistics.median(firsts), 1)
        c0, t0 = cpu(wy), time.monotonic()

        async def many() -> list[tuple[float, float]]:
            return list(await asyncio.gather(*(wyoming_once(wy.port, TEXT) for _ in range(10))))

        got = asyncio.run(many())
        audio = sum(s for _, s in got)
        row["cpu_s_per_audio_s"] = round((cpu(wy) - c0) / audio, 4)
        row["wall_s_10_streams"] = round(time.monotonic() - t0, 2)
    finally:
        wy.stop()
    srv = Server(backend)
    try:
        url = f"ws://127.0.0.1:{srv.port}/ws"
        asyncio.run(client.speak(url, [TEXT]))
        ws = [asyncio.run(client.speak(url, [TEXT])).first_audio_ms or 0.0 for _ in range(repeats)]
        row["websocket_first_ms_p50"] = round(statistics.median(ws), 1)
    finally:
        srv.stop()
    return row


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.wyoming")
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    backends = ["synthetic"] + (["espeak"] if shutil.which("espeak-ng") else [])
    print("| backend | first chunk, Wyoming (p50) | first audio, WebSocket (p50) | CPU s per audio s (10 streams) |")
    print("|---|---|---|---|")
    for backend in backends:
        r = run(backend, args.repeats)
        print(
            f"| {backend} | {r['wyoming_first_ms_p50']} ms | {r['websocket_first_ms_p50']} ms "
            f"| {r['cpu_s_per_audio_s']} ({r['wall_s_10_streams']} s wall) |"
        )
    print(f"\n{machine()}; one worker; {TEXT!r}")


if __name__ == "__main__":
    main()
