"""One Wyoming connection: ``describe``, ``synthesize`` and streaming synthesis, on an Engine stream.

Each connection gets a stream of its own (a ring lease) when it first asks for speech. Audio goes out
as frames come out of the ring — ``audio-start``, one ``audio-chunk`` per frame (resampled to the
service's rate when it is not the engine's), ``audio-stop`` — each written and *drained* before the
next frame is read, so a client that reads slowly holds its frames in the ring and its worker at the
high watermark: nothing is buffered without bound, nothing is lost. A client that goes away cancels
its utterances in the workers (the stream is closed).

Streaming input (``synthesize-start``, ``synthesize-chunk``s, ``synthesize-stop``) speaks each
sentence as soon as it is complete, into one audio stream, and ends with ``synthesize-stopped``.
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.error import Error
from wyoming.event import Event, async_write_event
from wyoming.info import Info

from .. import logs
from ..engine import Engine
from ..errors import RingAudioError
from ..stream import Frame, Stream
from .framing import FramingError, read_event

log = logging.getLogger("ringaudio.wyoming")
SENTENCE_END = re.compile(r"(?<=[.!?…。！？])\s+")  # where streamed text may be spoken up to
MAX_STREAM_TEXT = 100_000  # characters a streamed synthesis may accumulate without a sentence end


@dataclass
class Output:
    """What the client hears: its rate, and the resampler from the engine's when they differ."""

    rate: int
    engine_rate: int
    resampler: Any = None

    def __post_init__(self) -> None:
        if self.rate != self.engine_rate:
            from ..resample import Resampler

            self.resampler = Resampler(self.engine_rate, self.rate)

    def pcm(self, frame: np.ndarray) -> bytes:
        if self.resampler is None:
            return frame.tobytes()
        from ..resample import float32_to_int16, int16_to_float32

        return bytes(float32_to_int16(self.resampler.process(int16_to_float32(frame))).tobytes())

    def flush(self) -> bytes:
        if self.resampler is None:
            return b""
        from ..resample import float32_to_int16

        tail = bytes(float32_to_int16(self.resampler.flush()).tobytes())
        self.resampler.reset()
        return tail


class Connection:
    def __init__(
        self, engine: Engine, info: Info, rate: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.engine, self.info, self.rate = engine, info, rate
        self.reader, self.writer = reader, writer
        self.stream: Stream | None = None
        self.streaming: dict[str, Any] | None = None  # a streamed synthesis in progress: its text so far
        self.speaking: asyncio.Task[None] | None = None
        self.peer = str(writer.get_extra_info("peername"))
        self.said = asyncio.Event()  # a streamed sentence was said, or the streamed synthesis stopped

    async def send(self, event: Event) -> None:
        await async_write_event(event, self.writer)  # (it drains: a slow reader slows us down)

    async def error(self, code: str, text: str) -> None:
        logs.event(log, logging.WARNING, "wyoming request refused", None, code=code, error=text, peer=self.peer)
        await self.send(Error(text=text, code=code).event())

    async def run(self) -> None:
        try:
            while True:
                try:
                    event = await read_event(self.reader)
                except FramingError as exc:
                    await self.error(exc.code, str(exc))
                    return  # the stream of events cannot be trusted any more: close
                if event is None:
                    return
                if not await self.handle(event):
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            await self.close()

    async def close(self) -> None:
        if self.speaking is not None:
            self.speaking.cancel()
            await asyncio.gather(self.speaking, return_exceptions=True)
        if self.stream is not None:
            self.stream.close()  # the worker stops, the lease goes back
            self.stream = None
        self.writer.close()

    async def handle(self, event: Event) -> bool:
        kind, data = event.type, event.data
        if kind == "describe":
            await self.send(self.info.event())
        elif kind == "synthesize":
            if self.streaming is not None:  # a streaming client sends it too, for old servers: already spoken
                return True
            text = data.get("text")
            if not isinstance(text, str) or not text.strip():
                await self.error("missing_text", "'synthesize' needs a non-empty 'text'")
                return True
            await self.speak([text], _voice(data))
        elif kind == "synthesize-start":
            self.streaming = {"text": "", "voice": _voice(data), "said": 0}
            self.start_streaming()
        elif kind == "synthesize-chunk":
            if self.streaming is None:
                await self.error("not_streaming", "'synthesize-chunk' without 'synthesize-start'")
                return True
            chunk = data.get("text")
            if not isinstance(chunk, str):
                await self.error("missing_text", "'synthesize-chunk' needs a 'text'")
                return True
            self.streaming["text"] += chunk
            if len(self.streaming["text"]) > MAX_STREAM_TEXT:
                await self.error("text_too_long", f"over {MAX_STREAM_TEXT} characters without a sentence end")
                return False
            self.say_complete(final=False)
        elif kind == "synthesize-stop":
            if self.streaming is None:
                await self.error("not_streaming", "'synthesize-stop' without 'synthesize-start'")
                return True
            self.streaming["done"] = True
            self.say_complete(final=True)
            if self.speaking is not None:
                await asyncio.gather(self.speaking, return_exceptions=True)
            self.streaming = None
            await self.send(Event(type="synthesize-stopped"))
        elif kind in ("ping",):
            await self.send(Event(type="pong", data={"text": data.get("text")}))
        else:
            await self.error("unknown_event", f"ringaudio's Wyoming service does not handle {kind[:64]!r} events")
        return True

    # -- speech -------------------------------------------------------------------------------------
    def open(self) -> Stream:
        if self.stream is None:
            self.stream = self.engine.open_stream()
        return self.stream

    async def speak(self, texts: list[str], voice: str | None) -> None:
        """A whole synthesize: its utterances said, its audio sent, until the last one ends."""
        try:
            stream = self.open()
            ids = [stream.say(text, voice=voice) for text in texts]
        except RingAudioError as exc:
            await self.error(getattr(exc, "code", "unavailable"), str(exc))
            return
        await self.play(stream, set(ids), streaming=False)

    def start_streaming(self) -> None:
        try:
            self.open()
        except RingAudioError:
            return  # said when the first sentence is
        self.speaking = asyncio.ensure_future(self.play_streaming())

    def say_complete(self, final: bool) -> None:
        """Say each sentence of the streamed text that is complete (all of it when ``final``)."""
        st = self.streaming
        assert st is not None
        parts = SENTENCE_END.split(st["text"])
        ready, st["text"] = (parts, "") if final else (parts[:-1], parts[-1])
        for sentence in ready:
            if sentence.strip() and self.stream is not None:
                try:
                    st.setdefault("ids", set()).add(self.stream.say(sentence, voice=st["voice"]))
                    st["said"] += 1
                except RingAudioError as exc:
                    st.setdefault("errors", []).append(exc)
        self.said.set()

    async def play_streaming(self) -> None:
        assert self.stream is not None and self.streaming is not None
        await self.play(self.stream, None, streaming=True)

    async def play(self, stream: Stream, ids: set[int] | None, streaming: bool) -> None:
        """Frames out as they come; ``audio-stop`` once every utterance asked for ended (a streamed
        synthesis: once it was stopped and its last utterance ended)."""
        out = Output(self.rate, self.engine.sample_rate)
        started = False
        ended: set[int] = set()
        width = {"rate": self.rate, "width": 2, "channels": 1}

        def done() -> bool:
            if not streaming:
                return ids is not None and ended >= ids
            st = self.streaming
            return st is not None and bool(st.get("done")) and ended >= st.get("ids", set())

        while not done():
            async for item in stream:  # ends when the stream has nothing more to say (for now)
                if isinstance(item, Frame):
                    if not started:
                        started = True
                        await self.send(AudioStart(**width).event())
                    await self.send(AudioChunk(audio=out.pcm(item.pcm), **width).event())
                    continue
                if item.type in ("utterance.end", "error") and item.data.get("utterance_id") is not None:
                    ended.add(item.data["utterance_id"])
                    if item.type == "error":
                        await self.error(str(item.data.get("code", "synthesis_failed")), str(item.data.get("message")))
                    if done():
                        break
            if not streaming or done():
                break
            await self.said.wait()  # a streamed synthesis: the next sentence, or its stop
            self.said.clear()
        if started:
            tail = out.flush()
            if tail:
                await self.send(AudioChunk(audio=tail, **width).event())
            await self.send(AudioStop().event())


def _voice(data: dict[str, Any]) -> str | None:
    voice = data.get("voice")
    if isinstance(voice, dict):
        name = voice.get("name")
        return name if isinstance(name, str) and name else None
    return None
