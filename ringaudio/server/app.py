"""The WebSocket server process: sessions, one pacing scheduler for all of them, worker events, HTTP.

Each connection is a session with a ring leased from one shared-memory arena. One ticker task
serves every session: it reads the frames due by sequence number (the ring's default, gating
reader, so the worker's watermark follows what was actually sent), writes them to the socket
without awaiting, and skips a client whose socket is not draining (under ``block`` the ring then
fills and the worker waits: nothing is lost; under ``drop_oldest`` the next read reports the gap).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import os
import secrets
import socket
import time
from collections import deque
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np
from websockets.asyncio.server import ServerConnection, broadcast, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from .. import __version__, logs
from ..config import Config
from ..errors import ArenaFull, FrameNotReady, FrameOverrun, RingAudioError, RingClosed, TextError
from ..ring import FrameRing, RingArena, RingReader, reclaim_stale
from ..tts import WorkerPool
from . import protocol as P
from .metrics import Metrics

log = logging.getLogger("ringaudio.server")
SEND_BUFFER_BYTES = 32 * 1024  # the kernel doubles it


@dataclass
class Utterance:
    utterance_id: int
    request_id: str | None
    submitted: float  # monotonic, for first-audio latency
    first_seq: int | None = None
    last_seq: int | None = None
    sent_first: bool = False


@dataclass
class Session:
    id: str
    key: str
    ws: ServerConnection
    ring: FrameRing | None
    pacer: P.Pacer
    frame: bytearray
    pcm: np.ndarray
    cursor: int = 0  # next sequence to send
    last_sent: int | None = None  # sequence of the last frame that went out
    paused: bool = False
    cancelling: bool = False
    slow: bool = False
    utterances: deque[Utterance] = field(default_factory=deque)
    last_send: float = 0.0
    last_interval: float = 0.0
    sent_at: dict[int, float] = field(default_factory=dict)
    listening_to: Session | None = None
    reader: RingReader | None = None
    listeners: set[Session] = field(default_factory=set)

    def __hash__(self) -> int:
        return id(self)


class App:
    def __init__(self, config: Config, *, host: str = "127.0.0.1", port: int = 8080) -> None:
        self.config = config
        self.host = host
        self.port = port
        self.token = os.environ.get("RINGAUDIO_TOKEN") or None
        self.metrics = Metrics()
        self.sessions: dict[str, Session] = {}
        self.arena: RingArena | None = None
        self.pool: WorkerPool | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.stopping: asyncio.Event | None = None
        self.frame_samples = config.frame_samples
        self.period = config.frame_duration_ms / 1000
        self.prebuffer = max(1, config.server.prebuffer_ms // config.frame_duration_ms)
        self.frame_bytes = P.HEADER_SIZE + self.frame_samples * 2
        self.send_limit = config.server.send_buffer_frames * self.frame_bytes
        self.signals = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()

    # -- life cycle ---------------------------------------------------------------------------------
    async def run(self, ready: asyncio.Future[tuple[str, int]] | None = None) -> None:
        self.loop = asyncio.get_running_loop()
        self.stopping = asyncio.Event()
        reclaimed = reclaim_stale()
        if reclaimed:
            logs.event(log, logging.WARNING, "reclaimed stale shared memory", None, segments=reclaimed)
        cfg = self.config
        self.arena = RingArena.create(
            rings=cfg.server.max_sessions,
            capacity=cfg.frame_queue_size,
            frame_samples=self.frame_samples,
            overflow=cfg.worker.overflow,
            high_watermark=cfg.worker.high_watermark,
            low_watermark=cfg.worker.low_watermark,
        )
        try:
            self.pool = WorkerPool(cfg, self._from_pool)
            logs.event(log, logging.INFO, "tts backend", None, backend=self.pool.backend, workers=self.pool.size)
            await self.loop.run_in_executor(None, self.pool.start)
            origins: list[Any] | None = [*cfg.server.allowed_origins, None] if cfg.server.allowed_origins else None
            async with serve(
                self._handler,
                self.host,
                self.port,
                process_request=self._process_request,
                compression="deflate" if cfg.compress else None,
                max_size=cfg.server.max_message_bytes,
                origins=origins,
                ping_interval=None,  # a deliberately slow but healthy client is not closed for it
                close_timeout=2,  # shutdown is bounded even with clients that never close their side
                server_header=f"ringaudio/{__version__}",
                logger=logging.getLogger("ringaudio.websockets"),
            ) as server:
                sock = next(iter(server.sockets))
                host, port = sock.getsockname()[:2]
                logs.event(log, logging.INFO, "server listening", None, host=host, port=port, version=__version__)
                if ready is not None and not ready.done():
                    ready.set_result((host, port))
                ticker = asyncio.create_task(self._ticker())
                await self.stopping.wait()
                logs.event(log, logging.INFO, "server stopping", None, sessions=len(self.sessions))
                server.close(close_connections=False)
                await asyncio.gather(
                    *(self._close(s, 1001, "server shutting down") for s in list(self.sessions.values()))
                )
                ticker.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await ticker
        finally:
            if self.pool is not None:
                await self.loop.run_in_executor(None, self.pool.stop, 3.0)
            self.arena.unlink()
            self.arena.close()
            logs.event(log, logging.INFO, "server stopped", None)

    def request_stop(self) -> None:
        self.signals += 1
        if self.signals > 1:  # a second signal: no more courtesy
            logs.event(log, logging.WARNING, "forced stop", None)
            if self.pool is not None:
                self.pool.stop(0.2)
            if self.arena is not None:
                self.arena.unlink()
            os._exit(1)
        if self.stopping is not None:
            self.stopping.set()

    # -- HTTP and handshake -------------------------------------------------------------------------
    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        path = urlsplit(request.path).path
        if path == "/healthz":
            return self._json_response(HTTPStatus.OK, self.health())
        if path == "/metrics":
            body, content_type = self.metrics.exposition(self._session_gauges())
            return Response(200, "OK", Headers([("Content-Type", content_type)]), body)
        if path != "/ws":
            return self._json_response(HTTPStatus.NOT_FOUND, {"error": "not_found", "message": "use /ws"})
        if self.token is not None:
            given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
            query = parse_qs(urlsplit(request.path).query).get("token", [""])[0]
            if not (hmac.compare_digest(given, self.token) or hmac.compare_digest(query, self.token)):
                return self._json_response(HTTPStatus.UNAUTHORIZED, {"error": "unauthorized", "message": "bad token"})
        return None

    @staticmethod
    def _json_response(status: HTTPStatus, body: dict[str, Any]) -> Response:
        data = json.dumps(body).encode()
        headers = Headers([("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
        return Response(status.value, status.phrase, headers, data)

    def health(self) -> dict[str, Any]:
        pool, arena = self.pool, self.arena
        return {
            "status": "ok" if pool is not None and pool.alive() == pool.size else "degraded",
            "version": __version__,
            "workers": {"alive": pool.alive() if pool else 0, "size": pool.size if pool else 0},
            "backend": pool.backend if pool else None,
            "sessions": len(self.sessions),
            "arena": {"rings": arena.n_rings if arena else 0, "leased": arena.leased if arena else 0},
        }

    def _session_gauges(self) -> dict[str, tuple[int, int]]:
        return {
            sid: (s.ring.fill, s.ring.full_count)
            for sid, s in self.sessions.items()
            if s.ring is not None and not s.ring.closed
        }

    # -- connections --------------------------------------------------------------------------------
    async def _handler(self, ws: ServerConnection) -> None:
        assert self.arena is not None
        try:
            ring = self.arena.lease()
        except ArenaFull:
            await ws.send(P.event("error", code="too_many_sessions", message="the server is at max_sessions"))
            await ws.close(1013, "too many sessions")
            return
        sock = ws.transport.get_extra_info("socket") if ws.transport is not None else None
        if sock is not None:
            # a small kernel send buffer (~330 ms of 48 kHz audio) makes a client that stops
            # draining visible to the scheduler quickly, instead of megabytes later
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER_BYTES)
        sid = secrets.token_hex(8)
        frame = bytearray(self.frame_bytes)
        s = Session(
            id=sid,
            key=secrets.token_urlsafe(16),
            ws=ws,
            ring=ring,
            pacer=P.Pacer(self.period, self.prebuffer, time.monotonic()),
            frame=frame,
            pcm=np.frombuffer(frame, np.int16, offset=P.HEADER_SIZE),
        )
        self.sessions[sid] = s
        self.metrics.sessions.set(len(self.sessions))
        logs.event(log, logging.INFO, "session opened", sid, remote=str(ws.remote_address))
        try:
            await ws.send(
                P.event(
                    "session",
                    session_id=sid,
                    listen_key=s.key,
                    sample_rate=self.config.output_sample_rate,
                    channels=1,
                    format="s16le",
                    frame_samples=self.frame_samples,
                    frame_ms=self.config.frame_duration_ms,
                    protocol=P.PROTOCOL,
                )
            )
            async for message in ws:
                if isinstance(message, bytes):
                    self._error(s, "binary_not_supported", "the server takes text (JSON) messages only")
                    continue
                try:
                    self._command(s, P.parse(message))
                except P.ProtocolError as exc:
                    self._error(s, exc.code, exc.message)
        except ConnectionClosed:
            pass
        finally:
            await self._close(s, 1000, "bye")

    async def _close(self, s: Session, code: int, reason: str) -> None:
        if self.sessions.pop(s.id, None) is None:
            return
        if self.pool is not None:
            self.pool.cancel(s.id)
        for listener in list(s.listeners):
            self._send_text(listener, P.event("error", code="session_ended", message="the stream ended"))
            await self._close(listener, 1000, "stream ended")
        if s.listening_to is not None:
            s.listening_to.listeners.discard(s)
        if s.ring is not None:
            s.ring.close()  # the lease goes back to the arena
        self.metrics.forget(s.id)
        self.metrics.sessions.set(len(self.sessions))
        logs.event(log, logging.INFO, "session closed", s.id, code=code)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(s.ws.close(code, reason), 2.0)

    def _send_text(self, s: Session, text: str) -> None:
        broadcast([s.ws], text)

    def _error(self, s: Session, code: str, message: str, **fields: Any) -> None:
        self._send_text(s, P.event("error", code=code, message=message, **fields))

    # -- commands -----------------------------------------------------------------------------------
    def _command(self, s: Session, cmd: P.Command) -> None:
        if isinstance(cmd, P.Synthesize):
            self._synthesize(s, cmd)
        elif isinstance(cmd, P.Control):
            if cmd.action == "pause":
                if s.paused:
                    self._error(s, "already_paused", "the stream is already paused")
                    return
                s.paused = True
                self._send_text(s, P.event("paused", sequence=s.cursor))
            else:
                if not s.paused:
                    self._error(s, "not_paused", "resume without pause")
                    return
                s.paused = False
                self._send_text(s, P.event("resumed", sequence=s.cursor))
        elif isinstance(cmd, P.Cancel):
            self._cancel(s)
        elif isinstance(cmd, P.Ack):
            sent = s.sent_at.get(cmd.sequence)
            if sent is not None:
                self.metrics.end_to_end.observe((time.monotonic() - sent) * 1000 + (cmd.buffered_ms or 0.0))
        elif isinstance(cmd, P.Listen):
            self._listen(s, cmd)

    def _synthesize(self, s: Session, cmd: P.Synthesize) -> None:
        if s.listening_to is not None or s.ring is None:
            self._error(s, "listener", "a listening connection cannot synthesize")
            return
        assert self.pool is not None
        if self.pool.pending(s.id) >= self.config.server.max_queued_utterances:
            self._error(s, "queue_full", "too many utterances queued", request_id=cmd.request_id)
            return
        try:
            uid = self.pool.submit(s.id, s.ring.handle, cmd.text, voice=cmd.voice, request_id=cmd.request_id)
        except TextError as exc:
            code = "text_too_long" if "limit" in str(exc) else "invalid_text"
            self._error(s, code, str(exc), request_id=cmd.request_id)
            return
        except RingAudioError as exc:
            self._error(s, "unavailable", str(exc), request_id=cmd.request_id)
            return
        s.utterances.append(Utterance(uid, cmd.request_id, time.monotonic()))
        self._wake.set()
        self._send_text(s, P.event("queued", utterance_id=uid, request_id=cmd.request_id))

    def _cancel(self, s: Session) -> None:
        if s.ring is None:
            self._error(s, "listener", "a listening connection has nothing to cancel")
            return
        s.cancelling = True  # nothing more leaves until the worker has answered
        assert self.pool is not None
        self.pool.cancel(s.id)

    def _listen(self, s: Session, cmd: P.Listen) -> None:
        owner = self.sessions.get(cmd.session_id)
        if owner is None or owner.ring is None or not hmac.compare_digest(owner.key, cmd.key):
            self._error(s, "listen_refused", "no such stream, or a wrong key")
            return
        if s.ring is not None:
            s.ring.close()  # a listener needs no ring of its own
            s.ring = None
        s.listening_to = owner
        s.reader = owner.ring.reader(gating=False, start=owner.cursor)
        s.pacer = P.Pacer(self.period, self.prebuffer, time.monotonic())
        owner.listeners.add(s)
        self._wake.set()
        self._send_text(s, P.event("listening", session_id=owner.id, sequence=owner.cursor))

    # -- worker events (from the pool's thread) ------------------------------------------------------
    def _from_pool(self, ev: dict[str, Any]) -> None:
        if self.loop is not None:
            self.loop.call_soon_threadsafe(self._on_worker_event, ev)

    def _find(self, s: Session, uid: int | None) -> Utterance | None:
        return next((u for u in s.utterances if u.utterance_id == uid), None)

    def _on_worker_event(self, ev: dict[str, Any]) -> None:
        self._wake.set()
        s = self.sessions.get(ev.get("session_id", ""))
        if s is None:
            return
        kind = ev["type"]
        u = self._find(s, ev.get("utterance_id"))
        if kind == "started" and u is not None:
            logs.event(
                log,
                logging.INFO,
                "utterance started",
                s.id,
                utterance_id=u.utterance_id,
                queue_wait_ms=round((time.monotonic() - u.submitted) * 1000, 2),
            )
            self._send_text(s, P.event("utterance.start", utterance_id=u.utterance_id, request_id=u.request_id))
        elif kind == "first_frame" and u is not None:
            u.first_seq = ev["sequence"]
        elif kind == "finished" and u is not None:
            u.last_seq = ev["last_sequence"]
            u.first_seq = ev["first_sequence"] if u.first_seq is None else u.first_seq
            self.metrics.rtf.labels(ev.get("model_id", "")).observe(ev.get("rtf", 0.0))
            logs.event(
                log,
                logging.INFO,
                "utterance finished",
                s.id,
                rtf=ev.get("rtf"),
                model_id=ev.get("model_id"),
                synthesis_duration_ms=ev.get("synthesis_duration_ms"),
                frames=ev.get("frames"),
            )
            self._end_due(s)
        elif kind == "failed":
            if u is not None:
                s.utterances.remove(u)
            self._error(
                s, ev.get("code", "synthesis_failed"), ev.get("message", ""), utterance_id=ev.get("utterance_id")
            )
        elif kind == "cancelled":
            last = ev.get("last_sequence")
            if s.ring is not None:
                # discard every frame not sent yet: the cursor jumps past what the worker wrote,
                # and the ring is told, so the next utterance's writer is not held by them
                s.cursor = max(s.cursor, s.ring.write_seq if last is None else last + 1)
                s.ring.skip_to(s.cursor)
            s.utterances.clear()
            s.cancelling = False
            self._send_text(s, P.event("cancelled", last_sequence=s.last_sent))

    def _end_due(self, s: Session) -> None:
        """Send utterance.end for utterances whose last frame has been sent."""
        while s.utterances and s.utterances[0].last_seq is not None and s.cursor > s.utterances[0].last_seq:
            u = s.utterances.popleft()
            frames = u.last_seq - (u.first_seq or 0) + 1 if u.last_seq is not None else 0
            self._send_text(
                s,
                P.event(
                    "utterance.end",
                    utterance_id=u.utterance_id,
                    request_id=u.request_id,
                    frames=frames,
                    duration_ms=frames * self.config.frame_duration_ms,
                    last_sequence=u.last_seq,
                ),
            )

    # -- the scheduler --------------------------------------------------------------------------------
    def _busy(self) -> bool:
        """Is any session speaking or listening? (Otherwise the scheduler sleeps until one is.)"""
        return any(s.utterances or s.listening_to is not None or s.cancelling for s in self.sessions.values())

    async def _ticker(self) -> None:
        tick = self.config.server.tick_ms / 1000
        assert self.stopping is not None
        while not self.stopping.is_set():
            if not self._busy():
                self._wake.clear()
                # idle: no 5 ms wake-ups. (asyncio.timeout, not wait_for: on Python 3.11 wait_for can
                # swallow the cancellation that stops this task, which hung shutdown now and then.)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(1.0):
                        await self._wake.wait()
                continue
            now = time.monotonic()
            for s in list(self.sessions.values()):
                try:
                    self._pump(s, now)
                except RingClosed:
                    continue
                except Exception:  # one broken session must not stop the scheduler of all the others
                    log.exception("session failed", extra={"session_id": s.id})
                    self._error(s, "internal_error", "the server could not send this stream")
                    task = asyncio.create_task(self._close(s, 1011, "internal error"))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
            await asyncio.sleep(max(0.0, tick - (time.monotonic() - now)))

    def _pump(self, s: Session, now: float) -> None:
        if s.paused or s.cancelling:
            return
        transport = s.ws.transport
        if transport is None or transport.is_closing():
            return
        if transport.get_write_buffer_size() > self.send_limit:
            if not s.slow:
                s.slow = True
                logs.event(log, logging.ERROR, "Client not consuming frames fast enough", s.id, sequence=s.cursor)
            return
        s.slow = False
        allowance = s.pacer.allowance(now)
        sent = 0
        while sent < allowance:
            if not self._send_one(s, now):
                break
            sent += 1
        if sent:
            s.pacer.spend(sent)  # (queue depth is read from the rings when Prometheus scrapes)
            self._end_due(s)

    def _send_one(self, s: Session, now: float) -> bool:
        seq = s.cursor
        try:
            if s.reader is not None:  # a listener: its own cursor, never holds the writer
                seq = s.reader.position
                s.reader.read(s.pcm)
            elif s.ring is not None:
                if seq >= s.ring.write_seq:
                    return False  # nothing new: cheaper than a FrameNotReady per idle session and tick
                s.ring.read(seq, s.pcm)
            else:
                return False
        except FrameNotReady:
            return False
        except FrameOverrun as gap:
            self._gap(s, gap)
            return True
        s.cursor = seq + 1
        s.last_sent = seq
        uid, flags = self._label(s, seq, now)
        P.pack_into(s.frame, seq, int(time.time() * 1e6), uid, flags)
        broadcast([s.ws], s.frame)
        if s.last_send:
            interval = (now - s.last_send) * 1000
            self.metrics.interval.observe(interval)
            if s.last_interval:
                self.metrics.jitter.observe(abs(interval - s.last_interval))
            s.last_interval = interval
        s.last_send = now
        if len(s.sent_at) > 512:
            s.sent_at.clear()
        s.sent_at[seq] = now
        if log.isEnabledFor(logging.DEBUG):
            logs.event(log, logging.DEBUG, "frame sent", s.id, sequence=seq)
        return True

    def _label(self, s: Session, seq: int, now: float) -> tuple[int, int]:
        for u in s.utterances:
            if u.last_seq is not None and seq > u.last_seq:
                continue
            flags = 0
            if not u.sent_first:
                u.sent_first = True
                flags |= P.FLAG_FIRST
                self.metrics.first_audio.observe((now - u.submitted) * 1000)
            if u.last_seq == seq:
                flags |= P.FLAG_LAST
            return u.utterance_id, flags
        return 0, 0

    def _gap(self, s: Session, gap: FrameOverrun) -> None:
        if s.reader is None:
            s.cursor = gap.oldest
            if s.ring is not None:
                s.ring.skip_to(gap.oldest)
        logs.event(
            log, logging.WARNING, "Frame sequence gap detected", s.id, expected=gap.expected, received=gap.oldest
        )
        if s.ring is not None:
            logs.event(log, logging.WARNING, "Frame queue full, dropping frames", s.id, queue_size=s.ring.capacity)
        self.metrics.dropped(s.id, gap.lost)
        self._send_text(s, P.event("overrun", expected=gap.expected, received=gap.oldest, lost=gap.lost))
