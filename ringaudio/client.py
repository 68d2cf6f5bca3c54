"""The Python client: a library (async) and ``python -m ringaudio.client "Hello there" --out hello.wav``.

It speaks the wire contract of ``docs/protocol.md``: sends ``synthesize``, receives binary frames
(24-byte header + PCM), checks sequence continuity, writes a WAV, and reports frames, gaps, lost,
first-audio latency and inter-frame jitter. ``--slow-ms 25`` makes it a deliberately slow consumer
(the runbook's slow-client test); ``--pause-after-ms/--pause-ms`` exercise flow control.
``--encoding f32le|opus`` asks for that format; the client follows every ``format`` event and
writes int16 PCM either way (f32le converted back exactly, Opus decoded with libopus).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
import time
import wave
from array import array
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

from websockets.asyncio.client import connect

from . import wire as P


@dataclass
class Stats:
    frames: int = 0
    gaps: int = 0
    lost: int = 0  # sequence numbers never received
    reported_lost: int = 0  # what the server's overrun events said
    first_audio_ms: float | None = None
    intervals_ms: list[float] = field(default_factory=list)
    sequences: list[int] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    session: dict[str, Any] = field(default_factory=dict)
    bytes_received: int = 0  # every audio message, headers included

    def jitter_ms(self, q: float) -> float:
        if len(self.intervals_ms) < 3:
            return 0.0
        steps = sorted(abs(b - a) for a, b in pairwise(self.intervals_ms))
        return _quantile(steps, q)

    def summary(self) -> dict[str, Any]:
        return {
            "frames": self.frames,
            "gaps": self.gaps,
            "lost": self.lost,
            "reported_lost": self.reported_lost,
            "first_audio_ms": None if self.first_audio_ms is None else round(self.first_audio_ms, 2),
            "jitter_p50_ms": round(self.jitter_ms(0.5), 3),
            "jitter_p99_ms": round(self.jitter_ms(0.99), 3),
            "bytes_received": self.bytes_received,
        }


def _quantile(ordered: list[float], q: float) -> float:
    """The ``q`` quantile of sorted values, interpolated linearly between the two nearest ranks: what
    ``numpy.quantile`` returns by default, without making a client that only receives frames load
    NumPy."""
    at = (len(ordered) - 1) * q
    lo = math.floor(at)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (at - lo)


async def speak(
    url: str,
    texts: list[str],
    *,
    out: Path | None = None,
    slow_ms: float = 0.0,
    pause_after_ms: float | None = None,
    pause_ms: float = 0.0,
    token: str | None = None,
    timeout: float = 60.0,
    encoding: str = "s16le",
) -> Stats:
    """Synthesize ``texts`` back to back and receive every frame until the last ``utterance.end``."""
    stats = Stats()
    pcm: list[bytes] = []
    headers = {"Authorization": f"Bearer {token}"} if token else None
    async with connect(url, additional_headers=headers, max_size=2**20, compression=None) as ws:
        stats.session = json.loads(await ws.recv())
        payload = _Payload(stats.session.get("sample_rate", 48_000))
        if encoding != "s16le":
            await ws.send(json.dumps({"type": "format", "encoding": encoding}))
        sent_at = time.monotonic()
        for text in texts:
            await ws.send(json.dumps({"type": "synthesize", "text": text}))
        remaining = len(texts)
        expected = None
        last = None
        paused = False
        deadline = time.monotonic() + timeout
        while remaining:
            # (asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancellation)
            async with asyncio.timeout(max(0.1, deadline - time.monotonic())):
                message = await ws.recv()
            now = time.monotonic()
            if isinstance(message, str):
                ev = json.loads(message)
                stats.events.append(ev)
                if ev["type"] == "utterance.end":
                    remaining -= 1
                elif ev["type"] == "overrun":
                    stats.reported_lost += ev["lost"]
                elif ev["type"] == "error" and ev.get("utterance_id") is not None:
                    remaining -= 1
                elif ev["type"] == "format":
                    pcm.append(payload.follow(ev))
                continue
            header = P.decode_header(message)
            stats.frames += 1
            stats.sequences.append(header.sequence)
            if stats.first_audio_ms is None:
                stats.first_audio_ms = (now - sent_at) * 1000
            if expected is not None and header.sequence != expected:
                stats.gaps += 1
                stats.lost += header.sequence - expected
            expected = header.sequence + 1
            if last is not None:
                stats.intervals_ms.append((now - last) * 1000)
            last = now
            stats.bytes_received += len(message)
            pcm.append(payload.pcm(message[P.HEADER_SIZE :]))
            if pause_after_ms is not None and not paused and (now - sent_at) * 1000 >= pause_after_ms:
                paused = True
                await ws.send(json.dumps({"type": "control", "action": "pause"}))
                await asyncio.sleep(pause_ms / 1000)
                await ws.send(json.dumps({"type": "control", "action": "resume"}))
            if slow_ms:
                await asyncio.sleep(slow_ms / 1000)
    pcm.append(payload.finish())
    if out is not None:
        with wave.open(str(out), "wb") as w:
            w.setnchannels(stats.session.get("channels", 1))
            w.setsampwidth(2)
            w.setframerate(stats.session.get("sample_rate", 48_000))
            w.writeframes(b"".join(pcm))
    return stats


class _Payload:
    """A frame's payload as int16 PCM at the session's first rate, whatever its current format is.

    Adaptive quality may lower the rate mid-stream (e.g. 48 -> 24 kHz): those frames are upsampled
    back (:class:`ringaudio.dsp.Upsampler`, primed with the audio before the change and finished with
    the audio after it, so the change leaves no click), and the WAV has one rate throughout."""

    def __init__(self, rate: int) -> None:
        self.encoding = "s16le"
        self.rate = self.first_rate = rate
        self._decoder: Any = None
        self._up: Any = None  # an Upsampler while the stream runs below the first rate
        self._closing: Any = None  # the previous one, finished with the next frame's samples
        self._last: Any = None  # the last samples written, at the first rate (to prime the next one)

    def follow(self, ev: dict[str, Any]) -> bytes:
        """A ``format`` event: the frames from the next one on are in it."""
        self.encoding, rate = ev["encoding"], ev["sample_rate"]
        tail = b""
        if self._closing is not None:  # two changes without a frame between them: end it with silence
            tail, self._closing = bytes(self._closing.flush().tobytes()), None
        if self._up is not None:
            self._closing, self._up = self._up, None
        if self._closing is not None and self.encoding == "opus":  # no PCM to finish it with
            tail, self._closing = tail + bytes(self._closing.flush().tobytes()), None
        if rate != self.first_rate and self.encoding != "opus":  # Opus decodes at the first rate itself
            if self.first_rate % rate:
                raise P.ProtocolError(P.ErrorCode.BAD_FRAME, f"cannot write {rate} Hz into {self.first_rate} Hz")
            from .dsp import Upsampler  # only a stream that changes rate loads NumPy for it

            self._up = Upsampler(self.first_rate // rate)
            if self._last is not None:
                self._up.prime(self._last[:: self.first_rate // rate])
        self.rate = rate
        if self.encoding == "opus" and self._decoder is None:
            from .opus import Decoder  # only a session in Opus loads NumPy and libopus

            self._decoder = Decoder(self.first_rate)
        return tail

    def pcm(self, data: bytes) -> bytes:
        if self.encoding == "opus":
            return bytes(self._decoder.decode(data).tobytes())
        if self.encoding == "f32le":  # exactly int16 / 32768, so exactly back
            floats = array("f", data)
            data = array("h", [int(x * 32768.0) for x in floats]).tobytes()
        if self._up is None and self._closing is None and self.rate == self.first_rate and self._last is None:
            return data  # the common case: never changed rate, nothing to keep
        import numpy as np

        frame = np.frombuffer(data, np.int16)
        out = []
        if self._closing is not None:  # the previous (lower-rate) segment's last samples, from this frame
            m_old = self._closing.m
            ahead = frame[:: m_old * self.rate // self.first_rate] if self._up is None else frame
            out.append(self._closing.finish_with(ahead))
            self._closing = None
        out.append(self._up.push(frame) if self._up is not None else frame)
        pcm = np.concatenate(out).astype(np.int16)
        self._last = pcm[-512:] if self._last is None or len(pcm) >= 512 else np.concatenate([self._last, pcm])[-512:]
        return bytes(pcm.tobytes())

    def finish(self) -> bytes:
        """The end of the stream: what an upsampler still holds."""
        tail = b""
        for up in (self._closing, self._up):
            if up is not None:
                tail += bytes(up.flush().tobytes())
        self._closing = self._up = None
        return tail


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ringaudio.client", description="speak text through a ringaudio server"
    )
    parser.add_argument("text", nargs="+", help="one or more utterances, spoken back to back")
    parser.add_argument("--url", default="ws://127.0.0.1:8080/ws")
    parser.add_argument("--out", type=Path, help="write the audio to this WAV file")
    parser.add_argument("--slow-ms", type=float, default=0.0, help="extra time spent per frame (a slow client)")
    parser.add_argument("--pause-after-ms", type=float, help="send pause this long after the request ...")
    parser.add_argument("--pause-ms", type=float, default=1000.0, help="... and resume this much later")
    parser.add_argument("--token", help="shared token (or RINGAUDIO_TOKEN)")
    parser.add_argument("--encoding", choices=P.WIRE_ENCODINGS, default="s16le", help="what to receive")
    parser.add_argument("--stats", action="store_true", help="print the statistics as JSON")
    args = parser.parse_args(argv)
    import os

    try:
        stats = asyncio.run(
            speak(
                args.url,
                args.text,
                out=args.out,
                slow_ms=args.slow_ms,
                pause_after_ms=args.pause_after_ms,
                pause_ms=args.pause_ms,
                token=args.token or os.environ.get("RINGAUDIO_TOKEN"),
                encoding=args.encoding,
            )
        )
    except (OSError, TimeoutError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # a refused handshake, a closed connection: say it plainly
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    summary = stats.summary()
    if args.stats:
        print(json.dumps(summary))
    else:
        print(
            f"{summary['frames']} frames, {summary['gaps']} gaps, {summary['lost']} lost, "
            f"first audio {summary['first_audio_ms']} ms, jitter p50 {summary['jitter_p50_ms']} ms "
            f"p99 {summary['jitter_p99_ms']} ms" + (f", wrote {args.out}" if args.out else "")
        )
    errors = [e for e in stats.events if e["type"] == "error"]
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
