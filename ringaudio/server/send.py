"""The send path: events to a session's socket under its send budget, closes that are bounded,
and the probe that asks a held-back client whether it has read everything.

Every outbound byte of a session (audio, events, the library's pongs) counts against one send
budget (``server.send_budget_kb``); a client over it is closed (1008), never buffered without end.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Coroutine
from typing import Any

from websockets.asyncio.server import ServerConnection, broadcast
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State

from .. import logs
from .. import wire as P
from ..stream import Event
from . import backlog
from .lanes import Laning
from .session import Session

log = logging.getLogger("ringaudio.server")
_OUTCOMES = {"utterance.end": "ended", "error": "failed", "cancelled": "cancelled"}
PING_TIMEOUT = 1.0  # how long a held-back client may take to answer "have you read it all?" (s)
RTT_EVERY = 3.0  # how often each session's round trip is measured (s) ...
RTT_SPREAD = 1.0  # s: ... give or take up to this much, so that sessions opened together are not all pinged in one pass


def _write_all(messages: list[tuple[asyncio.WriteTransport, bytes]]) -> None:
    for transport, message in messages:
        try:
            transport.write(message)
        except Exception:  # a transport closed under the pass: its session ends; the others go on
            log.exception("frame write failed")


class Sending(Laning):
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
            self._rebase(s)
        except (TimeoutError, ConnectionClosed, RuntimeError):
            pass  # not read (yet): it stays held back
        finally:
            s.probing = False

    def _rebase(self, s: Session) -> None:
        """The client answered a ping, so it has read all that came before: its window now is what it can hold."""
        self._eject(s)  # (a lane keeps the baseline while it runs)
        if s.sock is not None:
            probe = backlog.probe(s.sock)
            if probe.window is not None:
                s.max_window = probe.window
            s.backlog_at = 0.0  # look again at the next pump

    def _measure_rtt(self, s: Session, now: float) -> None:
        """One WebSocket ping per session every RTT_EVERY seconds, unless one is still unanswered: the
        round trip to the client's application (network, its socket buffers, its reading), as
        /debug/sessions shows it. Never a reason to close a session: a deliberately slow client is
        slow, not dead."""
        if not s.closing and not s.ping_out and now - s.pinged_at >= RTT_EVERY:
            s.ping_out = now
            s.pinged_at = now - RTT_SPREAD * random.random()
            self._spawn(self._round_trip(s))

    async def _round_trip(self, s: Session) -> None:
        try:
            pong = await s.ws.ping()
            rtt = await pong  # until the pong, or until the connection closes
        except (ConnectionClosed, RuntimeError):
            return
        s.rtts.append(rtt)
        s.ping_out = 0.0

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

    def _write_out(self) -> None:
        """The pass's frames, one session's after another, each session's in order: the sends of a
        pass go out back to back (the clients' side of loopback is woken once for many)."""
        out = self._out
        self._out = []  # first: a write that raises must not leave them to go twice
        self._out_owner = None
        _write_all(out)

    def _write_own(self, s: Session) -> None:
        """Before anything else goes to ``s`` during its own pump: the frames it has in the pass."""
        out = self._out
        if self._out_owner is s and len(out) > self._out_from:
            mine = out[self._out_from :]
            del out[self._out_from :]  # first, as in _write_out
            _write_all(mine)

    def _send_text(self, s: Session, text: str) -> None:
        self._write_own(s)
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

    def _refuse(self, s: Session, exc: BaseException, **fields: Any) -> None:
        """An ``error`` for a command that raised: the wire code is the exception's (wire.error_code)."""
        self._error(s, P.error_code(exc), str(getattr(exc, "message", None) or exc), **fields)

    def _touch(self, s: Session) -> None:
        """Something changed for this session (and its listeners): look at them now."""
        self._eject_with_listeners(s)
        now = time.monotonic()
        self.schedule.add(s, now)
        for listener in s.listeners:
            self.schedule.add(listener, now)
        self._wake.set()

    def _flush(self, s: Session) -> None:
        """Send the events the session's stream produced (logging and counting overruns)."""
        source = s.source
        if source is None:
            return
        for ev in source.pop_events():
            if ev.type == "overrun":
                self._overrun(s, ev)
            elif (
                s.stream is not None
                and ev.type in _OUTCOMES
                and (ev.type != "error" or ev.data.get("utterance_id") is not None)
            ):
                self.metrics.totals.utterances[_OUTCOMES[ev.type]] += 1
            self._send_text(s, P.event(ev.type, **ev.data))

    def _overrun(self, s: Session, ev: Event) -> None:
        d = ev.data
        logs.event(
            log, logging.WARNING, "Frame sequence gap detected", s.id, expected=d["expected"], received=d["received"]
        )
        depth = self.depth(s)
        if depth is not None:
            logs.event(log, logging.WARNING, "Frame queue full, dropping frames", s.id, queue_size=depth)
        self.metrics.totals.overruns += 1
        s.overruns += 1
        s.drops_counted += d["lost"]
        self._export_drops(s)
