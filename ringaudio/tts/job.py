"""One utterance in flight in a worker: its frame pipeline, its pacing clock, its labels.

Pure but for the ring it writes and the backend it pulls from: the worker's loop
(:mod:`ringaudio.tts.worker`) steps many of these from one thread.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator

import numpy as np

from .. import opus
from ..errors import RingClosed
from ..resample import Resampler
from ..ring import FrameRing, layout
from ..wire import FLAG_FIRST, FLAG_LAST
from .backends import Backend
from .framer import Framer
from .levels import LevelStage
from .spec import PACE_MAX, Job, WorkerSpec, pace_frames, prebuffer_frames
from .text import split_text

STEP_FRAMES = PACE_MAX  # frames a job writes before the loop looks at the others and at the pipe
BLOCKED_POLL = 0.005  # s: the shortest wait before a job held at the watermark looks again
BLOCKED_POLL_MAX = 0.1  # s: the longest (the ring still holds ≥ low watermark frames of audio then)


class PlaybackClock:
    """A stream's real playback position, for pacing its writer: pure (time and the reader's
    position are passed in).

    It starts where the reader is when first asked and runs at one frame per ``period``; frame
    ``seq`` may be written ``lead`` frames before the clock reaches it. A writer that has fallen
    behind the clock (synthesis slower than real time: the reader is starving) sets it back to
    itself, so what it produces next is paced again instead of dumped at once; :meth:`restart`
    (after backpressure) makes the next question start it from the reader again.
    """

    __slots__ = ("_anchor", "lead", "period")

    def __init__(self, lead: int, period: float) -> None:
        self.lead = lead
        self.period = period
        self._anchor: tuple[int, float] | None = None  # (sequence, time)

    def due(self, seq: int, now: float, reader: Callable[[], int]) -> float:
        """When frame ``seq`` may be written (``now`` or earlier: at once)."""
        if self._anchor is None:
            self._anchor = (reader(), now)
        base, t0 = self._anchor
        if now - t0 > (seq - base) * self.period:  # behind the clock
            self._anchor = (seq, now)
            return now
        return t0 + (seq - base - self.lead) * self.period

    def allowed(self, seq: int, now: float, reader: Callable[[], int]) -> int:
        """How many frames from ``seq`` on may be written at ``now`` (0: ``seq`` is not due yet)."""
        if self.due(seq, now, reader) > now:
            return 0
        assert self._anchor is not None
        base, t0 = self._anchor
        return max(1, int((now - t0) // self.period) - (seq - base - self.lead) + 1)

    def restart(self) -> None:
        self._anchor = None

    def retime(self, seq: int, period: float, lead: int) -> None:
        """From frame ``seq`` on, frames last ``period`` and the lead is ``lead`` of them: the clock
        keeps the time ``seq`` was due at (a restart would count the shorter frames already in the
        ring at the new length, and lose the lead)."""
        if self._anchor is not None:
            base, t0 = self._anchor
            self._anchor = (seq, t0 + (seq - base) * self.period)
        self.period = period
        self.lead = lead


class ActiveJob:
    """One utterance in flight: a generator of frames and the frames waiting for room in the ring.

    PCM at one level (no adaptive quality, not Opus: most jobs) goes the block way: each chunk's
    frames are staged as one block and written with one ring call per step (:meth:`_step_blocks`).
    The others go frame by frame (:meth:`_step_frames`), through the level stage and the encoder.
    """

    BLOCKS = True  # the block way where it applies (tests compare it with the frame way)

    def __init__(self, job: Job, ring: FrameRing, backend: Backend, spec: WorkerSpec) -> None:
        self.job = job
        self.ring = ring
        self.backend = backend
        self.spec = spec
        self.started = time.monotonic()
        self.synthesis_s = 0.0
        self.first_seq = -1
        self.last_seq = -1
        self.frames = 0
        self.retry_at = 0.0  # monotonic: when a job held at the watermark (or by its pacing) looks again
        self.clock = PlaybackClock(spec.lead_frames, spec.frame_samples / spec.output_sample_rate)
        frame_us = round(spec.frame_samples * 1_000_000 / spec.output_sample_rate)
        self.format = layout.encode_format(spec.output_sample_rate, frame_us, job.encoding)
        self.audio_s = 0.0  # of the frames written
        # adaptive quality: frames at the level the server asks for, changed at a frame boundary
        base_level = (spec.output_sample_rate, frame_us // 1000)
        # (not for Opus: a new encoder per level would lose or repeat its look-ahead at each change)
        adaptive = spec.adaptive and job.encoding != "opus"
        self._stage = LevelStage(spec.output_sample_rate, job.level or base_level) if adaptive else None
        self._frame_level = base_level  # the level of the frame written last (pacing follows it)
        self._lead_ms = spec.lead_frames * frame_us // 1000
        self._pace = self._pace_at(frame_us // 1000)  # frames per look, at the frame length now
        # Opus: each frame is encoded as it is produced (in order, once), into its own buffer; the
        # ring slot then holds the packet in its first ``nbytes`` bytes. One encoder per level.
        self._opus = job.encoding == "opus"
        self._encoders: dict[tuple[int, int], opus.Encoder] = {}
        self._formats: dict[tuple[int, int], int] = {base_level: self.format}
        self._pulled_fmt = self.format
        self._pending_fmt = self._next_fmt = self.format
        self._pending_level = self._next_level = self._pulled_level = base_level
        self._pulled_bytes = 0  # the packet size of the frame _pull returned last (0: PCM, the whole slot)
        # One frame of look-ahead: a frame is written only once the next one exists (or the text is
        # done), so its label can say whether it is the utterance's last. Two buffers of our own,
        # because the framer hands out views of one buffer that the next frame overwrites.
        self._blocks = self._block_way(spec, job)
        self._buffers = np.zeros((0 if self._blocks else 2, spec.frame_samples), np.int16)
        self._pending_bytes = 0
        self._next_bytes = 0
        self._turn = 0
        self._pending: np.ndarray | None = None  # the frame to write next
        self._next: np.ndarray | None = None  # the one after it, once produced
        self._exhausted = False  # the text is done: no frame comes after _next
        self._frames: Generator[np.ndarray | tuple[np.ndarray, tuple[int, int]], None, None]
        self._framer = Framer(spec.frame_samples)
        if self._blocks:
            # frames [_a, _b) of _staged (the framer's last block) wait to be written; the last one
            # waits for its successor
            self._staged: np.ndarray = np.zeros((0, spec.frame_samples), np.int16)
            self._a = self._b = 0
            self._frames = self._produce(blocks=True)
        else:
            self._frames = self._levelled()

    def _block_way(self, spec: WorkerSpec, job: Job) -> bool:
        """PCM at one level goes the block way (the level stage and the encoder go frame by frame)."""
        return self.BLOCKS and not spec.adaptive and job.encoding != "opus"

    def _produce(self, blocks: bool = False) -> Generator[np.ndarray, None, None]:
        """Frames (or, with ``blocks``, each chunk's frames as one ``(k, frame_samples)`` block)."""
        same_rate = self.backend.native_rate == self.spec.output_sample_rate  # a model speaking the wire's rate
        resampler = Resampler(self.backend.native_rate, self.spec.output_sample_rate, self.spec.resample_quality)
        framer = self._framer
        push = framer.push_blocks if blocks else framer.push
        for piece in split_text(self.job.text, self.spec.clause_chars):
            chunks = self.backend.synthesize(piece, self.job.voice)
            try:
                while True:
                    t0 = time.monotonic()
                    chunk = next(chunks, None)
                    self.synthesis_s += time.monotonic() - t0
                    if chunk is None:
                        break
                    yield from push(chunk if same_rate else resampler.process(chunk))
            finally:
                close = getattr(chunks, "close", None)
                if close is not None:
                    close()  # a cancel stops the engine now (espeak's process is killed)
        if not same_rate:
            yield from push(resampler.flush())
        yield from framer.flush_blocks() if blocks else framer.flush()

    def _levelled(self) -> Generator[tuple[np.ndarray, tuple[int, int]], None, None]:
        """Frames with their level: the base one, or what the level stage makes of them."""
        stage = self._stage
        level = self._frame_level
        last: np.ndarray | None = None
        for frame in self._produce():
            if stage is None:
                last = frame
                yield frame, level
                continue
            for pcm, rate, frame_us in stage.push(frame):
                last = pcm
                yield pcm, (rate, frame_us // 1000)
        if stage is not None:
            for pcm, rate, frame_us in stage.flush():
                last = pcm
                yield pcm, (rate, frame_us // 1000)
            level = stage.level
        if self._opus and last is not None:  # the encoder's look-ahead holds the last few ms: one silent frame more
            yield np.zeros(level[0] * level[1] // 1000, np.int16), level

    def set_level(self, level: tuple[int, int]) -> None:
        """The server's adaptive quality: frames from the next one produced on are at ``level``."""
        if self._stage is not None:
            self._stage.set_level(level)

    def _format_of(self, level: tuple[int, int]) -> int:
        word = self._formats.get(level)
        if word is None:
            encoding = "opus" if self._opus else "s16le"
            word = self._formats[level] = layout.encode_format(level[0], level[1] * 1000, encoding)
        return word

    def _encoder_for(self, level: tuple[int, int]) -> opus.Encoder:
        enc = self._encoders.get(level)
        if enc is None:
            bitrate = self.spec.opus_bitrate * level[0] // self.spec.output_sample_rate  # fewer bits at a lower level
            enc = self._encoders[level] = opus.Encoder(level[0], level[1], max(6_000, bitrate))
        return enc

    def _reader(self) -> int:
        """Where the ring's (slowest gating) reader is."""
        return self.ring.write_seq - self.ring.fill

    def _pull(self) -> np.ndarray | None:
        """The next frame, copied into the buffer not in use, or None when the text is done."""
        if self._exhausted:
            return None
        item = next(self._frames, None)
        if item is None:
            self._exhausted = True
            return None
        frame, level = item
        out: np.ndarray = self._buffers[self._turn]
        self._turn ^= 1
        self._pulled_level = level
        self._pulled_fmt = self._format_of(level)
        if self._opus:
            self._pulled_bytes = self._encoder_for(level).encode_into(np.ascontiguousarray(frame), out)
        elif len(frame) == len(out):
            np.copyto(out, frame)
            self._pulled_bytes = 0
        else:  # a lower level: fewer samples than the slot holds
            out[: len(frame)] = frame
            self._pulled_bytes = 2 * len(frame)
        return out

    def step(self, now: float) -> str:
        """Write up to STEP_FRAMES frames: 'running', 'paced' (ahead of the clock: ``retry_at`` is
        set), 'blocked' (at the watermark) or 'done'."""
        return self._step_blocks(now) if self._blocks else self._step_frames(now)

    def _stage_next(self) -> bool:
        """Stage the next chunk's frames, after those still waiting (the framer keeps them in front
        of the new ones: no copy); False when the text is done."""
        self._framer.keep = self._b - self._a  # (the last frames of the framer's last block)
        block = next(self._frames, None)
        if block is None:
            self._exhausted = True
            return False
        assert isinstance(block, np.ndarray)  # (the block way's generator yields blocks)
        self._staged, self._a, self._b = block, 0, len(block)
        return True

    def _step_blocks(self, now: float) -> str:
        written = 0
        while written < STEP_FRAMES:
            # as the frame way: a frame to write (or done), then the pacing, then its successor
            while self._b == self._a and not self._exhausted and self._stage_next():
                pass
            if self._b == self._a:
                return "done"
            seq = self.last_seq + 1 if self.last_seq >= 0 else self.ring.write_seq
            due = STEP_FRAMES
            if self.spec.lead_frames:
                due = self.clock.allowed(seq, now, self._reader)
                if due == 0:
                    return self._paced(seq, now, self._left())
            while self._b - self._a < 2 and not self._exhausted and self._stage_next():
                pass
            # (a block is never empty: two frames wait here unless the text is done)
            ready = self._b - self._a
            k = min(ready if self._exhausted else ready - 1, STEP_FRAMES - written, due)
            ends = self._exhausted and self._a + k == self._b
            n = self.ring.offer_block(
                self._staged[self._a : self._a + k],
                utterance=self.job.utterance_id,
                first=FLAG_FIRST if self.frames == 0 else 0,
                last=FLAG_LAST if ends else 0,
                fmt=self.format,
            )
            if n:
                self._a += n
                self.audio_s += n * self._frame_level[1] / 1000
                if self.first_seq < 0:
                    self.first_seq = seq
                self.last_seq = seq + n - 1
                self.frames += n
                written += n
            if n < k:
                self.clock.restart()  # backpressure: the clock starts again from the reader
                return "blocked"
        return self._running_or_paced(now, self._b > self._a or not self._exhausted, self._left())

    def _step_frames(self, now: float) -> str:
        for _ in range(STEP_FRAMES):
            if self._pending is None:
                self._pending = self._pull()
                self._pending_bytes, self._pending_fmt = self._pulled_bytes, self._pulled_fmt
                self._pending_level = self._pulled_level
                if self._pending is None:
                    return "done"
            if self._pending_level != self._frame_level:  # a new level: its frames pace at their own length
                self._frame_level = self._pending_level
                seq = self.last_seq + 1 if self.last_seq >= 0 else self.ring.write_seq
                self.clock.retime(seq, self._frame_level[1] / 1000, self._lead_ms // self._frame_level[1])
                self._pace = self._pace_at(self._frame_level[1])
            if self.spec.lead_frames:
                seq = self.last_seq + 1 if self.last_seq >= 0 else self.ring.write_seq
                if self.clock.due(seq, now, self._reader) > now:
                    return self._paced(seq, now, self._pace)
            if self._next is None:
                self._next = self._pull()  # costs at most one synthesis chunk, once per chunk
                self._next_bytes, self._next_fmt, self._next_level = (
                    self._pulled_bytes,
                    self._pulled_fmt,
                    self._pulled_level,
                )
            flags = (FLAG_FIRST if self.frames == 0 else 0) | (FLAG_LAST if self._next is None else 0)
            seq = self.ring.offer(
                self._pending,
                utterance=self.job.utterance_id,
                flags=flags,
                fmt=self._pending_fmt,
                nbytes=self._pending_bytes,
            )
            if seq < 0:
                self.clock.restart()  # backpressure: the clock starts again from the reader
                return "blocked"
            self.audio_s += self._frame_level[1] / 1000
            self._pending, self._next = self._next, None
            self._pending_bytes, self._pending_fmt = self._next_bytes, self._next_fmt
            self._pending_level = self._next_level
            if self.first_seq < 0:
                self.first_seq = seq
            self.last_seq = seq
            self.frames += 1
        more = self._pending is not None and self._pending_level == self._frame_level
        return self._running_or_paced(now, more, self._pace)

    def _running_or_paced(self, now: float, more: bool, left: int) -> str:
        """After a step that wrote its STEP_FRAMES: 'paced' if there is ``more`` and the next frame
        is not due yet (so a look of that many frames costs one step, not a second one to learn
        that), else 'running'."""
        if more and self.spec.lead_frames:
            seq = self.last_seq + 1
            if self.clock.due(seq, now, self._reader) > now:
                return self._paced(seq, now, left)
        return "running"

    def _left(self) -> int:
        """The block way: the frames known to remain (once the text is done), else a look's."""
        return self._b - self._a if self._exhausted else self._pace

    def _paced(self, seq: int, now: float, left: int) -> str:
        """Frame ``seq`` is not due: look again when ``_pace`` frames may go at once, or the last of
        the ``left`` known to remain (an utterance's tail does not wait for frames it does not have)."""
        self.retry_at = self.clock.due(seq + min(self._pace, max(1, left)) - 1, now, self._reader)
        return "paced"

    def _pace_at(self, frame_ms: int) -> int:
        """Frames per look at a frame length (the lead and the prebuffer counted in those frames)."""
        return pace_frames(self._lead_ms // frame_ms, prebuffer_frames(self.spec.prebuffer_ms, frame_ms))

    def writing(self) -> int:
        """1 once a frame is written, 0 before (a job yet to start sorts first)."""
        return 1 if self.frames else 0

    def buffered(self) -> int:
        """Frames written and not yet read (how urgent this job is: fewer is more)."""
        if self.frames == 0:
            return -1
        try:
            return self.ring.fill
        except RingClosed:
            return 0

    def hold(self, now: float) -> None:
        """Held at the high watermark: look again when a real-time reader has drained about half
        of what stands between the fill and the low watermark (between BLOCKED_POLL and _MAX)."""
        period = self.spec.frame_samples / self.spec.output_sample_rate
        try:
            excess = self.ring.fill - self.ring.watermarks[1]
        except RingClosed:
            excess = 0
        self.retry_at = now + min(BLOCKED_POLL_MAX, max(BLOCKED_POLL, excess * period / 2))

    def close(self) -> None:
        self._frames.close()
        for enc in self._encoders.values():
            enc.close()

    def audio_seconds(self) -> float:
        return self.audio_s
