"""``python -m ringaudio.server --processes 2``: two real server processes on one port
(SO_REUSEPORT), supervised together; a listen across them is relayed; /metrics and /debug/sessions
answer for both; a process that dies is restarted; one SIGTERM stops everything."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from websockets.asyncio.client import connect

from ringaudio import wire as P

from .conftest import ServerProcess, audio, speak, wait_until


@pytest.fixture(scope="module")
def multi() -> Iterator[ServerProcess]:
    srv = ServerProcess(args=("--processes", "2"))
    yield srv
    assert srv.stop() == 0


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie of ours does not count
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


async def session_on(url: str, instance: str | None = None, tries: int = 60) -> tuple[Any, dict[str, Any]]:
    """A connection (and its ``session`` event), on ``instance`` when given: the kernel picks the
    process, so connect until it is that one."""
    for _ in range(tries):
        ws = await connect(url)
        session = json.loads(await ws.recv())
        if instance is None or session["instance"] == instance:
            return ws, session
        await ws.close()
    raise AssertionError(f"no connection landed on {instance} in {tries} tries")


def test_connections_spread_over_both_processes_and_each_speaks_whole(multi: ServerProcess) -> None:
    (ready,) = multi.logged("server listening")
    assert ready["processes"] == 2 and set(ready["pids"]) == {"p0", "p1"}

    async def go() -> list[tuple[str, list[bytes]]]:
        sockets = [await session_on(multi.url) for _ in range(16)]
        try:
            spoken = await asyncio.gather(
                *(speak(ws, f"Session number {i} says hello.") for i, (ws, _) in enumerate(sockets))
            )
            return [(s["session_id"], frames) for (_, s), frames in zip(sockets, spoken, strict=True)]
        finally:
            for ws, _ in sockets:
                await ws.close()

    results = run(go())
    names = {sid.split("-")[0] for sid, _ in results}
    assert names == {"p0", "p1"}  # 16 connections: all on one process has odds of 2 in 65 536
    for _, frames in results:
        seqs = [P.decode_header(f).sequence for f in frames]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs))) and len(seqs) > 20  # whole, in order


def test_a_listener_on_the_other_process_hears_every_frame_the_owner_gets(multi: ServerProcess) -> None:
    async def go() -> tuple[list[bytes], list[bytes], dict[str, Any], Any]:
        owner, session = await session_on(multi.url)
        other = "p1" if session["instance"] == "p0" else "p0"
        listener, mine = await session_on(multi.url, other)
        await listener.send(
            json.dumps({"type": "listen", "session_id": session["session_id"], "key": session["listen_key"]})
        )
        listening = json.loads(await asyncio.wait_for(listener.recv(), 10))
        heard: list[bytes] = []

        async def hear() -> None:
            async for msg in listener:
                if isinstance(msg, bytes):
                    heard.append(msg)

        hearing = asyncio.ensure_future(hear())
        got = await speak(owner, "An announcement for every room of the house, from the other process.")
        async with asyncio.timeout(10):
            while len(heard) < len(got):
                await asyncio.sleep(0.02)
        await owner.close()  # the stream ends: so does the relayed listener, cleanly
        async with asyncio.timeout(10):
            await hearing
        return got, heard, {**listening, "own": mine["session_id"]}, listener.close_code

    got, heard, listening, code = run(go())
    assert listening["type"] == "listening" and listening["session_id"].split("-")[0] != listening["own"].split("-")[0]
    assert audio(heard) == audio(got)  # the same frames: sequence, flags and samples
    assert code == 1000
    assert multi.logged("listen relayed")


def test_a_wrong_key_across_processes_is_refused_and_the_session_keeps_its_own_stream(multi: ServerProcess) -> None:
    async def go() -> tuple[dict[str, Any], int]:
        owner, session = await session_on(multi.url)
        other = "p1" if session["instance"] == "p0" else "p0"
        ws, _ = await session_on(multi.url, other)
        await ws.send(json.dumps({"type": "listen", "session_id": session["session_id"], "key": "wrong"}))
        refused = json.loads(await asyncio.wait_for(ws.recv(), 10))
        frames = await speak(ws, "Still my own stream.")
        await ws.close()
        await owner.close()
        return refused, len(frames)

    refused, frames = run(go())
    assert refused["code"] == "listen_refused" and frames > 0


def test_a_listen_to_another_instance_is_refused_with_its_name(multi: ServerProcess) -> None:
    async def go() -> dict[str, Any]:
        async with connect(multi.url) as ws:
            await ws.recv()
            await ws.send(json.dumps({"type": "listen", "session_id": "kitchen-0123456789abcdef", "key": "k"}))
            return dict(json.loads(await asyncio.wait_for(ws.recv(), 10)))

    err = run(go())
    assert err["code"] == "listen_elsewhere" and err["instance"] == "kitchen"


def test_metrics_and_debug_answer_for_both_processes(multi: ServerProcess) -> None:
    async def go() -> tuple[str, dict[str, Any]]:
        a, sa = await session_on(multi.url, "p0")
        b, sb = await session_on(multi.url, "p1")
        try:
            await asyncio.gather(speak(a, "One."), speak(b, "Two."))
            text = await asyncio.to_thread(lambda: urllib.request.urlopen(multi.http + "/metrics", timeout=5).read())
            view = await asyncio.to_thread(
                lambda: urllib.request.urlopen(multi.http + "/debug/sessions", timeout=5).read()
            )
            return text.decode(), {**json.loads(view), "ids": [sa["session_id"], sb["session_id"]]}
        finally:
            await a.close()
            await b.close()

    text, view = run(go())
    sent = [line for line in text.splitlines() if line.startswith("tts_frames_sent_total")]
    assert {'process="p0"' in line for line in sent} == {True, False} and len(sent) == 2
    assert text.count("# TYPE tts_frames_sent_total ") == 1  # one family, both processes' samples
    assert {s["session_id"] for s in view["sessions"]} >= set(view["ids"])
    assert {s["process"] for s in view["sessions"]} == {"p0", "p1"} and set(view["processes"]) == {"p0", "p1"}


def test_a_process_that_dies_is_restarted_and_sigterm_stops_everything() -> None:
    srv = ServerProcess(args=("--processes", "2"))
    try:
        pids = srv.logged("server listening")[0]["pids"]
        os.kill(pids["p1"], signal.SIGKILL)
        wait_until(lambda: bool(srv.logged("server process died")), timeout=10)
        died = srv.logged("server process died")[0]
        assert died["instance"] == "p1" and died["code"] == -signal.SIGKILL
        wait_until(lambda: len([e for e in srv.logged("process listening") if e["instance"] == "p1"]) == 2, 60)
        restarted = [e for e in srv.logged("process listening") if e["instance"] == "p1"][-1]

        async def both() -> set[str]:
            seen: set[str] = set()
            for _ in range(40):
                async with connect(srv.url) as ws:
                    seen.add(json.loads(await ws.recv())["instance"])
                if len(seen) == 2:
                    break
            return seen

        assert run(both()) == {"p0", "p1"}  # the restarted one serves again
        assert restarted["port"] == srv.port
    finally:
        code = srv.stop()
    assert code == 0
    assert not alive(pids["p0"]) and not alive(pids["p1"])
    assert srv.logged("server stopped")


def test_killing_the_supervisor_leaves_no_process_behind() -> None:
    srv = ServerProcess(args=("--processes", "2"))
    pids = srv.logged("server listening")[0]["pids"]
    srv.proc.kill()
    srv.proc.wait()
    deadline = time.monotonic() + 20
    while any(alive(p) for p in pids.values()) and time.monotonic() < deadline:
        time.sleep(0.05)
    srv.stop()
    assert not any(alive(p) for p in pids.values())  # they stopped on their own, cleanly (arena unlinked)


def test_an_instance_names_its_sessions_and_a_listen_can_come_in_the_url() -> None:
    srv = ServerProcess(args=("--instance", "kitchen"))
    try:

        async def go() -> tuple[dict[str, Any], dict[str, Any], list[bytes], list[bytes]]:
            async with connect(srv.url) as owner:
                session = json.loads(await owner.recv())
                url = f"ws://127.0.0.1:{srv.port}/?listen={session['session_id']}&key={session['listen_key']}"
                async with connect(url) as listener:
                    await listener.recv()  # its own session event, then at once:
                    listening = json.loads(await asyncio.wait_for(listener.recv(), 10))
                    heard: list[bytes] = []

                    async def hear() -> None:
                        async for msg in listener:
                            if isinstance(msg, bytes):
                                heard.append(msg)

                    hearing = asyncio.ensure_future(hear())
                    got = await speak(owner, "Heard through a listen in the URL.")
                    async with asyncio.timeout(10):
                        while len(heard) < len(got):
                            await asyncio.sleep(0.02)
                    hearing.cancel()
                    async with connect(url.replace("key=", "key=x")) as wrong:
                        await wrong.recv()
                        refused = json.loads(await asyncio.wait_for(wrong.recv(), 10))
                    return session, {**listening, "refused": refused["code"]}, got, heard

        session, listening, got, heard = run(go())
    finally:
        assert srv.stop() == 0
    assert session["instance"] == "kitchen" and session["session_id"].startswith("kitchen-")
    assert listening["type"] == "listening" and listening["refused"] == "listen_refused"
    assert audio(heard) == audio(got) and got


def test_an_abbreviated_flag_is_refused_rather_than_read_as_another() -> None:
    """``--proc 2`` is not ``--processes 2``: a process started by the supervisor gets the flags it
    was given minus --processes, so an abbreviation would make every process a supervisor too."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "ringaudio.server", "--proc", "2", "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and "unrecognized arguments: --proc" in done.stderr


def test_a_squatted_socket_name_does_not_keep_the_processes_from_starting() -> None:
    """Abstract Unix socket names have no permissions: another local user could take a guessable
    one first. Each run's names carry a random token of the supervisor's, so the processes start
    (and reach each other) with the plain names already taken."""
    import socket

    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    squatters = []
    for name in ("p0", "p1"):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(f"\0ringaudio-{port}-{name}")
        s.listen()
        squatters.append(s)
    srv = ServerProcess(args=("--processes", "2", "--port", str(port)))
    try:
        (ready,) = srv.logged("server listening")
        assert ready["processes"] == 2 and ready["port"] == port
        with open("/proc/net/unix") as f:
            names = {line.split()[-1] for line in f if f"@ringaudio-{port}-" in line}
        tokens = {n.split("-")[2] for n in names if n.count("-") == 3}
        assert len(tokens) == 1 and len(next(iter(tokens))) == 16  # both processes' names, one token
        import psutil

        (token,) = tokens
        processes = psutil.Process(srv.proc.pid).children(recursive=True)
        assert len(processes) >= 2 and not any(token in " ".join(p.cmdline()) for p in processes)  # not readable
        text = urllib.request.urlopen(srv.http + "/metrics", timeout=5).read().decode()
        assert 'process="p0"' in text and 'process="p1"' in text  # they reach each other
    finally:
        assert srv.stop() == 0
        for s in squatters:
            s.close()
