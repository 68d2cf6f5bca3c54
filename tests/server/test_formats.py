"""What a session's audio goes out as: s16le, f32le (exact), Opus (encoded in the worker, decoded here
by FFmpeg's own decoder and compared with the PCM of the same text); the ``format`` event before the
first frame of a new format; the bytes each costs on the wire."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import numpy as np
import pytest
from websockets.sync.client import connect

from ringaudio import client, opus

from .conftest import ServerProcess

TEXT = "Hello there, this is a test of the formats a session can ask for."
av = pytest.importorskip("av")
needs_opus = pytest.mark.skipif(opus.available() is not None, reason=f"{opus.available()}")


@pytest.fixture(scope="module")
def srv() -> Any:
    server = ServerProcess()
    yield server
    assert server.stop() == 0


def receive(url: str, encoding: str, text: str = TEXT) -> tuple[list[bytes], list[dict[str, Any]], int]:
    """Payloads, events (in the order they came, a frame as {"type": "frame"}) and bytes of audio messages."""
    with connect(url, max_size=None) as ws:
        hello = json.loads(ws.recv(10))
        events: list[dict[str, Any]] = [hello]
        if encoding != "s16le":
            ws.send(json.dumps({"type": "format", "encoding": encoding}))
        ws.send(json.dumps({"type": "synthesize", "text": text}))
        payloads, size = [], 0
        while True:
            message = ws.recv(20)
            if isinstance(message, bytes):
                payloads.append(message[24:])
                size += len(message)
                events.append({"type": "frame"})
                continue
            ev = json.loads(message)
            events.append(ev)
            if ev["type"] in ("utterance.end", "error"):
                return payloads, events, size


def s16(payloads: list[bytes]) -> np.ndarray:
    return np.concatenate([np.frombuffer(p, np.int16) for p in payloads])


def test_f32le_is_the_same_audio_exactly_announced_before_its_first_frame(srv: ServerProcess) -> None:
    pcm, events, pcm_bytes = receive(srv.url, "s16le")
    assert events[0]["encodings"][:2] == ["s16le", "f32le"] and events[0]["format"] == "s16le"
    assert not [e for e in events if e["type"] == "format"]  # nothing changed: nothing announced
    floats, events, f32_bytes = receive(srv.url, "f32le")
    formats = [i for i, e in enumerate(events) if e["type"] == "format"]
    first_frame = next(i for i, e in enumerate(events) if e["type"] == "frame")
    assert len(formats) == 1 and formats[0] < first_frame
    assert {k: events[formats[0]][k] for k in ("sample_rate", "frame_ms", "frame_samples", "encoding", "reason")} == {
        "sample_rate": 48_000,
        "frame_ms": 20,
        "frame_samples": 960,
        "encoding": "f32le",
        "reason": "requested",
    }
    got = np.concatenate([np.frombuffer(p, np.float32) for p in floats])
    want = s16(pcm)
    assert len(got) == len(want) and np.array_equal(got, want.astype(np.float32) / 32768)
    assert np.array_equal((got * 32768).astype(np.int16), want)  # and back, exactly
    assert f32_bytes > 1.9 * pcm_bytes


def test_f32le_asked_for_mid_utterance_starts_within_a_few_frames_and_loses_nothing(srv: ServerProcess) -> None:
    """Asked for while the session streams (its steady state served the fast way, maybe by a lane):
    the next frames go out as f32le, announced first, the same samples throughout."""
    want = s16(receive(srv.url, "s16le")[0])  # 4.5 s: 224 frames, asked at 60, ~150 after
    with connect(srv.url, max_size=None) as ws:
        json.loads(ws.recv(10))
        ws.send(json.dumps({"type": "synthesize", "text": TEXT}))
        got: list[np.ndarray] = []
        asked_at = announced_at = -1
        while True:
            message = ws.recv(20)
            if isinstance(message, bytes):
                f32 = announced_at >= 0
                got.append(np.frombuffer(message[24:], np.float32 if f32 else np.int16))
                if len(got) == 60:  # 1.2 s in, well into the steady state
                    ws.send(json.dumps({"type": "format", "encoding": "f32le"}))
                    asked_at = len(got)
                continue
            ev = json.loads(message)
            if ev["type"] == "format":
                announced_at = len(got)
            if ev["type"] == "utterance.end":
                break
    assert asked_at == 60 and 0 <= announced_at - asked_at <= 15  # the frames already on their way, no more
    s16_part = np.concatenate(got[:announced_at])
    f32_part = np.concatenate(got[announced_at:])
    assert f32_part.dtype == np.float32 and len(f32_part) > 0
    heard = np.concatenate([s16_part, (f32_part * 32768).astype(np.int16)])
    assert np.array_equal(heard, want)  # every sample, once, in order


@needs_opus
def test_opus_is_encoded_in_the_worker_and_decodes_to_the_same_speech(srv: ServerProcess) -> None:
    pcm, _, pcm_bytes = receive(srv.url, "s16le")
    packets, events, opus_bytes = receive(srv.url, "opus")
    fmt = [e for e in events if e["type"] == "format"]
    assert len(fmt) == 1 and fmt[0]["encoding"] == "opus" and fmt[0]["bitrate"] == 32_000
    assert len(packets) == len(pcm) + 1  # the encoder's look-ahead: one frame more at the end
    ctx = av.CodecContext.create("opus", "r")  # FFmpeg's own decoder, not libopus
    ctx.sample_rate, ctx.layout = 48_000, "mono"
    decoded = np.concatenate([f.to_ndarray().reshape(-1) for p in packets for f in ctx.decode(av.Packet(p))])
    want = s16(pcm).astype(np.float64) / 32768
    best = max(
        (float(np.corrcoef(want, decoded[lag : lag + len(want)])[0, 1]), lag)
        for lag in range(0, 1000, 4)
        if lag + len(want) <= len(decoded)
    )
    assert best[0] > 0.9, best
    seconds = len(pcm) * 0.02
    pcm_kbit, opus_kbit = pcm_bytes * 8 / seconds / 1000, opus_bytes * 8 / seconds / 1000
    assert 770 < pcm_kbit < 790 and opus_kbit < 60, (pcm_kbit, opus_kbit)
    print(f"bandwidth per session: s16le {pcm_kbit:.0f} kbit/s, opus {opus_kbit:.1f} kbit/s")


@needs_opus
def test_the_python_client_follows_each_format(srv: ServerProcess, tmp_path: Any) -> None:
    results = {}
    for encoding in ("s16le", "f32le", "opus"):
        out = tmp_path / f"{encoding}.wav"
        stats = asyncio.run(client.speak(srv.url, [TEXT], out=out, encoding=encoding))
        assert stats.gaps == 0 and stats.lost == 0
        results[encoding] = (out.read_bytes(), stats.bytes_received)
    assert results["f32le"][0] == results["s16le"][0]  # the same WAV, byte for byte
    assert results["opus"][1] < results["s16le"][1] / 10
    assert len(results["opus"][0]) >= len(results["s16le"][0])


@needs_opus
def test_a_listener_gets_the_owners_packets_and_may_not_choose_opus(srv: ServerProcess) -> None:
    with connect(srv.url, max_size=None) as owner, connect(srv.url, max_size=None) as listener:
        hello = json.loads(owner.recv(10))
        json.loads(listener.recv(10))
        listener.send(json.dumps({"type": "listen", "session_id": hello["session_id"], "key": hello["listen_key"]}))
        assert json.loads(listener.recv(10))["type"] == "listening"
        listener.send(json.dumps({"type": "format", "encoding": "opus"}))
        refused = json.loads(listener.recv(10))
        assert refused["type"] == "error" and refused["code"] == "listener"
        owner.send(json.dumps({"type": "format", "encoding": "opus"}))
        owner.send(json.dumps({"type": "synthesize", "text": "Short."}))
        seen: list[str] = []
        while "utterance.end" not in seen:
            message = listener.recv(10)
            seen.append("frame" if isinstance(message, bytes) else json.loads(message)["type"])
            if isinstance(message, bytes):
                assert len(message) < 400  # a packet, not 1 920 bytes of PCM
        assert seen.index("format") < seen.index("frame")


def test_a_bad_format_is_refused_and_the_session_goes_on(srv: ServerProcess) -> None:
    with connect(srv.url, max_size=None) as ws:
        json.loads(ws.recv(10))
        for bad in ({"type": "format"}, {"type": "format", "encoding": "mp3"}, {"type": "format", "encoding": 3}):
            ws.send(json.dumps(bad))
            err = json.loads(ws.recv(10))
            assert err["type"] == "error" and err["code"] in ("missing_field", "invalid_field"), err
        ws.send(json.dumps({"type": "synthesize", "text": "Still here."}))
        assert json.loads(ws.recv(10))["type"] == "queued"


def test_a_client_picks_a_quality_level_mid_utterance_and_back() -> None:
    """With adaptive quality on, ``format`` with a level: the frames from the worker's next one are at
    it, announced (reason ``requested``), 960 samples of 24 kHz per 40 ms; nothing lost or repeated."""
    server = ServerProcess({"RINGAUDIO__AUDIO__ADAPTIVE_QUALITY": "true"})
    try:
        with connect(server.url, max_size=None) as ws:
            json.loads(ws.recv(10))
            ws.send(json.dumps({"type": "synthesize", "text": TEXT * 3}))
            seqs, kinds, formats = [], [], []
            while True:
                message = ws.recv(20)
                if isinstance(message, bytes):
                    seqs.append(int.from_bytes(message[8:16], "little"))
                    kinds.append(formats[-1]["sample_rate"] if formats else 48_000)
                    assert len(message) - 24 == 1920  # 960 samples either way
                    if len(seqs) == 30:
                        ws.send(json.dumps({"type": "format", "sample_rate": 24_000, "frame_ms": 40}))
                    if len(seqs) == 120:
                        ws.send(json.dumps({"type": "format", "sample_rate": 48_000, "frame_ms": 20}))
                    continue
                ev = json.loads(message)
                if ev["type"] == "format":
                    formats.append(ev)
                if ev["type"] == "utterance.end":
                    end = ev
                    break
            bad = {"type": "format", "sample_rate": 16_000, "frame_ms": 20}
            ws.send(json.dumps(bad))
            assert json.loads(ws.recv(10))["code"] == "invalid_field"
        assert [(f["sample_rate"], f["frame_ms"], f["reason"]) for f in formats] == [
            (24_000, 40, "requested"),
            (48_000, 20, "requested"),
        ]
        assert seqs == list(range(len(seqs)))
        assert kinds.count(24_000) > 40 and kinds[-1] == 48_000
        low = kinds.count(24_000)
        assert (
            abs(end["duration_ms"] - (low * 40 + (len(seqs) - low) * 20)) <= 1
        )  # the worker counts each at its length
    finally:
        assert server.stop() == 0


def test_a_level_needs_adaptive_quality(srv: ServerProcess) -> None:
    with connect(srv.url, max_size=None) as ws:
        json.loads(ws.recv(10))
        ws.send(json.dumps({"type": "format", "sample_rate": 24_000, "frame_ms": 40}))
        assert json.loads(ws.recv(10))["code"] == "format_unavailable"
        ws.send(json.dumps({"type": "format", "sample_rate": 24_000}))
        assert json.loads(ws.recv(10))["code"] == "missing_field"
