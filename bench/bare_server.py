"""The peer of the load benchmark: a bare websockets + uvloop server sending canned frames.

Same port protocol as ringaudio (a ``session`` message, then binary frames with the 24-byte header
and 1 920 bytes of PCM), same schedule (a 10-frame burst, then one frame per 20 ms from one ticker for
all clients), no TTS, no rings, no metrics: ringaudio's own overhead is the difference.
``python -m bench.bare_server --port 0`` logs ``{"message": "server listening", "port": ...}`` to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time

import uvloop
from websockets.asyncio.server import ServerConnection, broadcast, serve

from ringaudio import wire as P

PERIOD = 0.02
PREBUFFER = 10


class Client:
    __slots__ = ("seq", "tokens", "ws")

    def __init__(self, ws: ServerConnection) -> None:
        self.ws = ws
        self.seq = 0
        self.tokens = float(PREBUFFER)


async def main(port: int) -> None:
    clients: set[Client] = set()
    frame = bytearray(P.HEADER_SIZE + 1920)

    async def handler(ws: ServerConnection) -> None:
        # (a listen_key, so the fan-out scenario's listeners can ask to listen: every connection gets
        # canned frames, which is what one stream fanned out to N listeners costs without an engine)
        session = {"type": "session", "session_id": "bare", "listen_key": "bare", "frame_samples": 960}
        await ws.send(json.dumps({**session, "sample_rate": 48000}))
        client = Client(ws)
        clients.add(client)
        try:
            async for _ in ws:
                pass
        finally:
            clients.discard(client)

    async def ticker() -> None:
        last = time.monotonic()
        while True:
            now = time.monotonic()
            grow = (now - last) / PERIOD
            last = now
            for c in list(clients):
                c.tokens = min(float(PREBUFFER), c.tokens + grow)
                while c.tokens >= 1:
                    P.HEADER.pack_into(frame, 0, P.MAGIC, P.VERSION, 0, 1, c.seq, int(time.time() * 1e6))
                    broadcast([c.ws], frame)
                    c.seq += 1
                    c.tokens -= 1
            await asyncio.sleep(max(0.0, 0.005 - (time.monotonic() - now)))

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with serve(handler, "127.0.0.1", port, compression=None, ping_interval=None, close_timeout=2) as server:
        bound = next(iter(server.sockets)).getsockname()[1]
        print(json.dumps({"message": "server listening", "port": bound}), file=sys.stderr, flush=True)
        task = asyncio.create_task(ticker())
        await stop.wait()
        task.cancel()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    uvloop.run(main(parser.parse_args().port))
