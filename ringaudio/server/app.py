"""The WebSocket server process: sessions on top of the engine, one pacing scheduler for all of them.

The server is one consumer of :class:`~ringaudio.engine.Engine`: each connection is a session with
an engine stream (and its ring lease), or a listener of another session's stream. One scheduler task
serves every session: a heap of due times says which sessions may send now (a burst up to
``prebuffer_ms``, then one frame per period), it reads their frames by sequence number (through the
ring's gating reader, so the worker's watermark follows what was actually sent), builds each
WebSocket message in place and writes it to the socket without awaiting, and skips a client whose
socket is not draining (under ``block`` the ring then fills and the worker waits: nothing is lost;
under ``drop_oldest`` the next read reports the gap). Worker events wake it from the pool's thread.

Nothing a client does can make the server hold memory without bound or hang: every outbound byte of
a session (audio, events, the library's pongs) counts against one send budget
(``server.send_budget_kb``), and a client over it is closed (1008); a closing handshake that does
not finish within ``server.close_timeout_s`` is cut off (the transport is aborted), so shutdown is
bounded whatever the clients do; every connection counts against ``server.max_sessions``, and one
that neither speaks nor listens within ``server.idle_timeout_s`` is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import os
import socket
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

import numpy as np
from websockets.asyncio.server import ServerConnection, broadcast, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.protocol import State

from .. import __version__, logs
from .. import wire as P
from ..config import Config
from ..engine import Engine, EngineError
from ..errors import ArenaFull, RingAudioError, RingClosed, TextError
from ..stream import Event, Listener, Stream, StreamError
from . import access, backlog
from .metrics import Metrics
from .pacing import Pacer
from .schedule import Schedule

log = logging.getLogger("ringaudio.server")
SEND_BUFFER_BYTES = 32 * 1024  # the kernel doubles it
SLACK = 0.001  # sessions due within this much are served in the same pass (s)
BACKLOG_REFRESH = 0.25  # how often a session's kernel-side backlog (TCP_INFO, SIOCOUTQ) is read (s)
WATCH_EVERY = 0.2  # how often queue depths are compared with the watermarks (s)
SLOW_CLEAR = 5.0  # a slow-client episode ends when the client has kept up this long (s)
PING_TIMEOUT = 1.0  # how long a held-back client may take to answer "have you read it all?" (s)
OPEN = State.OPEN
_pack = P.HEADER.pack_into


@dataclass(eq=False, slots=True)
class Session:
    id: str
    ws: ServerConnection
    source: Stream | Listener | None
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

    @property
    def stream(self) -> Stream | None:
        return self.source if isinstance(self.source, Stream) else None


class App:
    def __init__(self, config: Config, *, host: str = "127.0.0.1", port: int = 8080) -> None:
        self.config = config
        self.host = host
        self.port = port
        self.token = os.environ.get("RINGAUDIO_TOKEN") or None
        # with a token, /metrics and /healthz (which list live session ids) need it too, unless public
        self.public_metrics = self.token is None or config.server.public_metrics
        self.metrics = Metrics()
        self.engine = Engine(config)
        self.engine.on_rtf = lambda model, rtf: self.metrics.rtf.labels(model).observe(rtf)
        self.sessions: dict[str, Session] = {}
        self.schedule: Schedule[Session] = Schedule()
        self.stopping = asyncio.Event()  # from here on: a signal that comes before run() is not lost
        self.frame_samples = config.frame_samples
        self.period = config.frame_duration_ms / 1000
        self.poll_interval = config.server.tick_ms / 1000  # how often a stream waiting for its worker is looked at
        self.prebuffer = max(1, config.server.prebuffer_ms // config.frame_duration_ms)
        self.payload_bytes = P.HEADER_SIZE + self.frame_samples * 2
        self.ws_prefix = P.ws_binary_prefix(self.payload_bytes)
        self.frame_bytes = len(self.ws_prefix) + self.payload_bytes
        self.send_limit = config.server.send_buffer_frames * self.frame_bytes
        self.capacity = config.frame_queue_size
        self.high_frames = int(config.worker.high_watermark * config.frame_queue_size)
        self.low_frames = int(config.worker.low_watermark * config.frame_queue_size)
        self.debug_frames = False  # one "frame sent" line per frame (LOG_LEVEL=DEBUG), checked once
        # every outbound byte of a session counts; audio stops at send_limit (plus one burst), so
        # the budget is only ever reached by a client that does not read what it asks for
        burst = (self.prebuffer + 1) * self.frame_bytes
        self.send_budget = max(config.server.send_budget_kb * 1024, self.send_limit + burst)
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

    # -- life cycle ---------------------------------------------------------------------------------
    async def run(self, ready: asyncio.Future[tuple[str, int]] | None = None) -> None:
        loop = asyncio.get_running_loop()
        cfg = self.config

        def notify() -> None:  # on the pool's thread
            loop.call_soon_threadsafe(self._wake.set)

        self.engine.notify = notify
        self.debug_frames = log.isEnabledFor(logging.DEBUG)
        try:
            if not await self._start_engine():
                return
            origins: list[Any] | None = [*cfg.server.allowed_origins, None] if cfg.server.allowed_origins else None
            server = await serve(
                self._handler,
                self.host,
                self.port,
                process_request=self._process_request,
                compression="deflate" if cfg.compress else None,
                max_size=cfg.server.max_message_bytes,
                origins=origins,
                ping_interval=None,  # a deliberately slow but healthy client is not closed for it
                close_timeout=self.close_timeout,
                open_timeout=10,
                server_header=f"ringaudio/{__version__}",
                logger=logging.getLogger("ringaudio.websockets"),
                create_connection=self._connection_class(),
            )
            ticker: asyncio.Task[None] | None = None
            try:
                sock = next(iter(server.sockets))
                host, port = sock.getsockname()[:2]
                logs.event(log, logging.INFO, "server listening", None, host=host, port=port, version=__version__)
                if ready is not None and not ready.done():
                    ready.set_result((host, port))
                ticker = asyncio.create_task(self._ticker())
                await self.stopping.wait()
                logs.event(log, logging.INFO, "server stopping", None, sessions=len(self.sessions))
            finally:
                server.close(close_connections=False)  # no new connections
                await asyncio.gather(
                    *(self._close(s, 1001, "server shutting down") for s in list(self.sessions.values()))
                )
                for connection in list(self._connections):  # handshakes, and anything still open: cut off
                    if connection.transport is not None:
                        connection.transport.abort()
                if ticker is not None:
                    ticker.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await ticker
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.close_timeout):
                        await server.wait_closed()
        finally:
            await loop.run_in_executor(None, self.engine.close)
            logs.event(log, logging.INFO, "server stopped", None)

    async def _start_engine(self) -> bool:
        """Start the engine (workers warm up in a thread) unless a stop is asked for meanwhile:
        a SIGTERM during start-up is honoured at once. Returns whether the engine is running."""
        loop = asyncio.get_running_loop()
        starting: asyncio.Future[Any] = loop.run_in_executor(None, self.engine.start)
        stop: asyncio.Future[Any] = asyncio.ensure_future(self.stopping.wait())
        try:
            await asyncio.wait([starting, stop], return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
        if starting.done():
            starting.result()  # a start-up failure is raised here
            return True
        logs.event(log, logging.INFO, "stopped during start-up", None)
        self.engine.abort()
        with contextlib.suppress(EngineError):
            await starting
        return False

    def _connection_class(self) -> type[ServerConnection]:
        """Connections that the app can see from the first byte: every one is tracked (shutdown cuts
        off those still open, handshakes included), and what the library writes on its own
        (pongs) counts against the session's send budget too."""
        app = self

        class Connection(ServerConnection):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                super().connection_made(transport)
                app._connections.add(self)

            def connection_lost(self, exc: Exception | None) -> None:
                app._connections.discard(self)
                super().connection_lost(exc)

            def data_received(self, data: bytes) -> None:
                super().data_received(data)
                if self.transport.get_write_buffer_size() > app.send_budget:
                    app._over_budget(self)

        return Connection

    def request_stop(self) -> None:
        self.signals += 1
        if self.signals > 1:  # a second signal: no more courtesy
            logs.event(log, logging.WARNING, "forced stop", None)
            pool, arena = self.engine.pool, self.engine.arena
            if pool is not None:
                pool.stop(0.2)
            if arena is not None:
                arena.unlink()
            os._exit(1)
        self.stopping.set()

    # -- HTTP and handshake -------------------------------------------------------------------------
    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        if not access.allowed_method(request):
            return access.method_not_allowed()
        path, _ = access.split_target(request.path)
        if path in ("/healthz", "/metrics") and self.public_metrics:
            return self._observe(path)
        if path not in ("/ws", "/", "/healthz", "/metrics"):
            return self._json_response(HTTPStatus.NOT_FOUND, {"error": "not_found", "message": "use /ws"})
        if self.token is not None and not access.token_ok(self.token, request.headers, request.path):
            response = self._json_response(HTTPStatus.UNAUTHORIZED, {"error": "unauthorized", "message": "bad token"})
            response.headers["WWW-Authenticate"] = access.CHALLENGE
            return response
        return self._observe(path) if path not in ("/ws", "/") else None

    def _observe(self, path: str) -> Response:
        if path == "/healthz":
            return self._json_response(HTTPStatus.OK, self.health())
        body, content_type = self.metrics.exposition(self._session_gauges())
        return Response(200, "OK", Headers([("Content-Type", content_type)]), body)

    @staticmethod
    def _json_response(status: HTTPStatus, body: dict[str, Any]) -> Response:
        data = json.dumps(body).encode()
        headers = Headers([("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
        return Response(status.value, status.phrase, headers, data)

    def health(self) -> dict[str, Any]:
        h = self.engine.health()
        return {
            "status": h["status"],
            "version": __version__,
            "workers": h["workers"],
            "backend": h["backend"],
            "sessions": len(self.sessions),
            "arena": h["arena"],
        }

    def depth(self, s: Session) -> int | None:
        """Frames between the worker and the client: the ring's fill, plus frames read from it and
        not yet handed to the kernel (None for a listener, or a stream that has ended)."""
        stream = s.stream
        if stream is None or stream.ended:
            return None
        transport = s.ws.transport
        buffered = transport.get_write_buffer_size() if transport is not None else 0
        try:
            return stream.ring.fill + buffered // self.frame_bytes
        except RingClosed:
            return None

    def _session_gauges(self) -> dict[str, tuple[int, int]]:
        gauges = {}
        for sid, s in self.sessions.items():
            depth = self.depth(s)
            if depth is not None:
                gauges[sid] = (depth, s.episodes)
        return gauges

    def _watch(self) -> None:
        """Backpressure episodes: a session's depth crossing its high watermark starts one (counted,
        logged with the real depth), coming back below the low one ends it (logged)."""
        for s in self.sessions.values():
            depth = self.depth(s)
            if depth is None:
                continue
            if not s.high and depth >= self.high_frames:
                s.high = True
                s.episodes += 1
                logs.event(
                    log, logging.WARNING, "Frame queue depth", s.id, queue_size=depth, capacity=self.capacity, high=True
                )
            elif s.high and depth <= self.low_frames:
                s.high = False
                logs.event(
                    log, logging.INFO, "Frame queue depth", s.id, queue_size=depth, capacity=self.capacity, high=False
                )

    # -- connections --------------------------------------------------------------------------------
    async def _handler(self, ws: ServerConnection) -> None:
        try:
            if len(self.sessions) >= self.config.server.max_sessions:  # listeners count too
                raise ArenaFull("max_sessions")
            stream = self.engine.open_stream()
        except ArenaFull:
            logs.event(
                log, logging.WARNING, "session refused", None, reason="max_sessions", sessions=len(self.sessions)
            )
            self._send_text_ws(ws, P.event("error", code="too_many_sessions", message="the server is at max_sessions"))
            await self._close_ws(ws, 1013, "too many sessions")
            return
        sock = ws.transport.get_extra_info("socket") if ws.transport is not None else None
        if sock is not None:
            # a small kernel send buffer (~330 ms of 48 kHz audio) makes a client that stops
            # draining visible to the scheduler quickly, instead of megabytes later
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER_BYTES)
        frame = bytearray(self.ws_prefix) + bytearray(self.payload_bytes)
        offset = len(self.ws_prefix)
        s = Session(
            id=stream.id,
            ws=ws,
            source=stream,
            pacer=Pacer(self.period, self.prebuffer, time.monotonic()),
            frame=frame,
            pcm=np.frombuffer(frame, np.int16, offset=offset + P.HEADER_SIZE),
            offset=offset,
            raw=not ws.protocol.extensions,
            key=stream.key,
            sock=sock,
            opened=time.monotonic(),
        )
        self.sessions[s.id] = s
        self._by_ws[ws] = s
        self.metrics.sessions.set(len(self.sessions))
        logs.event(log, logging.INFO, "session opened", s.id, remote=str(ws.remote_address))
        try:
            self._send_text(
                s,
                P.event(
                    "session",
                    session_id=s.id,
                    listen_key=s.key,
                    sample_rate=self.config.output_sample_rate,
                    channels=1,
                    format="s16le",
                    frame_samples=self.frame_samples,
                    frame_ms=self.config.frame_duration_ms,
                    protocol=P.PROTOCOL,
                ),
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
        s.closing = True
        self._by_ws.pop(s.ws, None)
        self.schedule.discard(s)
        rcvd = s.ws.protocol.close_rcvd
        if rcvd is not None:  # the client closed (or answered our close): its code is the real one
            code, reason = rcvd.code, rcvd.reason
        elif s.ws.protocol.state is State.CLOSED:  # the connection dropped without a closing handshake
            code, reason = 1006, "connection lost"
        if s.listening_to is not None:
            s.listening_to.listeners.discard(s)
        if s.source is not None:
            s.source.close()  # a stream's worker stops and its lease goes back to the arena
        self.metrics.forget(s.id)
        self.metrics.sessions.set(len(self.sessions))
        logs.event(log, logging.INFO, "session closed", s.id, code=code, reason=reason)
        listeners = list(s.listeners)
        for listener in listeners:
            self._send_text(listener, P.event("error", code="session_ended", message="the stream ended"))
        await asyncio.gather(
            self._close_ws(s.ws, code, reason), *(self._close(listener, 1000, "stream ended") for listener in listeners)
        )

    async def _close_ws(self, ws: ServerConnection, code: int, reason: str) -> None:
        """The closing handshake, bounded: a client that does not answer (or read) is cut off."""
        try:
            async with asyncio.timeout(self.close_timeout):
                await ws.close(code, reason)
        except TimeoutError:
            pass
        except Exception:  # the connection is already gone
            pass
        if ws.transport is not None and ws.protocol.state is not State.CLOSED:
            ws.transport.abort()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _close_soon(self, s: Session, code: int, reason: str) -> None:
        self._spawn(self._close(s, code, reason))

    async def _ping(self, s: Session) -> None:
        """Has the client read everything it was sent? A pong says so: the client answers a ping
        only once it has read what came before it. Its window then is what it can hold (the
        baseline of :func:`backlog.unconsumed`: a buffer can shrink, e.g. SO_RCVBUF set after
        connect, and a window the client advertised once is no proof it still can)."""
        s.probing = True
        try:
            pong = await s.ws.ping()
            async with asyncio.timeout(PING_TIMEOUT):
                await pong
            if s.sock is not None:
                probe = backlog.probe(s.sock)
                if probe.window is not None:
                    s.max_window = probe.window
                s.backlog_at = 0.0  # look again at the next pump
        except (TimeoutError, ConnectionClosed, RuntimeError):
            pass  # not read (yet): it stays held back
        finally:
            s.probing = False

    def _over_budget(self, ws: ServerConnection) -> None:
        """A client with more than the send budget unread: closed, never buffered without end."""
        s = self._by_ws.get(ws)
        if s is None:
            if ws.transport is not None:
                ws.transport.abort()  # not a session (yet): nothing to tell it
            return
        if s.closing:
            return
        s.closing = True
        logs.event(
            log,
            logging.WARNING,
            "session over its send budget",
            s.id,
            buffered_bytes=ws.transport.get_write_buffer_size() if ws.transport is not None else None,
            budget_bytes=self.send_budget,
        )
        self.metrics.budget_closes.inc()
        self._close_soon(s, 1008, "send budget exceeded: the client does not read")

    def _send_text(self, s: Session, text: str) -> None:
        if s.closing:
            return
        transport = s.ws.transport
        if transport is not None and transport.get_write_buffer_size() + len(text) > self.send_budget:
            self._over_budget(s.ws)
            return
        broadcast([s.ws], text)

    @staticmethod
    def _send_text_ws(ws: ServerConnection, text: str) -> None:
        broadcast([ws], text)

    def _error(self, s: Session, code: str, message: str, **fields: Any) -> None:
        self._send_text(s, P.event("error", code=code, message=message, **fields))

    def _touch(self, s: Session) -> None:
        """Something changed for this session (and its listeners): look at them now."""
        now = time.monotonic()
        self.schedule.add(s, now)
        for listener in s.listeners:
            self.schedule.add(listener, now)
        self._wake.set()

    # -- commands -----------------------------------------------------------------------------------
    def _command(self, s: Session, cmd: P.Command) -> None:
        if isinstance(cmd, P.Synthesize):
            self._synthesize(s, cmd)
        elif isinstance(cmd, P.Control):
            if s.source is None:
                return
            try:
                if cmd.action == "pause":
                    s.source.pause()
                else:
                    s.source.resume()
                    self._touch(s)
            except StreamError as exc:
                self._error(s, exc.code, exc.message)
                return
            self._send_text(s, P.event("paused" if cmd.action == "pause" else "resumed", sequence=s.source.position))
        elif isinstance(cmd, P.Cancel):
            stream = s.stream
            if stream is None:
                self._error(s, "listener", "a listening connection has nothing to cancel")
                return
            stream.cancel()
        elif isinstance(cmd, P.Ack):
            sent = s.sent_at.get(cmd.sequence)
            if sent is not None:
                self.metrics.end_to_end.observe((time.monotonic() - sent) * 1000 + (cmd.buffered_ms or 0.0))
        elif isinstance(cmd, P.Listen):
            self._listen(s, cmd)

    def _synthesize(self, s: Session, cmd: P.Synthesize) -> None:
        stream = s.stream
        if stream is None:
            self._error(s, "listener", "a listening connection cannot synthesize")
            return
        try:
            uid = stream.say(cmd.text, voice=cmd.voice, request_id=cmd.request_id)
        except TextError as exc:
            self._error(s, exc.code, str(exc), request_id=cmd.request_id)
            return
        except StreamError as exc:
            self._error(s, exc.code, exc.message, request_id=cmd.request_id)
            return
        except RingAudioError as exc:
            self._error(s, "unavailable", str(exc), request_id=cmd.request_id)
            return
        s.active = True  # no longer subject to the idle timeout
        self._send_text(s, P.event("queued", utterance_id=uid, request_id=cmd.request_id))
        self._touch(s)

    def _listen(self, s: Session, cmd: P.Listen) -> None:
        owner = self.sessions.get(cmd.session_id)
        stream = owner.stream if owner is not None else None
        if (
            owner is None
            or owner is s
            or stream is None
            or not hmac.compare_digest(owner.key.encode(), cmd.key.encode())
        ):
            self._error(s, "listen_refused", "no such stream, or a wrong key")
            return
        if s.listening_to is not None:  # listening elsewhere already: move
            s.listening_to.listeners.discard(s)
            if isinstance(s.source, Listener):
                s.source.close()
        if s.stream is not None:
            s.stream.close()  # a listener needs no ring of its own
        s.source = stream.listen()
        s.listening_to = owner
        s.pacer = Pacer(self.period, self.prebuffer, time.monotonic())
        owner.listeners.add(s)
        s.active = True
        self._send_text(s, P.event("listening", session_id=owner.id, sequence=stream.cursor))
        self._touch(s)

    # -- events -------------------------------------------------------------------------------------
    def _flush(self, s: Session) -> None:
        """Send the events the session's stream produced (logging and counting overruns)."""
        source = s.source
        if source is None:
            return
        for ev in source.pop_events():
            if ev.type == "overrun":
                self._overrun(s, ev)
            self._send_text(s, P.event(ev.type, **ev.data))

    def _overrun(self, s: Session, ev: Event) -> None:
        d = ev.data
        logs.event(
            log, logging.WARNING, "Frame sequence gap detected", s.id, expected=d["expected"], received=d["received"]
        )
        depth = self.depth(s)
        if depth is not None:
            logs.event(log, logging.WARNING, "Frame queue full, dropping frames", s.id, queue_size=depth)
        self.metrics.dropped(s.id, d["lost"])

    # -- the scheduler --------------------------------------------------------------------------------
    async def _ticker(self) -> None:
        schedule, engine, wake = self.schedule, self.engine, self._wake
        folded = watched = time.monotonic()
        while not self.stopping.is_set():
            wake.clear()
            try:
                for stream in engine.poll():  # worker events: utterance starts and ends, failures, cancels
                    s = self.sessions.get(stream.id)
                    if s is not None:
                        self._flush(s)
                        self._touch(s)
            except Exception:  # the scheduler of every session must not die of one event
                log.exception("worker event failed")
            now = time.monotonic()
            due = schedule.pop_due(now + SLACK)
            if due:
                now_us = int(time.time() * 1e6)
                for s in due:
                    try:
                        again = self._pump(s, now, now_us)
                    except RingClosed:
                        continue
                    except Exception:  # one broken session must not stop the scheduler of all the others
                        log.exception("session failed", extra={"session_id": s.id})
                        self._error(s, "internal_error", "the server could not send this stream")
                        self._close_soon(s, 1011, "internal error")
                        continue
                    if again is not None:
                        schedule.add(s, again)
            if now - watched >= WATCH_EVERY:
                watched = now
                self._watch()
            if now - folded > 1.0:
                folded = now
                self.metrics.interval.fold()
                self.metrics.jitter.fold()
                self._reap_idle(now)
                if engine.fatal and not self.exit_code:  # the workers gave up: so does the server
                    logs.event(log, logging.CRITICAL, "server failed", None, error=engine.fatal)
                    self.exit_code = 1
                    self.stopping.set()
            next_due = schedule.next_due()
            # idle: no wake-ups at all until a command or a worker event. (asyncio.timeout, not
            # wait_for: on Python 3.11 wait_for can swallow the cancellation that stops this task.)
            delay = 1.0 if next_due is None else next_due - time.monotonic()
            if delay > 0 and not wake.is_set():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await wake.wait()

    def _reap_idle(self, now: float) -> None:
        """Close connections that never spoke nor listened within ``server.idle_timeout_s``."""
        if not self.idle_timeout:
            return
        for s in list(self.sessions.values()):
            if not s.active and not s.closing and now - s.opened > self.idle_timeout:
                self._error(s, "idle_timeout", f"no synthesize or listen within {self.idle_timeout:g} s")
                self._close_soon(s, 1000, "idle timeout")

    def _pump(self, s: Session, now: float, now_us: int) -> float | None:
        """Send what the session may send now; return when to look at it again (None: when told).

        The per-frame path of the whole server, so it is written flat: one ring read, one header
        pack and one transport write per frame, metrics appended to plain lists.
        """
        source = s.source
        if source is None or source.paused:
            return None
        ws = s.ws
        transport = ws.transport
        if transport is None or transport.is_closing() or ws.protocol.state is not OPEN:
            return None
        if now - s.backlog_at >= BACKLOG_REFRESH and s.sock is not None:
            probe = backlog.probe(s.sock)
            if probe.window is not None and probe.window > s.max_window:
                s.max_window = probe.window
            s.kernel_backlog = backlog.unconsumed(0, probe, s.max_window)
            s.backlog_at = now
            if probe.outq == 0 and s.kernel_backlog > self.send_limit and not s.probing:
                # all acknowledged and only the client's window says it has not read: ask it
                self._spawn(self._ping(s))
        unconsumed = transport.get_write_buffer_size() + s.kernel_backlog
        if unconsumed > self.send_limit:  # sent and not read: hold the rest back (block: the ring fills)
            if not s.slow:  # a new episode: one line for it, not one per frame it holds back
                s.slow = True
                logs.event(
                    log,
                    logging.WARNING,
                    "Client not consuming frames fast enough",
                    s.id,
                    sequence=source.position,
                    unconsumed_frames=unconsumed // self.frame_bytes,
                    queue_size=self.depth(s),
                )
                self.metrics.slow_clients.inc()
            s.slow_since = now
            return now + self.period
        if s.slow and now - s.slow_since > SLOW_CLEAR:  # it kept up for a while: the episode is over
            s.slow = False
            logs.event(log, logging.INFO, "Client consuming again", s.id, sequence=source.position)
        pacer = s.pacer
        # a session is taken up to SLACK early (with the others due then): its frame counts as due
        allowance = pacer.allowance(now, SLACK)
        sent = 0
        frame, pcm, offset, sent_at = s.frame, s.pcm, s.offset, s.sent_at
        while sent < allowance:
            got = source.read_into(pcm, now)
            if source.events:  # an overrun, or the end of the previous utterance: before this frame
                self._flush(s)
            if got is None:
                break
            seq, uid, flags = got
            _pack(frame, offset, P.MAGIC, P.VERSION, flags, uid & 0xFFFFFFFF, seq, now_us)
            if s.raw:
                transport.write(bytes(frame))  # a copy: the transport may keep it while the buffer is reused
            else:  # an extension (permessage-deflate) was negotiated: the library frames it
                broadcast([ws], memoryview(frame)[offset:])
            sent += 1
            if self.debug_frames:
                logs.event(log, logging.DEBUG, "frame sent", s.id, sequence=seq, frame_sequence=seq, utterance_id=uid)
            if flags & P.FLAG_FIRST and isinstance(source, Stream):
                self.metrics.first_audio.observe(source.first_audio_ms)
            if len(sent_at) > 512:
                sent_at.clear()
            sent_at[seq] = now
        if sent:
            pacer.spend(sent)
            if s.last_send:
                interval = (now - s.last_send) * 1000
                self._intervals(interval)
                if s.last_interval:
                    self._jitters(abs(interval - s.last_interval))
                s.last_interval = interval
            s.last_send = now
        if isinstance(source, Stream) and source._settle:
            source.settle()  # the utterance whose last frame just went out has ended
        if source.events:
            self._flush(s)
        if sent == allowance:
            return pacer.next_due(now)
        return now + self.poll_interval if source.busy else None  # waiting for the worker, or idle
