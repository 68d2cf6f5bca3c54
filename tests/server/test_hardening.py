"""Hostile clients, stuck workers and shutdown against the real server process: nothing can freeze
it, make it hold memory without bound, outlive SIGTERM, or get past its limits."""

from __future__ import annotations

import asyncio
import base64
import json
import math
import os
import signal
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import psutil
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from bench.rawclient import accept_for, encode_frame, handshake_request

from .conftest import ServerProcess, start, wait_until
from .test_server import LONG, frames_of, recv_event, run

TEXT = 0x1


class RawClient:
    """A blocking WebSocket client that reads nothing unless told: a tiny receive buffer, so what
    the server sends backs up on the server's side, as a stuck or hostile client's would."""

    def __init__(self, port: int, target: str = "/ws", rcvbuf: int = 4096) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.connect(("127.0.0.1", port))
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(handshake_request("127.0.0.1", port, target, key))
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(1)
            assert chunk, "closed during the handshake"
            head += chunk
        assert b" 101 " in head.split(b"\r\n")[0] and accept_for(key).encode() in head, head

    def send(self, message: dict[str, Any] | str) -> bool:
        """Send one text message; False once the server has cut the connection."""
        text = message if isinstance(message, str) else json.dumps(message)
        try:
            self.sock.sendall(encode_frame(TEXT, text.encode("utf-8", "surrogatepass")))
            return True
        except OSError:
            return False

    def close(self) -> None:
        self.sock.close()


def rss_mb(srv: ServerProcess) -> float:
    return float(psutil.Process(srv.proc.pid).memory_info().rss) / 2**20


def health(srv: ServerProcess, timeout: float = 2.0, headers: dict[str, str] | None = None) -> dict[str, Any]:
    request = urllib.request.Request(srv.http + "/healthz", headers=headers or {})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return dict(json.loads(response.read()))


def worker_pids(srv: ServerProcess) -> list[int]:
    return [
        p.pid
        for p in psutil.Process(srv.proc.pid).children(recursive=True)
        if "resource_tracker" not in " ".join(p.cmdline())
    ]


def still_serves(srv: ServerProcess) -> bool:
    """A fresh session afterwards gets a whole utterance."""

    async def go() -> int:
        async with connect(srv.url) as ws:
            await ws.recv()
            return await frames_of(ws, "Still here.")

    return bool(run(go()) > 0)


@pytest.fixture
def fresh() -> Iterator[ServerProcess]:
    srv = start()
    yield srv
    assert srv.stop() == 0


# -- 1. the freeze ---------------------------------------------------------------------------------


def test_long_request_ids_are_refused_and_the_server_never_freezes(fresh: ServerProcess) -> None:
    """The reproduction: 40 sessions × 16 synthesize with a 65 000-character request_id froze the
    whole server for good. Now each is refused at the door, and /healthz answers throughout."""
    big = "r" * 65_000

    async def session() -> list[str]:
        async with connect(fresh.url, max_size=None) as ws:
            await ws.recv()
            for _ in range(16):
                await ws.send(json.dumps({"type": "synthesize", "text": "Hello there.", "request_id": big}))
            codes = []
            while len(codes) < 16:
                ev = json.loads(await asyncio.wait_for(ws.recv(), 30))
                if ev["type"] in ("error", "queued"):
                    codes.append(ev.get("code", ev["type"]))
            return codes

    async def go() -> list[list[str]]:
        return list(await asyncio.gather(*(session() for _ in range(40))))

    results: list[list[list[str]]] = []
    t = threading.Thread(target=lambda: results.append(run(go())))
    t.start()
    while t.is_alive():
        assert health(fresh)["status"] in ("ok", "degraded")  # answers within 2 s
        t.join(0.2)
    assert results and all(codes == ["invalid_field"] * 16 for codes in results[0])


def test_a_worker_that_does_not_read_never_blocks_the_event_loop(fresh: ServerProcess) -> None:
    """The mechanism behind the freeze: a worker that stops reading its pipe (here: SIGSTOP) while
    40 sessions queue 16 utterances each, with the largest text allowed and the longest request id.
    The event loop writes to no pipe, so /healthz answers within 2 s all along and reports the
    worker stale; once it runs again, every utterance finishes or is refused with an error."""
    (pid,) = worker_pids(fresh)
    text = ("Many words to say, and then some more of them. " * 110)[:5000]
    rid = "q" * 128
    os.kill(pid, signal.SIGSTOP)
    try:

        async def session() -> tuple[list[str], dict[str, Any]]:
            async with connect(fresh.url, max_size=None) as ws:
                await ws.recv()
                for _ in range(16):
                    await ws.send(json.dumps({"type": "synthesize", "text": text, "request_id": rid}))
                answers: list[str] = []
                while len(answers) < 16:
                    ev = json.loads(await asyncio.wait_for(ws.recv(), 60))
                    if ev["type"] in ("queued", "error"):
                        answers.append(ev.get("code", ev["type"]))
                await ws.send(json.dumps({"type": "cancel"}))  # answered once the worker runs again
                return answers, await recv_event(ws, "cancelled", timeout=120)

        async def go() -> list[tuple[list[str], dict[str, Any]]]:
            return list(await asyncio.gather(*(session() for _ in range(40))))

        box: list[list[tuple[list[str], dict[str, Any]]]] = []
        t = threading.Thread(target=lambda: box.append(run(go())))
        t.start()
        t0 = time.monotonic()
        stale_seen = False
        while time.monotonic() - t0 < 6:
            h = health(fresh)  # within 2 s, or this raises
            stale_seen = stale_seen or pid in h["workers"]["stale"]
            time.sleep(0.25)
        assert stale_seen and h["status"] == "degraded"
    finally:
        os.kill(pid, signal.SIGCONT)
    t.join(120)
    assert not t.is_alive() and box
    assert all(answers == ["queued"] * 16 and ev["type"] == "cancelled" for answers, ev in box[0])
    wait_until(lambda: health(fresh)["status"] == "ok", timeout=10)

    assert still_serves(fresh)


# -- 2. the non-reader -----------------------------------------------------------------------------


def test_a_client_that_never_reads_is_closed_and_memory_stays_bounded(fresh: ServerProcess) -> None:
    """A client that sends and sends but never reads what it is answered: its answers count
    against the send budget (256 KiB); over it, the server closes the connection (1008)."""
    base = rss_mb(fresh)
    client = RawClient(fresh.port)
    bad = {"type": "synthesize", "text": "", "request_id": "x" * 128}  # an error per message, echoing the id
    sent = 0
    t0 = time.monotonic()
    while client.send(bad) and time.monotonic() - t0 < 60:
        sent += 1
    client.close()
    assert time.monotonic() - t0 < 60, "the server never cut the non-reader off"
    wait_until(lambda: bool(fresh.logged("session over its send budget")), timeout=10)
    over = fresh.logged("session over its send budget")[-1]
    assert over["budget_bytes"] == 256 * 1024
    wait_until(lambda: any(e.get("code") == 1008 for e in fresh.logged("session closed")), timeout=10)
    growth = rss_mb(fresh) - base
    print(f"non-reader: {sent} messages sent before the close; server RSS grew {growth:.1f} MB")
    assert growth < 40  # the budget is 0.25 MB; allow for the allocator and the library's buffers

    assert still_serves(fresh)


def test_pings_from_a_client_that_never_reads_count_against_its_budget(fresh: ServerProcess) -> None:
    client = RawClient(fresh.port)
    ping = encode_frame(0x9, b"p" * 125)
    t0 = time.monotonic()
    try:
        while time.monotonic() - t0 < 60:
            client.sock.sendall(ping * 64)
    except OSError:
        pass
    finally:
        client.close()
    assert time.monotonic() - t0 < 60, "pongs were buffered without end"
    assert health(fresh)["status"] == "ok"


# -- 3. shutdown -----------------------------------------------------------------------------------


def test_sigterm_with_clients_that_do_not_read_exits_0_within_5_s() -> None:
    srv = start()
    clients = [RawClient(srv.port) for _ in range(10)]
    for c in clients:
        c.send({"type": "synthesize", "text": LONG})
    time.sleep(2.0)  # their audio fills every buffer between us and them
    t0 = time.monotonic()
    srv.proc.send_signal(signal.SIGTERM)
    try:
        code = srv.proc.wait(10)
    finally:
        elapsed = time.monotonic() - t0
        for c in clients:
            c.close()
        srv.stop()
    assert code == 0 and elapsed < 5, (code, elapsed)


# -- 4. max_sessions counts listeners --------------------------------------------------------------


def test_listeners_count_against_max_sessions() -> None:
    srv = start({"RINGAUDIO__SERVER__MAX_SESSIONS": "3"})
    try:

        async def go() -> tuple[list[str], list[int | None]]:
            owner = await connect(srv.url)
            hello = json.loads(await owner.recv())
            conns = []
            for _ in range(2):
                ws = await connect(srv.url)
                await ws.recv()
                await ws.send(
                    json.dumps({"type": "listen", "session_id": hello["session_id"], "key": hello["listen_key"]})
                )
                await recv_event(ws, "listening")
                conns.append(ws)
            codes, closes = [], []
            for _ in range(10):  # each one over the limit is refused, listener or not
                ws = await connect(srv.url)
                codes.append(json.loads(await ws.recv())["code"])
                try:
                    await ws.recv()
                except ConnectionClosed as closed:
                    closes.append(closed.rcvd.code if closed.rcvd else None)
            for ws in [owner, *conns]:
                await ws.close()
            return codes, closes

        codes, closes = run(go())
        assert codes == ["too_many_sessions"] * 10 and closes == [1013] * 10
    finally:
        assert srv.stop() == 0


# -- 6, 7. numbers and surrogates through the real server ------------------------------------------


def test_hostile_numbers_and_surrogates_get_errors_and_leave_metrics_finite(fresh: ServerProcess) -> None:
    messages = [
        '{"type":"ack","sequence":' + "9" * 5000 + "}",
        '{"type":"ack","sequence":1,"buffered_ms":' + "9" * 400 + "}",
        '{"type":"ack","sequence":1,"buffered_ms":1e400}',
        '{"type":"ack","sequence":1,"buffered_ms":NaN}',
        '{"type":"ack","sequence":1,"buffered_ms":Infinity}',
        '{"type":"ack","sequence":1,"buffered_ms":-Infinity}',
        '{"type":"synthesize","text":"\\ud800 lone"}',
    ]

    async def go() -> tuple[list[str], int]:
        async with connect(fresh.url) as ws:
            await ws.recv()
            codes = []
            for m in messages:
                await ws.send(m)
                codes.append((await recv_event(ws, "error"))["code"])
            return codes, await frames_of(ws, "Still usable.")  # the session goes on

    codes, frames = run(go())
    assert codes == ["invalid_field"] * 6 + ["invalid_text"]
    assert frames > 0
    metrics = urllib.request.urlopen(fresh.http + "/metrics", timeout=5).read().decode()
    assert "NaN" not in metrics
    (total,) = [line for line in metrics.splitlines() if line.startswith("tts_end_to_end_latency_ms_sum")]
    assert math.isfinite(float(total.split()[-1]))
    assert not [e for e in fresh.lines if e.get("level") in ("ERROR", "CRITICAL")]


# -- 8, 11. the token, on every door ---------------------------------------------------------------


def test_token_edge_cases_answer_401_never_500_and_guard_metrics() -> None:
    srv = start({"RINGAUDIO_TOKEN": "s3cret"})
    try:

        def get(path: str, headers: list[tuple[str, str]]) -> int:
            with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as sock:
                lines = [f"GET {path} HTTP/1.1", f"Host: 127.0.0.1:{srv.port}", *(f"{k}: {v}" for k, v in headers)]
                sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("utf-8"))
                status = sock.recv(4096).split(b"\r\n")[0]
            return int(status.split()[1])

        upgrade = [
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Key", base64.b64encode(os.urandom(16)).decode()),
            ("Sec-WebSocket-Version", "13"),
        ]
        assert get("/ws", [*upgrade, ("Authorization", "Bearer sécret")]) == 401
        assert get("/ws", [*upgrade, ("Authorization", "Bearer s3cret"), ("Authorization", "Bearer s3cret")]) == 401
        assert get("/ws", [*upgrade, ("Authorization", "s3cret")]) == 401  # a bare token: no scheme, no entry
        assert get("/ws", [*upgrade, ("Authorization", "Basic czNjcmV0")]) == 401
        assert get("/ws", [*upgrade, ("Authorization", "bearer s3cret")]) == 101  # the scheme is case-insensitive
        assert get("/ws?token=s%C3%A9cret", upgrade) == 401
        for path in ("/metrics", "/healthz"):
            assert get(path, []) == 401
            assert get(path, [("Authorization", "Bearer s3cret")]) == 200
        assert not [e for e in srv.lines if e.get("level") in ("ERROR", "CRITICAL")]
    finally:
        assert srv.stop() == 0
    public = start({"RINGAUDIO_TOKEN": "s3cret", "RINGAUDIO__SERVER__PUBLIC_METRICS": "true"})
    try:
        assert urllib.request.urlopen(public.http + "/metrics", timeout=5).status == 200
        assert health(public)["status"] == "ok"
    finally:
        assert public.stop() == 0


# -- 9. log lines reach the operator whole ---------------------------------------------------------


def test_every_log_line_is_whole_json_and_worker_lines_come_through_the_server(fresh: ServerProcess) -> None:
    async def go() -> None:
        async def one(i: int) -> None:
            async with connect(fresh.url) as ws:
                await ws.recv()
                await frames_of(ws, f"Sentence number {i} for the log.")

        await asyncio.gather(*(one(i) for i in range(20)))

    run(go())
    wait_until(lambda: len(fresh.logged("utterance synthesized")) >= 20)
    assert all(e["logger"] == "ringaudio.worker" for e in fresh.logged("utterance synthesized"))
    raw = [e for e in fresh.lines if "logger" not in e]  # lines that were not JSON objects of ours
    assert not raw, raw[:5]


# -- 10. the operational nits ----------------------------------------------------------------------


def test_a_hang_up_mid_utterance_is_not_an_error_and_close_codes_are_the_real_ones(fresh: ServerProcess) -> None:
    async def go() -> None:
        for _ in range(5):
            ws = await connect(fresh.url)
            await ws.recv()
            await ws.send(json.dumps({"type": "synthesize", "text": LONG}))
            await recv_event(ws, "utterance.start")
            await ws.close(1001, "going away")
        raw = RawClient(fresh.port)
        raw.send({"type": "synthesize", "text": LONG})
        await asyncio.sleep(0.3)
        raw.close()  # no closing handshake at all

    run(go())
    wait_until(lambda: len(fresh.logged("session closed")) >= 6)
    codes = [e["code"] for e in fresh.logged("session closed")]
    assert codes.count(1001) == 5 and codes.count(1006) == 1
    time.sleep(0.5)
    assert not [e for e in fresh.lines if e.get("level") in ("ERROR", "CRITICAL")]


def test_an_idle_connection_is_closed_after_idle_timeout() -> None:
    srv = start({"RINGAUDIO__SERVER__IDLE_TIMEOUT_S": "1"})
    try:

        async def go() -> tuple[dict[str, Any], int | None, int]:
            async with connect(srv.url) as busy, connect(srv.url) as idle:
                await busy.recv()
                await idle.recv()
                await busy.send(json.dumps({"type": "synthesize", "text": "Hello."}))
                err = await recv_event(idle, "error", timeout=5)
                try:
                    await asyncio.wait_for(idle.recv(), 5)
                    code = None
                except ConnectionClosed as closed:
                    code = closed.rcvd.code if closed.rcvd else None
                await asyncio.sleep(1.5)
                return err, code, await frames_of(busy, "Still here.")

        err, code, frames = run(go())
        assert err["code"] == "idle_timeout" and code == 1000 and frames > 0
    finally:
        assert srv.stop() == 0


@pytest.mark.parametrize("request_line", ["DELETE /metrics HTTP/1.1", "G\0T /healthz HTTP/1.1", "POST /ws HTTP/1.1"])
def test_methods_other_than_get_answer_405(fresh: ServerProcess, request_line: str) -> None:
    with socket.create_connection(("127.0.0.1", fresh.port), timeout=5) as sock:
        sock.sendall(f"{request_line}\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n".encode("latin-1"))
        status = sock.recv(4096).split(b"\r\n")[0]
    assert status.split()[1] == b"405", status
    assert health(fresh)["status"] == "ok"


def test_cancel_says_where_the_sequence_goes_on(fresh: ServerProcess) -> None:
    """A cancel drops unsent frames: the ``cancelled`` event says which sequence comes next, so
    the gap it leaves is accounted for exactly, like an overrun's."""

    async def go() -> tuple[dict[str, Any], list[int]]:
        async with connect(fresh.url) as ws:
            await ws.recv()
            await ws.send(json.dumps({"type": "synthesize", "text": LONG}))
            await recv_event(ws, "utterance.start")
            await asyncio.sleep(0.3)
            await ws.send(json.dumps({"type": "cancel"}))
            cancelled = await recv_event(ws, "cancelled")
            await ws.send(json.dumps({"type": "synthesize", "text": "After the cancel."}))
            seqs = []
            while True:
                msg = await ws.recv()
                if isinstance(msg, bytes):
                    seqs.append(int.from_bytes(msg[8:16], "little"))
                elif json.loads(msg)["type"] == "utterance.end":
                    return cancelled, seqs

    cancelled, seqs = run(go())
    assert seqs[0] == cancelled["next_sequence"] and seqs == list(range(seqs[0], seqs[0] + len(seqs)))


# -- supervision: stuck and crash-looping workers, SIGTERM during start-up -------------------------


def test_workers_that_die_again_and_again_make_the_server_give_up_and_exit_1() -> None:
    srv = start()
    killed: set[int] = set()
    t0 = time.monotonic()
    while srv.proc.poll() is None and time.monotonic() - t0 < 90:
        for pid in worker_pids(srv):
            if pid not in killed:
                killed.add(pid)
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)
    code = srv.stop()
    assert code == 1, (code, len(killed))
    assert srv.logged("workers failed, giving up")
    assert 5 <= len(killed) <= 6


def test_sigterm_during_start_up_is_honoured() -> None:
    import subprocess
    import sys

    env = {**os.environ, "RINGAUDIO__WORKER__WORKERS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "ringaudio.server", "--port", "0", "--backend", "synthetic"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    for line in proc.stdout:  # the workers are being started: the slowest part of start-up
        if "starting workers" in line:
            break
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        code = proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    rest = proc.stdout.read()
    assert code == 0 and time.monotonic() - t0 < 10, (code, rest[-2000:])
    assert "server listening" not in rest
