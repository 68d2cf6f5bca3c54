"""Drops are counted when they happen, and the totals outlive the sessions."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request

from websockets.asyncio.client import connect

from .conftest import ServerProcess

LONG = "This sentence goes on for a while, so that the stream keeps going. " * 2  # ~9 s: well past a 2.5 s pause


def scrape(srv: ServerProcess) -> dict[str, float]:
    with urllib.request.urlopen(srv.http + "/metrics", timeout=10) as r:
        text = r.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def test_a_paused_drop_oldest_reader_shows_its_drops_while_paused_and_the_totals_stay() -> None:
    srv = ServerProcess({"RINGAUDIO__WORKER__OVERFLOW": "drop_oldest", "RINGAUDIO__WORKER__SYNTHETIC_RTF": "0"})
    try:

        async def go() -> tuple[dict[str, float], int, str]:
            async with connect(srv.url) as ws:
                session = json.loads(await ws.recv())["session_id"]
                await ws.send(json.dumps({"type": "synthesize", "text": LONG}))
                while not isinstance(await ws.recv(), bytes):  # playing
                    pass
                await ws.send(json.dumps({"type": "control", "action": "pause"}))
                await asyncio.sleep(2.5)  # the stream goes on without us: the ring is overwritten
                during = await asyncio.to_thread(scrape, srv)
                await ws.send(json.dumps({"type": "control", "action": "resume"}))
                lost = 0
                while True:
                    m = await ws.recv()
                    if isinstance(m, str):
                        ev = json.loads(m)
                        lost += ev["lost"] if ev["type"] == "overrun" else 0
                        if ev["type"] == "utterance.end":
                            return during, lost, session

        during, lost, session = asyncio.run(go())
        series = f'tts_frames_dropped_total{{session_id="{session}"}}'
        assert during[series] > 0  # seen while the reader was still paused (it used to show 0 until resume)
        assert during["tts_frames_lost_total"] >= during[series]
        assert lost > 0  # what the client was told once it resumed
        deadline = time.monotonic() + 10
        while (after := scrape(srv)).get(series) is not None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert series not in after  # the session's series is gone with it ...
        assert after["tts_frames_lost_total"] >= lost  # ... the total is not
        assert after["tts_overruns_total"] >= 1 and after["tts_frames_sent_total"] > 0
        assert after['tts_utterances_total{outcome="ended"}'] >= 1
    finally:
        assert srv.stop() == 0
