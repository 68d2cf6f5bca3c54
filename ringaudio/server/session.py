"""A session's state, and the server's shared state and per-session helpers.

:class:`ServerBase` holds what every part of the server reads (configuration-derived sizes, the
engine, metrics, sessions, the scheduler's heap); the parts — HTTP (:mod:`.http`), the send path
(:mod:`.send`), the scheduler (:mod:`.scheduler`) and connections and commands (:mod:`.app`) — build
on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from websockets.asyncio.server import ServerConnection

from .. import opus
from .. import wire as P
from ..collect import FullCollections
from ..config import Config
from ..engine import Engine
from ..errors import RingClosed
from ..schedule import Schedule
from ..stream import Source, Stream
from ..tts.spec import prebuffer_frames
from . import web
from .metrics import Metrics
from .pacing import Pacer, batch_slack
from .quality import Quality
from .relay import Relay

# (time, frames consumed) samples kept: 12 s at one per backlog refresh (a lane hands back its last 4 s)
CONSUMED_SAMPLES = 48
RTT_SAMPLES = 8


@dataclass(eq=False, slots=True)
class Session:
    id: str
    ws: ServerConnection
    source: Source | None  # what it reads: its own stream, or the stream it listens to
    pacer: Pacer
    frame: bytearray  # [WebSocket frame header][24-byte ringaudio header][PCM], built in place
    pcm: np.ndarray  # a view of the PCM part of ``frame``
    offset: int  # where the ringaudio header starts in ``frame``
    raw: bool  # may the frame go to the transport as is (no WebSocket extension negotiated)?
    key: str = ""
    sock: Any = None  # the TCP socket, for the kernel's view of what the client has not read
    slow: bool = False  # in a slow-client episode (over send_buffer_frames unconsumed within SLOW_CLEAR)
    slow_since: float = 0.0  # when it was last over
    kernel_backlog: int = 0  # bytes: the send queue + what the client's kernel holds unread (as last read)
    backlog_at: float = 0.0
    max_window: int = 0  # the largest receive window the client has advertised (since its last pong)
    probing: bool = False  # a ping is out to ask whether it has read everything
    high: bool = False  # between crossing the high watermark and coming back below the low one
    episodes: int = 0  # backpressure episodes: tts_frame_queue_full_count
    last_send: float = 0.0
    last_interval: float = 0.0
    sent_at: dict[int, float] = field(default_factory=dict)
    listening_to: Session | None = None
    listeners: set[Session] = field(default_factory=set)
    opened: float = 0.0  # monotonic
    active: bool = False  # has it ever sent synthesize or listen? (else the idle timeout applies)
    closing: bool = False
    underruns: int = 0  # the client's playout underruns, as its last ack said
    drops_counted: int = 0  # frames lost, as its reader's overrun events said
    drops_exported: int = 0  # frames lost, as tts_frames_dropped_total says (>= drops_counted)
    stream: Stream | None = None  # its own stream (None once it listens to another)
    # what /debug/sessions shows (and ringaudio.doctor reads)
    frames_sent: int = 0
    overruns: int = 0
    slow_episodes: int = 0
    slow_started: float = 0.0
    outq: int = 0  # the kernel's send queue, as last read (bytes)
    window: int | None = None  # the client's advertised receive window, as last read (bytes)
    consumed: deque[tuple[float, float]] = field(default_factory=lambda: deque(maxlen=CONSUMED_SAMPLES))
    client_buffer_ms: float | None = None  # as its last ack said
    acked_at: float = 0.0
    acks: int = 0
    rtts: deque[float] = field(default_factory=lambda: deque(maxlen=RTT_SAMPLES))  # ping to pong (s)
    ping_out: float = 0.0  # when the round-trip ping still unanswered went out (0: none is out)
    pinged_at: float = 0.0  # when the last round-trip ping went out
    paused_at: float = 0.0  # when the client paused (0: it has not)
    rtf: tuple[str, float] | None = None  # (model_id, real-time factor) of its last utterance synthesized
    # the wire format (see _reformat): what its frames are sent as, and what the client was told
    f32: bool = False  # the client asked for f32le: PCM frames are converted as they are sent
    ring_format: int = -1  # the format word of the last frame read (-1: none yet)
    send_mode: int = 0  # SEND_AS_IS, SEND_F32 or SEND_PACKET
    wire_format: tuple[int, int, str] | None = None  # (rate, frame µs, encoding) last announced
    format_reason: str = "requested"
    frame_bytes: int = 0  # bytes of one of its audio messages on the wire (a running mean for packets)
    send_limit: int = 0  # server.send_buffer_frames of those
    f32_frame: bytearray | None = None  # [WebSocket prefix][header][f32 PCM], built in place
    f32_pcm: np.ndarray | None = None
    f32_offset: int = 0
    quality: Quality | None = None  # adaptive quality (audio.adaptive_quality), owners only
    underruns_seen: int = 0  # the client's underruns when quality last looked
    underran_at: float = -1e9  # when they last went up
    over_at: float = -1e9  # when the pump last found it over its send limit
    relay: Relay | None = None  # a listen carried to a sibling process (see .relay)
    lane: int = -1  # its lane's slot while the kernel serves its steady state (see .lanes), else -1
    lane_entries: int = 0  # how often it went into a lane


class ServerBase:
    """The server's state (see the module); :class:`~ringaudio.server.app.App` is built on it."""

    def __init__(
        self,
        config: Config,
        *,
        host: str = "127.0.0.1",
        port: int = 8080,
        instance: str = "",
        siblings: tuple[str, ...] = (),
        family: str = "",
        own_process: bool = False,
    ) -> None:
        self.config = config
        self.host = host
        self.port = port
        # its session ids start with "<instance>-"; siblings: the other processes of one
        # --processes server (same port, SO_REUSEPORT; each also on its private socket)
        self.instance = instance
        self.siblings = siblings
        self.family = family  # the token in the siblings' private socket names (instances.private_address)
        self.token = os.environ.get("RINGAUDIO_TOKEN") or None
        # with a token, /metrics and /healthz (which list live session ids) need it too, unless public
        self.public_metrics = self.token is None or config.server.public_metrics
        self.metrics = Metrics()
        self.started = time.monotonic()
        self.web_files = web.load()  # the browser player, served on GET / and /static/
        self.engine = Engine(config)
        self.engine.id_prefix = f"{instance}-" if instance else ""
        self.engine.on_rtf = self._on_rtf
        self.sessions: dict[str, Session] = {}
        self.schedule: Schedule[Session] = Schedule()
        self.stopping = asyncio.Event()  # from here on: a signal that comes before run() is not lost
        self.frame_samples = config.frame_samples
        self.period = config.frame_duration_ms / 1000
        self.slack = batch_slack(0)  # how early a due session is served with the others (pacing.batch_slack)
        # a pass's frames, written together at its end (send._write_out); those of the session being
        # pumped (from _out_from on) go out first if anything else is sent to it meanwhile
        self._out: list[tuple[Any, bytes]] = []
        self._out_owner: Session | None = None
        self._out_from = 0
        self._steady: list[tuple[Session, float]] = []  # sessions whose pump this pass was all steady
        self.poll_interval = config.server.tick_ms / 1000  # how often a stream waiting for its worker is looked at
        self.prebuffer = prebuffer_frames(config.server.prebuffer_ms, config.frame_duration_ms)
        # own_process: the process is the server's (python -m ringaudio.server), its collector ours to
        # schedule (ringaudio.collect); an App embedded in someone else's process leaves theirs alone
        self.collections = FullCollections(enabled=own_process)
        self.payload_bytes = P.HEADER_SIZE + self.frame_samples * 2
        self.ws_prefix = P.ws_binary_prefix(self.payload_bytes)
        self.frame_bytes = len(self.ws_prefix) + self.payload_bytes
        self.send_limit = config.server.send_buffer_frames * self.frame_bytes
        # f32le: the same frame, twice the PCM bytes (the largest audio message there is)
        self.f32_payload_bytes = P.HEADER_SIZE + self.frame_samples * 4
        self.f32_prefix = P.ws_binary_prefix(self.f32_payload_bytes)
        self.f32_frame_bytes = len(self.f32_prefix) + self.f32_payload_bytes
        self.capacity = config.frame_queue_size
        self.high_frames = int(config.worker.high_watermark * config.frame_queue_size)
        self.low_frames = int(config.worker.low_watermark * config.frame_queue_size)
        # what a client may ask for ({"type": "format"}): Opus where libopus loads
        self.encodings = ["s16le", "f32le", *(["opus"] if opus.available() is None else [])]
        self.levels = [(q.sample_rate, q.frame_duration_ms) for q in config.quality_levels]
        base = (config.output_sample_rate, config.frame_duration_ms)
        self.base_level = self.levels.index(base) if config.adaptive_quality else -1
        self.debug_frames = False  # one "frame sent" line per frame (LOG_LEVEL=DEBUG), checked once
        # every outbound byte of a session counts; audio stops at send_limit (plus one burst), so
        # the budget is only ever reached by a client that does not read what it asks for
        burst = (self.prebuffer + 1) * self.f32_frame_bytes
        limit = config.server.send_buffer_frames * self.f32_frame_bytes
        self.send_budget = max(config.server.send_budget_kb * 1024, limit + burst)
        self.close_timeout = config.server.close_timeout_s
        self.idle_timeout = config.server.idle_timeout_s
        self.signals = 0
        self.exit_code = 0
        self._connections: set[ServerConnection] = set()  # every connection, handshakes included
        self._by_ws: dict[ServerConnection, Session] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._intervals = self.metrics.interval.pending.append  # per-frame observations, binned later
        self._jitters = self.metrics.jitter.pending.append

    def _on_rtf(self, stream_id: str, model_id: str, rtf: float) -> None:
        """On the pool's thread: one histogram observation (it locks) and one attribute store."""
        self.metrics.rtf.labels(model_id).observe(rtf)
        s = self.sessions.get(stream_id)
        if s is not None:
            s.rtf = (model_id, rtf)

    def depth(self, s: Session) -> int | None:
        """Frames between the worker and the client: the ring's fill, plus frames read from it and
        not yet handed to the kernel (None for a listener, or a stream that has ended)."""
        stream = s.stream
        if stream is None or stream.ended:
            return None
        transport = s.ws.transport
        buffered = transport.get_write_buffer_size() if transport is not None else 0
        try:
            return stream.ring.fill + buffered // (s.frame_bytes or self.frame_bytes)
        except RingClosed:
            return None

    def _export_drops(self, s: Session) -> None:
        """Count a session's lost frames as soon as they are lost, not when its reader finds out: the
        ring's own count (frames overwritten before the session read them) is looked at on every
        scrape, so a paused or stalled reader under drop_oldest shows its drops while it is stalled;
        the reader's exact reports can only add (the counter never goes back)."""
        seen = s.drops_counted
        if s.stream is not None and not s.stream.ended:
            with contextlib.suppress(RingClosed):
                seen = max(seen, s.stream.ring.dropped)
        if seen > s.drops_exported:
            self.metrics.dropped(s.id, seen - s.drops_exported)
            s.drops_exported = seen

    def _new_quality(self, now: float) -> Quality | None:
        if self.base_level < 0:
            return None
        down, up, hold = self.config.quality_times
        return Quality(len(self.levels), self.base_level, down, up, hold, now)

    async def _close(self, s: Session, code: int, reason: str) -> None:
        raise NotImplementedError  # connections (App) close sessions
