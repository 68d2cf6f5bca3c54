"""``python -m ringaudio.doctor`` against real servers with each of the runbook's causes provoked for
real: a client that stops reading, one that pauses for good while its acks say its buffer does not
drain, one that reads at 0.6× real time, one behind a slow, jittery link (bench/netsim), a fast
worker that laps its ring, a bandwidth cap (tbf in a namespace)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from bench import netns
from bench.common import LoggedProcess
from bench.netsim import Impairment, NetSim
from tests.server.conftest import ServerProcess

ROOT = Path(__file__).resolve().parents[2]
TEXT = "The quick brown fox jumps over the lazy dog, and keeps on running. " * 6  # ~25 s of audio


class Client:
    """A session in a thread of its own: ``pace`` seconds per frame read (0: as they come), or a
    stop after ``stall_after`` frames (it then reads nothing more, and holds the connection)."""

    def __init__(
        self, url: str, pace: float = 0.0, stall_after: int | None = None, pause_after: int | None = None
    ) -> None:
        self.url, self.pace, self.stall_after, self.pause_after = url, pace, stall_after, pause_after
        self.session_id = ""
        self.frames = 0
        self.ended = threading.Event()
        self.done = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        assert self._ready.wait(15), "no session event"

    def _run(self) -> None:
        try:
            # a client that stopped reading never reads the server's close frame behind its backlog:
            # do not wait the default 10 s for it when the test is done with the session
            with connect(self.url, max_size=None, max_queue=4, open_timeout=10, close_timeout=1) as ws:
                hello = json.loads(ws.recv(10))
                self.session_id = hello["session_id"]
                self._ready.set()
                ws.send(json.dumps({"type": "synthesize", "text": TEXT}))
                while not self.done.is_set():
                    try:
                        message = ws.recv(0.25)
                    except TimeoutError:
                        if self.pause_after is not None and self.frames >= self.pause_after:
                            # a player whose AudioContext stopped: it paused the stream, and its acks
                            # say the same 800 ms are still buffered
                            ack = {"type": "ack", "sequence": self.frames - 1, "buffered_ms": 800, "underruns": 0}
                            ws.send(json.dumps(ack))
                        continue
                    if isinstance(message, bytes):
                        self.frames += 1
                        if self.frames == self.pause_after:
                            ws.send(json.dumps({"type": "control", "action": "pause"}))
                        if self.stall_after is not None and self.frames >= self.stall_after:
                            self.done.wait()  # stops reading; the connection stays open
                        elif self.pace:
                            time.sleep(self.pace)
                    elif json.loads(message).get("type") == "utterance.end":
                        self.ended.set()
        except (ConnectionClosed, OSError):
            pass
        finally:
            self._ready.set()
            self.ended.set()

    def close(self) -> None:
        self.done.set()
        self._thread.join(10)


def doctor(http: str, *extra: str) -> tuple[int, dict[str, Any]]:
    done = subprocess.run(
        [sys.executable, "-m", "ringaudio.doctor", "--url", http, "--json", *extra],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert done.stdout.strip(), done.stderr
    return done.returncode, json.loads(done.stdout)


def causes(report: dict[str, Any]) -> dict[str | None, list[str]]:
    found: dict[str | None, list[str]] = {}
    for f in report["findings"]:
        found.setdefault(f["session_id"], []).append(f["cause"])
    return found


def show(report: dict[str, Any]) -> str:
    return json.dumps(report["findings"], indent=1)


@contextmanager
def server(env: dict[str, str] | None = None, args: tuple[str, ...] = ()) -> Iterator[ServerProcess]:
    srv = ServerProcess(env, args)
    try:
        yield srv
    finally:
        assert srv.stop() == 0


def test_a_healthy_server_gets_a_clean_bill_and_each_client_side_cause_its_verdict() -> None:
    with server() as srv:
        url = srv.url
        healthy = Client(url)
        paused = Client(url, pause_after=30)  # paused for good: a stall once it has lasted 10 s
        try:
            time.sleep(3)
            code, report = doctor(srv.http)
            assert code == 0 and report["healthy"] and report["findings"] == [], show(report)
            states = {s["session_id"]: s["state"] for s in report["sessions"]}
            assert states == {healthy.session_id: "streaming", paused.session_id: "paused"}
            port = srv.port
            link = Impairment(delay_ms=120, jitter_ms=40)
            with NetSim.running(port, up=link, down=link) as sim:
                stalled = Client(url, stall_after=40)
                overloaded = Client(url, pace=0.033)  # 33 ms per 20 ms frame: 0.6× real time
                remote = Client(f"ws://127.0.0.1:{sim.port}/ws")
                try:
                    time.sleep(6.5)
                    code, report = doctor(srv.http)
                finally:
                    for c in (stalled, overloaded, remote):
                        c.close()
            assert code == 1 and not report["healthy"]
            found = causes(report)
            assert found.get(stalled.session_id) == ["client_playback_stall"], show(report)
            assert found.get(overloaded.session_id) == ["client_cpu_overload"], show(report)
            assert found.get(remote.session_id) == ["slow_network"], show(report)
            assert found.get(paused.session_id) == ["client_playback_stall"], show(report)
            assert healthy.session_id not in found, show(report)
            assert None not in found, show(report)  # nothing wrong with the server itself
            by_id = {s["session_id"]: s for s in report["sessions"]}
            assert by_id[remote.session_id]["rtt_ms"] > 150
            assert by_id[healthy.session_id]["rtt_ms"] < 50
            for f in report["findings"]:
                assert f["problem"] and f["runbook"] and f["resolution"] and f["evidence"]
        finally:
            healthy.close()
            paused.close()


def test_a_worker_that_laps_its_ring_is_told_from_a_slow_client_and_the_log_remembers() -> None:
    env = {
        "RINGAUDIO__WORKER__OVERFLOW": "drop_oldest",
        "RINGAUDIO__WORKER__LEAD_MS": "0",  # no pacing: as fast as the synthetic voice goes
        "RINGAUDIO__WORKER__SYNTHETIC_RTF": "0.2",
    }
    with server(env) as srv:
        client = Client(srv.url)
        try:
            time.sleep(3)
            code, report = doctor(srv.http)
            assert code == 1, show(report)
            assert causes(report) == {client.session_id: ["worker_too_fast"]}, show(report)
            text = " ".join(report["findings"][0]["evidence"])
            assert "while the client kept up" in text and "worker pacing off" in text
        finally:
            client.close()
        time.sleep(0.5)
        log = srv.http.replace("http://", "")  # a file name of its own
        path = Path(f"/tmp/doctor-{log.replace(':', '-').replace('.', '-')}.log")
        try:
            path.write_text("".join(json.dumps(entry) + "\n" for entry in srv.lines))
            code, report = doctor(srv.http, "--log", str(path), "--interval", "0.2")
            assert code == 1, show(report)
            assert causes(report) == {client.session_id: ["worker_too_fast"]}, show(report)
            assert "from the log" in report["findings"][0]["title"]
        finally:
            path.unlink(missing_ok=True)


class NamespacedServer(ServerProcess):
    """The same server, started inside ``ns`` and listening on its address."""

    def __init__(self, ns: netns.Namespace) -> None:
        env = {**os.environ, "RINGAUDIO__WORKER__SYNTHETIC_RTF": "0.05", "RINGAUDIO__WORKER__WORKERS": "1"}
        cmd = [sys.executable, "-m", "ringaudio.server", "--port", "0", "--backend", "synthetic", "--host", ns.ns_ip]
        LoggedProcess.__init__(self, ns.command(*cmd), env)


@pytest.mark.skipif(netns.cap_available() is not None, reason=f"no capped namespace: {netns.cap_available()}")
def test_a_bandwidth_cap_is_websocket_congestion() -> None:
    with netns.capped(400) as ns:  # the stream needs 779 kbit/s
        srv = NamespacedServer(ns)
        try:
            client = Client(f"ws://{ns.ns_ip}:{srv.port}/ws")
            try:
                time.sleep(6)
                code, report = doctor(f"http://{ns.ns_ip}:{srv.port}")
            finally:
                client.close()
        finally:
            assert srv.stop() == 0
    assert code == 1, show(report)
    assert causes(report) == {client.session_id: ["websocket_congestion"]}, show(report)
    session = report["sessions"][0]
    assert session["socket_send_queue_bytes"] > session["client_unread_bytes"]


def test_the_token_and_an_unreachable_server_exit_2() -> None:
    with server({"RINGAUDIO_TOKEN": "s3cret"}) as srv:
        code, report = doctor(srv.http, "--interval", "0")
        assert code == 2 and not report["reachable"] and "401" in report["error"] and "--token" in report["error"]
        code, report = doctor(srv.http, "--interval", "0", "--token", "s3cret")
        assert code == 0 and report["healthy"]
        port = srv.port
    code, report = doctor(f"http://127.0.0.1:{port}", "--interval", "0")
    assert code == 2 and not report["reachable"]
    plain = subprocess.run(
        [sys.executable, "-m", "ringaudio.doctor", "--url", f"http://127.0.0.1:{port}", "--interval", "0"],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
    )
    assert plain.returncode == 2 and "cannot reach the server" in plain.stderr and plain.stdout == ""
