"""What a session's audio goes out as: s16le as the ring holds it, f32le converted as it is sent, or
the worker's Opus packets; and the ``format`` event that precedes the first frame of a new format.

A client asks with ``{"type": "format", "encoding": ...}``. f32le is a conversion on the way out
(exact: ``sample / 32768``), so it starts at the next frame; Opus is encoded in the worker, so it
starts with the next utterance synthesized. Either way the client is told, by a ``format`` event
right before the first frame that is different; each frame's own label (in the ring) says what it is.
"""

from __future__ import annotations

import time

import numpy as np
from websockets.asyncio.server import broadcast

from .. import wire as P
from ..errors import CodecError, StreamError
from ..ring import layout
from ..stream import Stream
from .send import Sending
from .session import Session

SEND_AS_IS, SEND_F32, SEND_PACKET = 0, 1, 2
F32_SCALE = np.float32(1 / 32768)  # a power of two: every int16 maps to one float32 exactly
MIN_SEND_LIMIT = 16 * 1024  # bytes (see _limit)
PACKET_GUESS = 120  # bytes: a first guess of an Opus message's size, before any was sent


class Formats(Sending):
    def _init_format(self, s: Session) -> None:
        """A new session: s16le at the configured rate, as its ``session`` event says."""
        s.wire_format = (self.config.output_sample_rate, self.config.frame_duration_ms * 1000, "s16le")
        s.frame_bytes = self.frame_bytes
        s.send_limit = self.send_limit

    def _set_format(self, s: Session, cmd: P.Format) -> None:
        """A client's ``format`` command (errors go back as ``error`` events)."""
        stream = s.stream
        if cmd.level is not None and not self._set_level(s, cmd.level):
            return
        if cmd.encoding is None:
            return
        try:
            if cmd.encoding == "opus":
                if stream is None:
                    raise StreamError("listener", "a listener gets the format its stream's owner chose")
                stream.set_encoding("opus")
            elif stream is not None:
                stream.set_encoding("s16le")
        except (StreamError, CodecError) as exc:
            self._refuse(s, exc)
            return
        s.f32 = cmd.encoding == "f32le"
        s.format_reason = "requested"
        s.ring_format = -1  # looked at again before the next frame

    def _set_level(self, s: Session, level: tuple[int, int]) -> bool:
        """A client's pick of a quality level; False (and an ``error`` sent) if it cannot have it."""
        if s.stream is None:
            self._error(s, "listener", "a listener hears the level its stream's owner has")
            return False
        if s.quality is None:
            self._error(s, "format_unavailable", "levels need audio.adaptive_quality: true on the server")
            return False
        if s.stream.encoding == "opus":
            self._error(s, "format_unavailable", "an Opus session keeps its level (audio.opus_bitrate)")
            return False
        if level not in self.levels:
            allowed = ", ".join(f"{r}/{ms}" for r, ms in self.levels)
            self._error(s, "invalid_field", f"'sample_rate'/'frame_ms' must be one of {allowed}")
            return False
        s.quality.set(self.levels.index(level), time.monotonic())
        self._apply_level(s, s.stream, self.levels.index(level), "requested")
        return True

    def _apply_level(self, s: Session, stream: Stream, index: int, reason: str) -> None:
        """Level ``index`` from the worker's next frame: the reason its format event (and its
        listeners') will give, the gauge."""
        s.format_reason = reason
        for listener in s.listeners:
            listener.format_reason = reason
        stream.set_level(self.levels[index])
        self.metrics.set_level(s.id, index)

    def _reformat(self, s: Session, word: int) -> None:
        """The frame about to be sent has format ``word`` (or the client changed its mind): decide
        how it goes out, and announce it if the client has not been told."""
        s.ring_format = word
        cfg = self.config
        fmt = layout.decode_format(word)
        rate, frame_us, encoding = (
            (fmt.sample_rate, fmt.frame_us, fmt.encoding)
            if fmt is not None
            else (cfg.output_sample_rate, cfg.frame_duration_ms * 1000, "s16le")
        )
        samples = rate * frame_us // 1_000_000
        if encoding == "s16le" and s.f32:
            encoding, s.send_mode = "f32le", SEND_F32
            if s.f32_pcm is None or len(s.f32_pcm) != samples:  # a message buffer of this frame size
                payload = P.HEADER_SIZE + 4 * samples
                prefix = P.ws_binary_prefix(payload)
                s.f32_frame = bytearray(prefix) + bytearray(payload)
                s.f32_offset = len(prefix)
                s.f32_pcm = np.frombuffer(s.f32_frame, np.float32, offset=s.f32_offset + P.HEADER_SIZE)
            s.frame_bytes = len(s.f32_frame or b"")
        elif encoding == "s16le" and samples == self.frame_samples:
            s.send_mode, s.frame_bytes = SEND_AS_IS, self.frame_bytes
        elif encoding == "s16le":  # a lower quality level: fewer samples than the slot
            s.send_mode = SEND_PACKET
            s.frame_bytes = len(P.ws_binary_prefix(P.HEADER_SIZE + 2 * samples)) + P.HEADER_SIZE + 2 * samples
        else:
            s.send_mode = SEND_PACKET
            if s.wire_format is None or s.wire_format[2] != encoding:
                s.frame_bytes = PACKET_GUESS
        s.send_limit = self._limit(s)
        if abs(s.pacer.period * 1e6 - frame_us) > 1:  # another frame length: pace at it
            s.pacer.tokens *= s.pacer.period * 1e6 / frame_us  # the same time's worth, in the new frames
            s.pacer.period = frame_us / 1e6
            s.pacer.prebuffer = max(1, cfg.server.prebuffer_ms * 1000 // frame_us)
        wire = (rate, frame_us, encoding)
        if wire != s.wire_format:
            s.wire_format = wire
            fields: dict[str, object] = {
                "sample_rate": rate,
                "frame_ms": frame_us / 1000 if frame_us % 1000 else frame_us // 1000,
                "frame_samples": rate * frame_us // 1_000_000,
                "encoding": encoding,
                "reason": s.format_reason,
            }
            if encoding == "opus":
                fields["bitrate"] = max(6_000, cfg.opus_bitrate * rate // cfg.output_sample_rate)
            self._send_text(s, P.event("format", **fields))

    def _send_packet(self, s: Session, nbytes: int) -> None:
        """A frame whose payload is the first ``nbytes`` of its slot (the header is packed in place)."""
        frame, offset = s.frame, s.offset
        end = offset + P.HEADER_SIZE + nbytes
        if s.raw:
            s.ws.transport.write(P.ws_binary_prefix(end - offset) + frame[offset:end])
        else:
            broadcast([s.ws], memoryview(frame)[offset:end])
        size = end - offset + (2 if end - offset < 126 else 4)
        s.frame_bytes += round((size - s.frame_bytes) / 8)  # a running mean
        s.send_limit = self._limit(s)

    def _limit(self, s: Session) -> int:
        """server.send_buffer_frames of the session's messages, and at least MIN_SEND_LIMIT: the
        kernel's view of what a client holds unread moves in whole segments, and charges a small
        message far more than its bytes."""
        return max(self.config.server.send_buffer_frames * max(1, s.frame_bytes), MIN_SEND_LIMIT)

    def _send_f32(self, s: Session, header: tuple[int, int, int, int, int, int]) -> None:
        """A PCM frame as f32le: converted into the session's own message buffer, header and all."""
        out, pcm = s.f32_frame, s.f32_pcm
        assert out is not None and pcm is not None
        P.HEADER.pack_into(out, s.f32_offset, *header)
        np.multiply(s.pcm[: len(pcm)], F32_SCALE, out=pcm)
        if s.raw:
            s.ws.transport.write(bytes(out))
        else:
            broadcast([s.ws], memoryview(out)[s.f32_offset :])
