"""``python -m ringaudio.wyoming`` as a real process, with the ``wyoming`` package's own client
(``AsyncTcpClient``) as the peer: describe, synthesize (streamed), streaming input, a client that goes
away mid-utterance, 20 at once, and bad input of every kind."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from bench.common import LoggedProcess

wyoming = pytest.importorskip("wyoming")
from wyoming.audio import AudioChunk, AudioStart, AudioStop  # noqa: E402
from wyoming.client import AsyncTcpClient  # noqa: E402
from wyoming.info import Describe, Info  # noqa: E402
from wyoming.tts import Synthesize, SynthesizeChunk, SynthesizeStart, SynthesizeStop  # noqa: E402

TEXT = "Hello there. This is ringaudio speaking through the Wyoming protocol, for Home Assistant."


class Service(LoggedProcess):
    def __init__(self, *args: str) -> None:
        env = {**os.environ, "RINGAUDIO__WORKER__SYNTHETIC_RTF": "0.05"}
        cmd = [sys.executable, "-m", "ringaudio.wyoming", "--uri", "tcp://127.0.0.1:0", "--backend", "synthetic"]
        super().__init__([*cmd, "--workers", "1", *args], env, what="wyoming service", ready="wyoming listening")


@pytest.fixture(scope="module")
def service() -> Iterator[Service]:
    srv = Service()
    yield srv
    assert srv.stop() == 0


async def synthesize(port: int, text: str, *, stop_after: int | None = None) -> dict[str, Any]:
    """Audio of one synthesize: rate, samples, first-chunk latency (s), events other than chunks."""
    async with AsyncTcpClient("127.0.0.1", port) as client:
        t0 = time.monotonic()
        await client.write_event(Synthesize(text=text).event())
        pcm, first, rate, others = [], None, 0, []
        while True:
            event = await asyncio.wait_for(client.read_event(), 30)
            assert event is not None, "the service closed the connection"
            if AudioStart.is_type(event.type):
                rate = AudioStart.from_event(event).rate
            elif AudioChunk.is_type(event.type):
                first = first if first is not None else time.monotonic() - t0
                pcm.append(np.frombuffer(AudioChunk.from_event(event).audio, np.int16))
                if stop_after is not None and len(pcm) >= stop_after:
                    return {"chunks": len(pcm)}  # goes away mid-utterance
            elif AudioStop.is_type(event.type):
                break
            else:
                others.append(event)
        audio = np.concatenate(pcm)
        return {"rate": rate, "audio": audio, "first": first, "others": others, "seconds": len(audio) / rate}


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_describe_says_what_it_speaks(service: Service) -> None:
    async def go() -> Info:
        async with AsyncTcpClient("127.0.0.1", service.port) as client:
            await client.write_event(Describe().event())
            event = await asyncio.wait_for(client.read_event(), 10)
            assert event is not None and Info.is_type(event.type)
            return Info.from_event(event)

    info = run(go())
    (program,) = info.tts
    assert program.name == "ringaudio" and program.installed and program.supports_synthesize_streaming
    assert [v.name for v in program.voices] == ["synthetic"] and program.voices[0].languages == ["en"]
    assert program.attribution.name and program.version


def test_synthesize_streams_speech_of_the_right_length(service: Service) -> None:
    got = run(synthesize(service.port, TEXT))
    assert got["rate"] == 48_000 and got["others"] == []
    assert 4.0 < got["seconds"] < 12.0  # the synthetic voice speaks ~14 characters a second
    assert np.sqrt(np.mean(got["audio"].astype(np.float64) ** 2)) > 300  # not silence
    long = run(synthesize(service.port, TEXT * 4))
    assert long["first"] < 0.5 * long["seconds"]  # sanity: streamed, not made whole first
    print(f"\nfirst chunk: {got['first'] * 1000:.1f} ms for {got['seconds']:.2f} s of audio")


def test_streaming_input_speaks_before_the_last_sentence_is_sent(service: Service) -> None:
    async def go() -> dict[str, Any]:
        async with AsyncTcpClient("127.0.0.1", service.port) as client:
            heard: list[tuple[float, str]] = []
            t0 = time.monotonic()

            async def read() -> None:
                while True:
                    event = await asyncio.wait_for(client.read_event(), 30)
                    assert event is not None
                    heard.append((time.monotonic() - t0, event.type))
                    if event.type == "synthesize-stopped":
                        return

            reader = asyncio.create_task(read())
            await client.write_event(SynthesizeStart().event())
            for part in ("The first sentence is here. ", "The second one ", "comes in two parts. And the third!"):
                await client.write_event(SynthesizeChunk(text=part).event())
                await asyncio.sleep(0.8)
            last_sent = time.monotonic() - t0
            await client.write_event(SynthesizeStop().event())
            await client.write_event(Synthesize(text="ignored: the streamed text was already spoken").event())
            await reader
            return {"heard": heard, "last_sent": last_sent}

    got = run(go())
    kinds = [k for _, k in got["heard"]]
    first_chunk = next(t for t, k in got["heard"] if k == "audio-chunk")
    assert first_chunk < got["last_sent"]  # the first sentence was heard before the last one was sent
    assert kinds[0] == "audio-start" and kinds[-2:] == ["audio-stop", "synthesize-stopped"]
    assert kinds.count("audio-start") == 1 and kinds.count("audio-stop") == 1
    print(
        f"\nstreaming: first audio {first_chunk * 1000:.0f} ms, last sentence sent at {got['last_sent'] * 1000:.0f} ms"
    )


def test_a_client_that_goes_away_frees_the_worker(service: Service) -> None:
    long_text = "A very long answer that nobody will listen to the end of, said again and again. " * 30
    gone = run(synthesize(service.port, long_text, stop_after=5))  # ~150 s of audio: minutes of work
    assert gone["chunks"] == 5
    t0 = time.monotonic()
    got = run(synthesize(service.port, "Next, please."))
    assert got["seconds"] > 0.5 and got["first"] < 2.0, got["first"]  # not behind the abandoned one
    assert time.monotonic() - t0 < 10  # sanity: the one worker was free


def test_twenty_clients_at_once_each_get_their_own_speech(service: Service) -> None:
    async def go() -> list[dict[str, Any]]:
        texts = [f"Client number {i} asks for its own answer, and gets it." for i in range(20)]
        return list(await asyncio.gather(*(synthesize(service.port, t) for t in texts)))

    results = run(go())
    assert len(results) == 20
    for r in results:
        assert r["others"] == [] and 2.0 < r["seconds"] < 6.0
    assert len({r["audio"].tobytes() for r in results}) > 1  # their own texts, not one copy


def test_bad_input_gets_an_error_and_the_service_stays_up(service: Service) -> None:
    async def raw(lines: bytes, wait_close: bool) -> list[dict[str, Any]]:
        reader, writer = await asyncio.open_connection("127.0.0.1", service.port)
        writer.write(lines)
        await writer.drain()
        events = []
        try:
            while True:
                line = await asyncio.wait_for(reader.readline(), 15 if wait_close else 2)
                if not line:
                    break
                header = json.loads(line)
                if header.get("data_length"):
                    header["data"] = {
                        **header.get("data", {}),
                        **json.loads(await reader.readexactly(header["data_length"])),
                    }
                if header.get("payload_length"):  # audio: skipped
                    await reader.readexactly(header["payload_length"])
                events.append(header)
        except TimeoutError:
            assert not wait_close, "the service did not close the connection"
        writer.close()
        return events

    def errors(events: list[dict[str, Any]]) -> list[str]:
        return [e["data"]["code"] for e in events if e["type"] == "error"]

    async def go() -> None:
        unknown = await raw(b'{"type": "teleport"}\n{"type": "describe"}\n', wait_close=False)
        assert errors(unknown) == ["unknown_event"] and unknown[-1]["type"] == "info"  # and it goes on
        missing = await raw(b'{"type": "synthesize", "data": {}}\n', wait_close=False)
        assert errors(missing) == ["missing_text"]
        huge = json.dumps({"type": "synthesize", "data": {"text": "x" * 6000}}).encode() + b"\n"
        assert errors(await raw(huge, wait_close=False)) == ["text_too_long"]
        assert errors(await raw(b"{not json\n", wait_close=True)) == ["invalid_json"]
        assert errors(await raw(b'{"type": "synthesize", "payload_length": 1000000000}\n', wait_close=True)) == [
            "too_large"
        ]
        # a payload length that lies: the next header is read as payload, then the rest as a header
        lie = b'{"type": "synthesize", "data": {"text": "hi"}, "payload_length": 24}\n{"type": "describe"}\n{"x'
        assert errors(await raw(lie + b'"\n', wait_close=True)) == ["invalid_json"]
        assert errors(await raw(b'{"type": "describe", "data_length": -3}\n', wait_close=True)) == ["invalid_header"]
        assert errors(await raw(b"x" * 70_000 + b"\n", wait_close=True)) == ["too_large"]

    run(go())
    assert len(run(synthesize(service.port, "Still here."))["audio"]) > 0
    assert service.proc.poll() is None


def test_the_rate_clients_get_is_resampled_exactly_in_length() -> None:
    srv = Service("--rate", "16000")
    try:
        got = run(synthesize(srv.port, TEXT))
    finally:
        assert srv.stop() == 0
    assert got["rate"] == 16_000
    assert 4.0 < got["seconds"] < 12.0 and np.sqrt(np.mean(got["audio"].astype(np.float64) ** 2)) > 300
    frames_s = round(got["seconds"] / 0.02) * 0.02
    assert abs(got["seconds"] - frames_s) < 0.002  # whole 20 ms frames of the engine, at 16 kHz


def test_a_bad_uri_or_rate_is_a_configuration_error() -> None:
    import subprocess

    for args in (["--uri", "udp://x:1"], ["--rate", "12345"]):
        done = subprocess.run(
            [sys.executable, "-m", "ringaudio.wyoming", *args], capture_output=True, text=True, timeout=30
        )
        assert done.returncode == 2 and done.stderr.startswith("configuration error:"), done.stderr


def test_a_client_that_stops_reading_holds_its_worker_back_and_loses_nothing(service: Service) -> None:
    """A client with a small receive buffer stops reading for 4 s in a ~55 s answer: the service
    stops writing, the worker waits at the high watermark (it finishes synthesizing only after the
    client reads again; unpaced it would take ~3 s), and every sample arrives."""
    import socket

    text = "A long answer, read by a client that stops reading for a while in the middle of it. " * 8

    async def go() -> tuple[int, float]:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * 1024)
        sock.connect(("127.0.0.1", service.port))
        reader, writer = await asyncio.open_connection(sock=sock)
        writer.write(json.dumps({"type": "synthesize", "data": {"text": text}}).encode() + b"\n")
        await writer.drain()
        samples, chunks, resumed = 0, 0, 0.0
        while True:
            header = json.loads(await asyncio.wait_for(reader.readline(), 30))
            if header.get("data_length"):
                await reader.readexactly(header["data_length"])
            if header.get("payload_length"):
                samples += len(await reader.readexactly(header["payload_length"])) // 2
            if header["type"] == "audio-chunk":
                chunks += 1
                if chunks == 20:
                    await asyncio.sleep(4.0)
                    resumed = time.time()
            if header["type"] == "audio-stop":
                writer.close()
                return samples, resumed

    before = len(service.logged("utterance synthesized"))
    samples, resumed = run(go())
    deadline = time.monotonic() + 10  # the worker logs it as it writes the last frame: the line may trail
    while len(finished := service.logged("utterance synthesized")[before:]) < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(finished) == 1 and finished[0]["timestamp"] > resumed  # held back while the client did not read
    reference = run(synthesize(service.port, text))
    assert samples == len(reference["audio"])  # nothing lost
