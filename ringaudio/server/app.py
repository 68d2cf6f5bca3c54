"""The WebSocket server process: sessions on top of the engine, one pacing scheduler for all of them.

The server is one consumer of :class:`~ringaudio.engine.Engine`: each connection is a session with
an engine stream (and its ring lease), or a listener of another session's stream. This module holds
the life cycle, the connections and the commands; one scheduler task serves every session
(:mod:`.scheduler`), through the send path (:mod:`.send`); the HTTP side is :mod:`.http`.

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
import logging
import os
import socket
import time
from typing import Any

import numpy as np
from websockets.asyncio.server import ServerConnection, serve, unix_serve
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State

from .. import __version__, logs
from .. import wire as P
from ..engine import EngineError
from ..errors import ArenaFull, RingAudioError, StreamError
from . import access
from .instances import private_address
from .pacing import Pacer
from .scheduler import Scheduling
from .session import Session
from .siblings import Siblings

log = logging.getLogger("ringaudio.server")
SEND_BUFFER_BYTES = 32 * 1024  # the kernel doubles it


class App(Siblings, Scheduling):
    """The WebSocket server process's application: ``await App(config).run()``."""

    async def run(self, ready: asyncio.Future[tuple[str, int]] | None = None) -> None:
        loop = asyncio.get_running_loop()
        cfg = self.config

        def notify() -> None:  # on the pool's thread
            loop.call_soon_threadsafe(self._wake.set)

        self.engine.notify = notify
        self.debug_frames = log.isEnabledFor(logging.DEBUG)
        # a frame log needs every frame to pass through Python
        self._init_lanes(self.config.server.kernel_lanes and not self.debug_frames)
        try:
            if not await self._start_engine():
                return
            self.collections.settle()  # (own process only) start-up's objects frozen; full collections by the scheduler
            origins: list[Any] | None = [*cfg.server.allowed_origins, None] if cfg.server.allowed_origins else None
            options: dict[str, Any] = {
                "compression": "deflate" if cfg.compress else None,
                "max_size": cfg.server.max_message_bytes,
                "origins": origins,
                "ping_interval": None,  # a deliberately slow but healthy client is not closed for it
                "close_timeout": self.close_timeout,
                "open_timeout": 10,
                "server_header": f"ringaudio/{__version__}",
                "logger": logging.getLogger("ringaudio.websockets"),
            }
            server = await serve(
                self._handler,
                self.host,
                self.port,
                process_request=self._process_public,
                create_connection=self._connection_class(),
                reuse_port=bool(self.siblings) or None,  # the processes of one --processes server share it
                **options,
            )
            private: Any = None
            ticker: asyncio.Task[None] | None = None
            try:
                sock = next(iter(server.sockets))
                host, port = sock.getsockname()[:2]
                self.port = port
                if self.siblings:  # where siblings relay listens and ask for /metrics
                    private = await unix_serve(
                        self._handler,
                        private_address(port, self.instance, self.family),
                        process_request=self._process_request,
                        create_connection=self._connection_class(private=True),
                        **options,
                    )
                fields: dict[str, Any] = {"instance": self.instance} if self.instance else {}
                message = "process listening" if self.siblings else "server listening"
                logs.event(log, logging.INFO, message, None, host=host, port=port, version=__version__, **fields)
                if ready is not None and not ready.done():
                    ready.set_result((host, port))
                ticker = asyncio.create_task(self._ticker())
                await self.stopping.wait()
                logs.event(log, logging.INFO, "server stopping", None, sessions=len(self.sessions))
            finally:
                server.close(close_connections=False)  # no new connections
                if private is not None:
                    private.close(close_connections=False)
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
                        if private is not None:
                            await private.wait_closed()
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

    def _connection_class(self, private: bool = False) -> type[ServerConnection]:
        """Connections that the app can see from the first byte: every one is tracked (shutdown cuts
        off those still open, handshakes included), and what the library writes on its own
        (pongs) counts against the session's send budget too."""
        app = self

        class Connection(ServerConnection):
            is_private = private  # on the private socket: a sibling's relay or /metrics request

            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                super().connection_made(transport)
                app._connections.add(self)

            def connection_lost(self, exc: Exception | None) -> None:
                app._connections.discard(self)
                s = app._by_ws.get(self)
                if s is not None:  # its lane's own descriptor keeps the socket open: let it go now
                    app._eject(s)
                super().connection_lost(exc)

            def send_data(self) -> None:
                # whatever the library writes (our events, its pongs, pings and closes) goes out in
                # order with the frames: a session in a lane has its lane write it
                if self.protocol.writes:  # (called after every read too, mostly with nothing to write)
                    s = app._by_ws.get(self)
                    if s is not None and s.lane >= 0:
                        app._send_from_lane(s, self.protocol)
                super().send_data()

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

    async def _handler(self, ws: ServerConnection) -> None:
        try:
            if len(self.sessions) >= self.config.server.max_sessions:  # listeners count too
                raise ArenaFull("max_sessions")
            stream = self.engine.open_stream()
        except ArenaFull as exc:
            logs.event(
                log, logging.WARNING, "session refused", None, reason="max_sessions", sessions=len(self.sessions)
            )
            self._send_text_ws(ws, P.event("error", code=P.error_code(exc), message="the server is at max_sessions"))
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
            stream=stream,
            pacer=Pacer(self.period, self.prebuffer, time.monotonic()),
            frame=frame,
            pcm=np.frombuffer(frame, np.int16, offset=offset + P.HEADER_SIZE),
            offset=offset,
            raw=not ws.protocol.extensions,
            key=stream.key,
            sock=sock,
            opened=time.monotonic(),
        )
        self._init_format(s)
        s.quality = self._new_quality(s.opened)
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
                    encodings=self.encodings,
                    frame_samples=self.frame_samples,
                    frame_ms=self.config.frame_duration_ms,
                    protocol=P.PROTOCOL,
                    **({"instance": self.instance} if self.instance else {}),
                ),
            )
            listen = access.listen_target(ws.request.path if ws.request is not None else "")
            if listen is not None:  # /?listen=<session_id>&key=<key>: as if its first message said so
                self._command_text(s, listen)
            async for message in ws:
                if s.relay is not None and s.relay.listening:  # everything goes to the sibling
                    await s.relay.forward(message)
                    continue
                if isinstance(message, bytes):
                    self._error(s, "binary_not_supported", "the server takes text (JSON) messages only")
                    continue
                self._command_text(s, message)
        except ConnectionClosed:
            pass
        finally:
            await self._close(s, 1000, "bye")

    def _command_text(self, s: Session, message: str) -> None:
        try:
            cmd = P.parse(message)
        except P.ProtocolError as exc:
            self._refuse(s, exc)
            return
        # a command sees (and may change) the stream as sent so far; an ack, only its sender's send times
        eject = self._eject if isinstance(cmd, P.Ack) else self._eject_with_listeners
        eject(s)
        try:
            self._command(s, cmd)
        except P.ProtocolError as exc:
            self._refuse(s, exc)

    async def _close(self, s: Session, code: int, reason: str) -> None:
        if self.sessions.pop(s.id, None) is None:
            return
        self.collections.ended_one()
        self._eject(s, reschedule=False)
        for listener in s.listeners:  # their lanes read this stream's ring, which goes back now
            self._eject(listener)
        s.closing = True
        if s.relay is not None:
            self._spawn(s.relay.close())
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

    def _command(self, s: Session, cmd: P.Command) -> None:
        if isinstance(cmd, P.Synthesize):
            self._synthesize(s, cmd)
        elif isinstance(cmd, P.Control):
            if s.source is None:
                return
            try:
                if cmd.action == "pause":
                    s.source.pause()
                    s.paused_at = s.paused_at or time.monotonic()
                else:
                    s.source.resume()
                    s.paused_at = 0.0
                    self._touch(s)
            except StreamError as exc:
                self._refuse(s, exc)
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
            s.acks += 1
            s.acked_at = time.monotonic()
            if cmd.buffered_ms is not None:
                self.metrics.client_buffer.observe(cmd.buffered_ms / 1000)
                s.client_buffer_ms = cmd.buffered_ms
            if cmd.underruns is not None and cmd.underruns > s.underruns:  # a running count: the increase
                self.metrics.client_underruns.inc(cmd.underruns - s.underruns)
                s.underruns = cmd.underruns
        elif isinstance(cmd, P.Listen):
            self._listen(s, cmd)
        elif isinstance(cmd, P.Format):
            self._set_format(s, cmd)

    def _synthesize(self, s: Session, cmd: P.Synthesize) -> None:
        stream = s.stream
        if stream is None:
            self._error(s, "listener", "a listening connection cannot synthesize")
            return
        try:
            uid = stream.say(cmd.text, voice=cmd.voice, request_id=cmd.request_id)
        except RingAudioError as exc:  # bad text, a full queue, a closed stream, workers gone ...
            self._refuse(s, exc, request_id=cmd.request_id)
            return
        s.active = True  # no longer subject to the idle timeout
        self._send_text(s, P.event("queued", utterance_id=uid, request_id=cmd.request_id))
        self._touch(s)

    def _listen(self, s: Session, cmd: P.Listen) -> None:
        owner = self.sessions.get(cmd.session_id)
        if owner is None and self._listen_away(s, cmd):
            return
        if owner is not None:
            self._eject(owner)  # a listener starts from the owner's position as sent
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
        if s.source is not None:
            s.source.close()  # a listener needs no ring of its own (and follows one stream at a time)
        s.stream = None
        s.quality = None  # a listener hears the owner's level
        s.ring_format = -1  # and the owner's format: looked at again before its first frame
        s.source = stream.listen()
        s.listening_to = owner
        s.pacer = Pacer(self.period, self.prebuffer, time.monotonic())
        if stream.busy:  # joining mid-utterance: in step with the owner (the writer is only just ahead)
            s.pacer.tokens = 1.0
        owner.listeners.add(s)
        s.active = True
        self._send_text(s, P.event("listening", session_id=owner.id, sequence=s.source.position))
        self._touch(s)
