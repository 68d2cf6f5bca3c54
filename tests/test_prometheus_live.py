"""A real Prometheus (Debian's, on loopback) scraping a real server every second with the shipped
alert rules: a paused reader under drop_oldest makes FramesDropped fire, a client that stops reading
makes ClientNotConsuming fire, and a healthy server fires nothing."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect

from ringaudio.client import speak

from .server.conftest import ServerProcess

PROMETHEUS = shutil.which("prometheus")
ALERTS = Path(__file__).resolve().parents[1] / "deploy" / "prometheus" / "alerts.yml"
DASHBOARD = json.loads((Path(__file__).resolve().parents[1] / "deploy" / "grafana" / "ringaudio.json").read_text())
LONG = "This sentence goes on for a while, so that the stream keeps going. " * 8
pytestmark = pytest.mark.skipif(PROMETHEUS is None, reason="prometheus is not installed (scripts/env.sh installs it)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[Any]:
    srv = ServerProcess({"RINGAUDIO__WORKER__OVERFLOW": "drop_oldest", "RINGAUDIO__WORKER__SYNTHETIC_RTF": "0"})
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        f"rule_files: ['{ALERTS}']\n"
        "scrape_configs:\n"
        f"  - job_name: ringaudio\n    static_configs: [{{targets: ['127.0.0.1:{srv.port}']}}]\n"
    )
    assert PROMETHEUS is not None
    args = [f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'data'}"]
    args += [f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"]
    proc = subprocess.Popen(
        [PROMETHEUS, *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    api = f"http://127.0.0.1:{port}/api/v1"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready", timeout=2)
                break
            except OSError:
                assert time.monotonic() < deadline, "prometheus did not start"
                time.sleep(0.2)
        yield srv, api
    finally:
        proc.terminate()
        proc.wait(10)
        assert srv.stop() == 0


def query(api: str, expr: str) -> list[Any]:
    url = f"{api}/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=5) as r:
        result: list[Any] = json.loads(r.read())["data"]["result"]
    return result


def alerts(api: str) -> dict[str, str]:
    with urllib.request.urlopen(f"{api}/alerts", timeout=5) as r:
        data = json.loads(r.read())["data"]["alerts"]
    return {a["labels"]["alertname"]: a["state"] for a in data}


def wait_for(api: str, name: str, timeout: float = 45) -> tuple[str, float]:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        state = alerts(api).get(name)
        if state == "firing":
            return state, time.monotonic() - t0
        time.sleep(0.5)
    return alerts(api).get(name, "inactive"), time.monotonic() - t0


def test_frames_dropped_and_client_not_consuming_fire_on_a_real_prometheus(prometheus: Any) -> None:
    srv, api = prometheus
    time.sleep(3)  # a few healthy scrapes first
    assert alerts(api) == {}  # a healthy server fires nothing
    assert asyncio.run(speak(srv.url, ["A short one, heard whole."])).lost == 0  # an utterance's RTF, first audio

    async def paused_reader() -> None:
        async with connect(srv.url) as ws:
            await ws.recv()
            await ws.send(json.dumps({"type": "synthesize", "text": LONG}))
            while not isinstance(await ws.recv(), bytes):
                pass
            await ws.send(json.dumps({"type": "control", "action": "pause"}))
            await asyncio.to_thread(wait_for, api, "FramesDropped")

    empty: list[str] = []

    async def stalled_reader() -> None:
        async with connect(srv.url, max_queue=1) as ws:  # reads nothing: its socket fills
            await ws.send(json.dumps({"type": "synthesize", "text": LONG}))
            await asyncio.to_thread(wait_for, api, "ClientNotConsuming")
            for panel in DASHBOARD["panels"]:  # while a session lives, every panel has something to show
                for target in panel["targets"]:
                    deadline = time.monotonic() + 15  # a rate needs two scrapes of a new series
                    while not await asyncio.to_thread(query, api, target["expr"]):
                        if time.monotonic() > deadline:
                            empty.append(panel["title"])
                            break
                        await asyncio.sleep(0.5)

    t0 = time.monotonic()
    asyncio.run(paused_reader())
    dropped_after = time.monotonic() - t0
    t0 = time.monotonic()
    asyncio.run(stalled_reader())
    slow_after = time.monotonic() - t0
    state = alerts(api)
    assert state.get("FramesDropped") == "firing", state
    assert state.get("ClientNotConsuming") == "firing", state
    assert empty == [], f"dashboard panels with no data: {empty}"
    print(f"FramesDropped firing after {dropped_after:.1f} s, ClientNotConsuming after {slow_after:.1f} s")
