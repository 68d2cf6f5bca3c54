"""The real server process, real sockets, the real client: the wire contract end to end."""

from __future__ import annotations

import asyncio
import itertools
import json
import signal
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from ringaudio import wire as P
from ringaudio.client import speak

from ..conftest import ringaudio_segments
from .conftest import ServerProcess, start, wait_until

LONG = "This sentence is long enough to keep a worker busy for a few seconds of audio, at least. " * 2


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 120))


async def recv_event(ws: Any, kind: str, timeout: float = 10.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        msg = await asyncio.wait_for(ws.recv(), max(0.05, deadline - time.monotonic()))
        if isinstance(msg, str):
            ev = json.loads(msg)
            if ev["type"] == kind:
                return ev


async def frames_of(ws: Any, text: str) -> int:
    """Synthesize ``text`` and count its frames up to its ``utterance.end``."""
    await ws.send(json.dumps({"type": "synthesize", "text": text}))
    frames = 0
    while True:
        msg = await ws.recv()
        if isinstance(msg, bytes):
            frames += 1
        elif json.loads(msg)["type"] == "utterance.end":
            return frames


def test_sequence_continuity_exact_sizes_and_back_to_back(server: ServerProcess, tmp_path: Path) -> None:
    out = tmp_path / "hello.wav"
    stats = run(speak(server.url, ["Hello there.", "A second utterance, back to back."], out=out))
    assert stats.session["frame_samples"] == 960 and stats.session["sample_rate"] == 48_000
    assert stats.frames > 50 and stats.gaps == 0 and stats.lost == 0
    assert stats.sequences == list(range(stats.frames))
    ends = [e for e in stats.events if e["type"] == "utterance.end"]
    assert len(ends) == 2 and ends[1]["last_sequence"] == stats.frames - 1
    assert sum(e["frames"] for e in ends) == stats.frames
    assert out.stat().st_size == 44 + stats.frames * 1920  # every frame exactly 960 s16le samples


def test_frames_have_the_documented_header(server: ServerProcess) -> None:
    async def go() -> list[bytes]:
        async with connect(server.url) as ws:
            await ws.recv()
            await ws.send(json.dumps({"type": "synthesize", "text": "Hi there."}))
            frames = []
            while True:
                msg = await ws.recv()
                if isinstance(msg, bytes):
                    frames.append(msg)
                elif json.loads(msg)["type"] == "utterance.end":
                    return frames

    frames = run(go())
    headers = [P.decode_header(f) for f in frames]
    assert all(len(f) == P.HEADER_SIZE + 1920 for f in frames)
    assert headers[0].flags & P.FLAG_FIRST and headers[-1].flags & P.FLAG_LAST
    assert len({h.utterance_id for h in headers}) == 1
    assert all(b.timestamp_us >= a.timestamp_us for a, b in itertools.pairwise(headers))
    assert abs(headers[0].timestamp_us / 1e6 - time.time()) < 60


def test_pause_one_second_then_resume_loses_nothing(server: ServerProcess) -> None:
    stats = run(speak(server.url, [LONG], pause_after_ms=300, pause_ms=1000))
    kinds = [e["type"] for e in stats.events]
    assert "paused" in kinds and "resumed" in kinds
    assert stats.lost == 0 and stats.gaps == 0 and stats.sequences == list(range(stats.frames))
    assert max(stats.intervals_ms) > 900  # the stream really stopped for the pause


def test_slow_client_under_block_loses_nothing(server: ServerProcess) -> None:
    stats = run(speak(server.url, ["A slow client listens to this whole sentence, every frame."], slow_ms=25))
    assert stats.lost == 0 and stats.reported_lost == 0 and stats.sequences == list(range(stats.frames))


def test_cancel_mid_utterance_then_start_cleanly(server: ServerProcess) -> None:
    async def go() -> tuple[dict[str, Any], list[int], list[int]]:
        async with connect(server.url) as ws:
            await ws.recv()
            await ws.send(json.dumps({"type": "synthesize", "text": LONG}))
            before: list[int] = []
            while len(before) < 20:
                msg = await ws.recv()
                if isinstance(msg, bytes):
                    before.append(P.decode_header(msg).sequence)
            await ws.send(json.dumps({"type": "cancel"}))
            cancelled = None
            while cancelled is None:
                msg = await ws.recv()
                if isinstance(msg, bytes):
                    before.append(P.decode_header(msg).sequence)
                elif json.loads(msg)["type"] == "cancelled":
                    cancelled = json.loads(msg)
            await ws.send(json.dumps({"type": "synthesize", "text": "Fresh start."}))
            after: list[int] = []
            while True:
                msg = await ws.recv()
                if isinstance(msg, bytes):
                    after.append(P.decode_header(msg).sequence)
                elif json.loads(msg)["type"] == "utterance.end":
                    return cancelled, before, after

    cancelled, before, after = run(go())
    assert cancelled["last_sequence"] == before[-1]  # the last sequence that was sent
    assert after and after[0] > cancelled["last_sequence"]  # nothing stale of the cancelled utterance
    assert after == list(range(after[0], after[0] + len(after)))
    assert len(before) < 200  # it stopped long before the utterance's ~10 s


@pytest.mark.parametrize(
    ("message", "code"),
    [
        ("{not json", "invalid_json"),
        ("[1, 2]", "invalid_message"),
        ('{"type": "dance"}', "unknown_type"),
        ('{"text": "no type"}', "missing_field"),
        ('{"type": "synthesize"}', "missing_field"),
        ('{"type": "synthesize", "text": 5}', "invalid_field"),
        ('{"type": "control", "action": "rewind"}', "invalid_field"),
        ('{"type": "ack", "sequence": "x"}', "invalid_field"),
        ('{"type": "control", "action": "resume"}', "not_paused"),
        ('{"type": "synthesize", "text": "   "}', "invalid_text"),
        ('{"type": "synthesize", "text": "' + "x" * 5001 + '"}', "text_too_long"),
        ('{"type": "listen", "session_id": "nope", "key": "nope"}', "listen_refused"),
        (b"\x00\x01binary", "binary_not_supported"),
    ],
)
def test_bad_input_gets_an_error_event_and_the_session_stays_usable(
    server: ServerProcess, message: str | bytes, code: str
) -> None:
    async def go() -> tuple[dict[str, Any], int]:
        async with connect(server.url) as ws:
            await ws.recv()
            await ws.send(message)
            err = await recv_event(ws, "error")
            return err, await frames_of(ws, "Still here.")

    err, frames = run(go())
    assert err["code"] == code and err["message"]
    assert frames > 0


def test_oversized_message_closes_with_1009(server: ServerProcess) -> None:
    async def go() -> int | None:
        async with connect(server.url, max_size=None) as ws:
            await ws.recv()
            await ws.send("x" * 70_000)
            try:
                while True:
                    await ws.recv()
            except ConnectionClosed as closed:
                return closed.rcvd.code if closed.rcvd else None

    assert run(go()) == 1009


def test_listener_hears_the_stream_with_the_key(server: ServerProcess) -> None:
    async def go() -> tuple[list[int], list[int]]:
        async with connect(server.url) as owner, connect(server.url) as listener:
            session = json.loads(await owner.recv())
            await listener.recv()
            await listener.send(
                json.dumps({"type": "listen", "session_id": session["session_id"], "key": session["listen_key"]})
            )
            await recv_event(listener, "listening")
            await owner.send(json.dumps({"type": "synthesize", "text": "Announcement for the whole house."}))
            mine: list[int] = []
            heard: list[int] = []

            async def own() -> None:
                while True:
                    msg = await owner.recv()
                    if isinstance(msg, bytes):
                        mine.append(P.decode_header(msg).sequence)
                    elif json.loads(msg)["type"] == "utterance.end":
                        return

            async def hear() -> None:  # another room, listening as the audio comes
                while True:
                    msg = await listener.recv()
                    if isinstance(msg, bytes):
                        heard.append(P.decode_header(msg).sequence)

            hearing = asyncio.ensure_future(hear())
            try:
                await own()
                async with asyncio.timeout(10):  # the listener's last frames may still be on the way
                    while len(heard) < len(mine):
                        await asyncio.sleep(0.02)
            finally:
                hearing.cancel()
            return mine, heard

    mine, heard = run(go())
    assert heard == mine


def test_listening_to_yourself_is_refused_and_the_session_stays_usable(server: ServerProcess) -> None:
    async def go() -> tuple[dict[str, Any], int]:
        async with connect(server.url) as ws:
            session = json.loads(await ws.recv())
            await ws.send(json.dumps({"type": "listen", "session_id": session["session_id"], "key": "ключ"}))
            wrong = await recv_event(ws, "error")
            assert wrong["code"] == "listen_refused"  # a non-ASCII key is just a wrong key
            await ws.send(
                json.dumps({"type": "listen", "session_id": session["session_id"], "key": session["listen_key"]})
            )
            err = await recv_event(ws, "error")
            return err, await frames_of(ws, "Still my own stream.")

    err, frames = run(go())
    assert err["code"] == "listen_refused" and frames > 0


def test_metrics_carry_the_runbook_names_and_drop_ended_sessions(server: ServerProcess) -> None:
    async def go() -> tuple[str, str]:
        async with connect(server.url) as ws:
            session = json.loads(await ws.recv())
            await ws.send(json.dumps({"type": "synthesize", "text": "Measure me."}))
            await recv_event(ws, "utterance.end")
            await ws.send(json.dumps({"type": "ack", "sequence": 3, "buffered_ms": 40}))
            await asyncio.sleep(0.1)
            during = urllib.request.urlopen(server.http + "/metrics", timeout=5).read().decode()
            return session["session_id"], during

    sid, during = run(go())
    for name in (
        "tts_frame_queue_depth",
        "tts_frame_queue_full_count",
        "tts_frames_dropped_total",
        "tts_frame_interval_ms",
        "tts_frame_jitter_ms",
        "tts_end_to_end_latency_ms",
        "tts_rtf",
        "tts_first_audio_latency_ms",
    ):
        assert f"# TYPE {name}" in during, name
    assert f'tts_frame_queue_depth{{session_id="{sid}"}}' in during
    assert "tts_end_to_end_latency_ms_count 1.0" in during
    started = server.logged("utterance started")
    assert started and isinstance(started[-1]["queue_wait_ms"], float)  # the runbook's queueing figure
    finished = server.logged("utterance finished")
    assert finished and {"rtf", "model_id", "synthesis_duration_ms"} <= set(finished[-1])
    time.sleep(0.3)
    after = urllib.request.urlopen(server.http + "/metrics", timeout=5).read().decode()
    assert sid not in after  # per-session series are removed when the session ends
    health = json.loads(urllib.request.urlopen(server.http + "/healthz", timeout=5).read())
    assert health["status"] == "ok" and health["workers"] == {"alive": 1, "size": 1, "stale": []}


def test_slow_client_under_drop_oldest_reports_exactly_what_it_lost() -> None:
    srv = start({"RINGAUDIO__WORKER__OVERFLOW": "drop_oldest", "RINGAUDIO__SERVER__SEND_BUFFER_FRAMES": "4"})
    try:

        async def go() -> tuple[list[int], int, int]:
            sock = socket.create_connection(("127.0.0.1", srv.port))
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a client that cannot hold much
            async with connect(srv.url, sock=sock, compression=None) as ws:
                await ws.recv()
                await ws.send(json.dumps({"type": "synthesize", "text": LONG}))
                seqs: list[int] = []
                reported = 0
                end = None
                resumes: set[int] = set()  # where the overruns said the stream goes on
                while end is None:
                    msg = await asyncio.wait_for(ws.recv(), 30)
                    if isinstance(msg, bytes):
                        seq = P.decode_header(msg).sequence
                        if seqs and seq != seqs[-1] + 1:
                            assert seq in resumes  # a gap only ever follows its overrun event
                        seqs.append(seq)
                        if not reported:
                            await asyncio.sleep(0.1)  # far slower than real time until the first overrun
                    else:
                        ev = json.loads(msg)
                        if ev["type"] == "overrun":
                            assert ev["lost"] == ev["received"] - ev["expected"]
                            reported += ev["lost"]
                            resumes.add(ev["received"])
                        elif ev["type"] == "utterance.end":
                            end = ev["last_sequence"]
                return seqs, reported, end

        seqs, reported, end = run(go())
        missing = (end + 1) - len(seqs)
        assert reported > 0  # the test really lapped the client
        assert missing == reported  # losses reported == sequence numbers never received
        assert seqs == sorted(set(seqs))
        assert srv.logged("Frame sequence gap detected") and srv.logged("Client not consuming frames fast enough")
        gap = srv.logged("Frame sequence gap detected")[0]
        assert {"expected", "received", "session_id"} <= set(gap)
    finally:
        assert srv.stop() == 0


def test_token_and_origin_refusals() -> None:
    srv = start({"RINGAUDIO_TOKEN": "s3cret", "RINGAUDIO__SERVER__ALLOWED_ORIGINS": '["https://home.example"]'})
    try:

        async def status(**kwargs: Any) -> int:
            try:
                async with connect(srv.url.replace("/ws", kwargs.pop("path", "/ws")), **kwargs) as ws:
                    await ws.recv()
                    return 101
            except InvalidStatus as exc:
                return exc.response.status_code

        assert run(status()) == 401
        assert run(status(additional_headers={"Authorization": "Bearer wrong"})) == 401
        assert run(status(additional_headers={"Authorization": "Bearer s3cret"})) == 101
        assert run(status(path="/ws?token=s3cret")) == 101
        auth = {"Authorization": "Bearer s3cret"}
        assert run(status(additional_headers=auth, origin="https://evil.example")) == 403
        assert run(status(additional_headers=auth, origin="https://home.example")) == 101
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(srv.http + "/nowhere", timeout=5)
        assert info.value.code == 404
        info.value.close()
    finally:
        assert srv.stop() == 0


def test_too_many_sessions_is_refused_with_1013() -> None:
    srv = start({"RINGAUDIO__SERVER__MAX_SESSIONS": "2"})
    try:

        async def go() -> tuple[dict[str, Any], int | None]:
            async with connect(srv.url) as a, connect(srv.url) as b:
                await a.recv()
                await b.recv()
                async with connect(srv.url) as c:
                    err = json.loads(await c.recv())
                    try:
                        await c.recv()
                    except ConnectionClosed as closed:
                        return err, closed.rcvd.code if closed.rcvd else None
            return {}, None

        err, code = run(go())
        assert err["code"] == "too_many_sessions" and code == 1013
    finally:
        assert srv.stop() == 0


def test_sigterm_ends_sessions_and_leaves_nothing_behind() -> None:
    before = ringaudio_segments()
    srv = start()
    workers = [p.pid for p in __import__("psutil").Process(srv.proc.pid).children(recursive=True)]
    assert workers

    async def go() -> int | None:
        async with connect(srv.url) as ws:
            await ws.recv()
            await ws.send(json.dumps({"type": "synthesize", "text": LONG}))
            await recv_event(ws, "utterance.start")
            t0 = time.monotonic()
            srv.proc.send_signal(signal.SIGTERM)
            try:
                while True:
                    await ws.recv()
            except ConnectionClosed as closed:
                assert time.monotonic() - t0 < 5
                return closed.rcvd.code if closed.rcvd else None

    assert run(go()) == 1001
    srv.proc.wait(5)
    assert srv.proc.returncode == 0
    import psutil

    def survivors() -> list[int]:
        alive = []
        for pid in workers:
            try:
                if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                    alive.append(pid)
            except psutil.NoSuchProcess:
                pass
        return alive

    # workers are joined before the server exits; multiprocessing's resource tracker follows it within moments
    wait_until(lambda: not survivors(), timeout=3)
    assert ringaudio_segments() == before
