"""A lean WebSocket load client for ``bench/load.py``, on raw asyncio (uvloop) protocols.

Why hand-rolled: the instrument must be much lighter than the system it measures. The load generator
shares the machine with the server, so every microsecond it spends per message is stolen from the
system under test. The ``websockets`` client spends ~15-20 µs of Python on each received message
(frame object, message queue, future, task wake-up, ``wait_for``): at the target of 1 500 sessions ×
50 frames/s = 75 000 messages/s that is more CPU than the server itself, and the benchmark would
mostly measure its own client. Here a received message costs ~1 µs of Python: a few struct reads and
integer comparisons inside one ``data_received`` loop, no per-message objects, no task switches; what
remains per message is the kernel's and the event loop's (one wake-up and one ``read`` per frame).

It is only the client half of RFC 6455 that the benchmark needs: a hand-written opening handshake
(checked ``101`` and ``Sec-WebSocket-Accept``), masked client frames, no extensions or compression,
ping answered with pong, close answered with close, messages reassembled if the server ever fragments.

Same inputs and outputs as ``load._client_process``: ``_client_process(url, count, seconds, scenario,
first, queue, text)`` puts one stats dict per session on ``queue`` (``frames``, ``gaps``, ``lost``,
``first_ms``, ``intervals``, ``slow``, and ``error`` when the connection failed). Frames that arrive in
one read share one ``time.monotonic()``, so an interval between them is 0 ms. The "slow" client does
not sleep (there is no task to put to sleep): it consumes at most one frame per 25 ms from its buffer
and pauses reading on the transport while the backlog is large, so its socket stops draining.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import struct
import time
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import urlsplit

from ringaudio.wire import HEADER_SIZE, SEQUENCE_OFFSET

# The frame header of ``ringaudio.wire`` (which imports only the standard library, so the client
# processes load no server, engine or numba): the hot path reads just the uint64 sequence.
SEQ = struct.Struct("<Q")
U16 = struct.Struct("!H")
U64 = struct.Struct("!Q")

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
FIN_BINARY = 0x80 | OP_BINARY  # the first byte of every audio frame: the hot path tests only this

OPEN_TIMEOUT = 60.0  # connect + handshake + ``session`` event (+ the fanout owner's), as ``load._session``
CLOSE_TIMEOUT = 2.0  # wait this long for the server's close frame, then abort
MAX_SIZE = 2**20  # as ``load._session``'s max_size
MAX_HEAD = 16 * 1024  # a handshake response longer than this is not one
BURST = 10  # intervals are recorded after the initial 200 ms burst (``load._session``)
STAGGER_EVERY, STAGGER_S = 50, 0.05  # open 50 connections, then breathe (``load._client_process``)
SLOW_PERIOD = 0.025  # the runbook's slow client: one 20 ms frame per 25 ms
SLOW_HIGH, SLOW_LOW = 64 * 1024, 16 * 1024  # its buffered bytes: pause reading above, resume below

CONNECTING, OPEN, CLOSING, CLOSED = range(4)


class HandshakeError(Exception):
    """The server did not switch protocols the way RFC 6455 says."""


class ProtocolError(Exception):
    """The server sent something a WebSocket server must not."""


@dataclass(eq=False)
class Role:
    """What one session does: speak (perhaps slowly), or listen to the fanout owner's stream."""

    slow: bool = False
    owner: bool = False  # the fanout speaker: stays 3 s longer than its listeners, who joined after it
    listen: Role | None = None
    session: asyncio.Future[dict[str, Any] | None] | None = None  # the owner's ``session`` event


# -- frames out -------------------------------------------------------------------------------------


def _mask(data: bytes, key: bytes) -> bytes:
    n = len(data)
    if not n:
        return b""
    stream = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "little") ^ int.from_bytes(stream, "little")).to_bytes(n, "little")


def encode_frame(opcode: int, payload: bytes) -> bytes:
    """One final client frame: masked with a fresh random key, as RFC 6455 §5.3 requires."""
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    elif n < 2**16:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    key = os.urandom(4)
    return head + key + _mask(payload, key)


# -- handshake --------------------------------------------------------------------------------------


def handshake_request(host: str, port: int, target: str, key: str) -> bytes:
    lines = [
        f"GET {target} HTTP/1.1",
        f"Host: {host}:{port}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
        "User-Agent: ringaudio-bench-rawclient",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")


def accept_for(key: str) -> str:
    return base64.b64encode(hashlib.sha1(key.encode("ascii") + GUID).digest()).decode("ascii")


def check_response(head: bytes, key: str) -> None:
    """Raise ``HandshakeError`` unless ``head`` (up to the blank line) accepts our upgrade."""
    lines = head.decode("latin-1").split("\r\n")
    status = lines[0].split(" ", 2)
    if len(status) < 2 or status[1] != "101":
        raise HandshakeError(f"server rejected WebSocket connection: {lines[0]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    connection = {token.strip().lower() for token in headers.get("connection", "").split(",")}
    if headers.get("upgrade", "").lower() != "websocket" or "upgrade" not in connection:
        raise HandshakeError("missing Upgrade: websocket / Connection: Upgrade")
    if headers.get("sec-websocket-accept") != accept_for(key):
        raise HandshakeError("wrong Sec-WebSocket-Accept")
    if headers.get("sec-websocket-extensions"):
        raise HandshakeError(f"extension not requested: {headers['sec-websocket-extensions']}")


# -- one session ------------------------------------------------------------------------------------


class RawSession(asyncio.Protocol):
    """One connection: handshake, then count binary frames in ``data_received`` until told to close."""

    def __init__(self, host: str, port: int, target: str, slow: bool) -> None:
        loop = asyncio.get_running_loop()
        self.loop = loop
        self.key = base64.b64encode(os.urandom(16)).decode("ascii")
        self.request = handshake_request(host, port, target, self.key)
        self.transport: asyncio.Transport | None = None
        self.state = CONNECTING
        self.buf = bytearray()
        self.opened: asyncio.Future[dict[str, Any]] = loop.create_future()  # the ``session`` event
        self.closed: asyncio.Future[None] = loop.create_future()
        self.error: str | None = None
        self.slow = slow
        self.throttled = False  # a started slow session: frames are consumed by ``_tick``, not on arrival
        self.paused = False
        self.end_timer: asyncio.TimerHandle | None = None  # time is up
        self.tick_timer: asyncio.TimerHandle | None = None  # the slow client's next frame
        self.close_timer: asyncio.TimerHandle | None = None  # the server's close frame is overdue
        self.next_tick = 0.0
        self.fragments: bytearray | None = None
        self.fragment_op = 0
        # the counters of ``load._session``, kept as attributes and copied into the stats dict at the end
        self.t0 = time.monotonic()
        self.frames = 0
        self.gaps = 0
        self.lost = 0
        self.expected = -1
        self.last = 0.0
        self.first_ms: float | None = None
        self.intervals: list[float] = []
        self.paced_from: float | None = None  # monotonic: when the frame before the first interval came

    # -- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not an asyncio.Transport subclass
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if self.state == OPEN and not self.throttled:
            self._parse(time.monotonic(), -1)
        elif self.state == CONNECTING:
            self._handshake()
        elif self.throttled:
            self._hold()
        elif self.state == CLOSING:
            self._parse(time.monotonic(), -1)  # drain to the server's close frame; nothing is counted

    def eof_received(self) -> bool | None:
        return None  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        if self.state in (CONNECTING, OPEN) and self.error is None:
            self.error = f"ConnectionClosedError: {exc or 'no close frame received'}"
        self.state = CLOSED
        self._cancel_timers()
        if not self.opened.done():
            self.opened.set_exception(ConnectionError(self.error or "connection lost"))
        if not self.closed.done():
            self.closed.set_result(None)

    # -- the session's life

    def begin(self, message: dict[str, Any], seconds: float) -> None:
        """Send the opening request (``synthesize`` or ``listen``), start the clock and the end timer."""
        if self.state != OPEN:
            raise ConnectionError(self.error or "the connection closed before the session began")
        self.send_text(json.dumps(message))
        self.t0 = time.monotonic()
        self.end_timer = self.loop.call_later(seconds, self.finish)
        if self.slow:
            self.throttled = True
            self.next_tick = self.loop.time() + SLOW_PERIOD
            self.tick_timer = self.loop.call_at(self.next_tick, self._tick)

    def send_text(self, text: str) -> None:
        assert self.transport is not None
        self.transport.write(encode_frame(OP_TEXT, text.encode()))

    def finish(self) -> None:
        """Time is up: stop counting, send a normal close, wait a little for the server's."""
        if self.state != OPEN:
            return
        assert self.transport is not None
        self.state = CLOSING
        self.throttled = False
        self._cancel_timers()
        self.transport.write(encode_frame(OP_CLOSE, U16.pack(1000)))
        self.close_timer = self.loop.call_later(CLOSE_TIMEOUT, self.abort)
        self._resume()
        self._parse(time.monotonic(), -1)

    def abort(self) -> None:
        if self.transport is not None and self.state != CLOSED:
            self.transport.abort()

    def stats(self, slow: bool) -> dict[str, Any]:
        out: dict[str, Any] = {"frames": self.frames, "gaps": self.gaps, "lost": self.lost}
        out.update(first_ms=self.first_ms, intervals=self.intervals, slow=slow, paced_from=self.paced_from)
        if self.error is not None:
            out["error"] = self.error
        return out

    # -- frames in

    def _parse(self, now: float, budget: int) -> None:
        """Consume every complete frame in the buffer (at most ``budget`` binary ones; -1: no limit)."""
        buf = self.buf
        size = len(buf)
        pos = 0
        counting = self.state == OPEN
        frames, expected, last, intervals = self.frames, self.expected, self.last, self.intervals
        while size - pos >= 2 and budget:
            b0 = buf[pos]
            n = buf[pos + 1]  # a server must not mask: with the mask bit set n > 127, refused below
            head = pos + 2
            if n == 126:
                if size - pos < 4:
                    break
                n = U16.unpack_from(buf, head)[0]
                head += 2
            elif n == 127:
                if size - pos < 10:
                    break
                n = U64.unpack_from(buf, head)[0]
                head += 8
                if n > MAX_SIZE:
                    self._fail(ProtocolError(f"message too big: {n} bytes"))
                    break
            elif n > 127:
                self._fail(ProtocolError("masked frame from the server"))
                break
            end = head + n
            if end > size:
                break
            if b0 == FIN_BINARY and n >= HEADER_SIZE:
                budget -= 1
                if counting:
                    seq = SEQ.unpack_from(buf, head + SEQUENCE_OFFSET)[0]
                    if frames == 0:
                        self.first_ms = (now - self.t0) * 1000
                    if expected >= 0 and seq != expected:
                        self.gaps += 1
                        self.lost += max(0, seq - expected)
                    expected = seq + 1
                    if frames > BURST:  # after the 200 ms burst: real-time pacing
                        intervals.append((now - last) * 1000)
                    elif frames == BURST:  # (the intervals' times are counted from here)
                        self.paced_from = now
                    last = now
                    frames += 1
                pos = end
                continue
            self.frames, self.expected, self.last = frames, expected, last  # _other may count too
            going_on = self._other(b0, head, end, now)
            frames, expected, last = self.frames, self.expected, self.last
            pos = end
            if not going_on:
                break
        self.frames, self.expected, self.last = frames, expected, last
        if pos:
            del buf[:pos]

    def _other(self, b0: int, start: int, end: int, now: float) -> bool:
        """Any frame but a whole audio one; False when parsing must stop (closing or failed)."""
        if b0 & 0x70:
            return self._fail(ProtocolError("reserved bits set: no extension was negotiated"))
        opcode = b0 & 0x0F
        payload = bytes(self.buf[start:end])
        if opcode >= OP_CLOSE:
            return self._control(opcode, payload, b0 & 0x80)
        if opcode == OP_CONT or not b0 & 0x80:
            return self._fragment(opcode, payload, b0 & 0x80, now)
        return self._message(opcode, payload, now)

    def _control(self, opcode: int, payload: bytes, fin: int) -> bool:
        if not fin or len(payload) > 125:
            return self._fail(ProtocolError("fragmented or oversized control frame"))
        if opcode == OP_PING and self.transport is not None:
            self.transport.write(encode_frame(OP_PONG, payload))
        elif opcode == OP_CLOSE:
            self._on_close(payload)
            return False
        elif opcode not in (OP_PING, OP_PONG):
            return self._fail(ProtocolError(f"unknown opcode {opcode:#x}"))
        return True

    def _fragment(self, opcode: int, payload: bytes, fin: int, now: float) -> bool:
        if opcode != OP_CONT:  # the first fragment of a message
            if self.fragments is not None:
                return self._fail(ProtocolError("a new message inside a fragmented one"))
            self.fragments, self.fragment_op = bytearray(payload), opcode
            return True
        if self.fragments is None:
            return self._fail(ProtocolError("continuation without a message"))
        self.fragments += payload
        if len(self.fragments) > MAX_SIZE:
            return self._fail(ProtocolError("message too big"))
        if not fin:
            return True
        whole, self.fragments = bytes(self.fragments), None
        return self._message(self.fragment_op, whole, now)

    def _message(self, opcode: int, payload: bytes, now: float) -> bool:
        """A whole message off the hot path: text, or audio that came fragmented (or short)."""
        if opcode == OP_TEXT:
            if not self.opened.done():
                try:
                    self.opened.set_result(json.loads(payload))
                except ValueError as exc:
                    return self._fail(exc)
            return True
        if opcode != OP_BINARY:
            return self._fail(ProtocolError(f"unknown opcode {opcode:#x}"))
        if len(payload) < HEADER_SIZE:
            return self._fail(ProtocolError(f"binary message of {len(payload)} bytes: shorter than a header"))
        # re-run it through the hot path so that it is counted the same way
        saved, self.buf = self.buf, bytearray(encode_server_frame(OP_BINARY, payload))
        try:
            self._parse(now, -1)
        finally:
            self.buf = saved
        return True

    def _on_close(self, payload: bytes) -> None:
        code = U16.unpack_from(payload)[0] if len(payload) >= 2 else 1005
        reason = payload[2:].decode("utf-8", "replace")
        if self.state == OPEN:  # the server closed first: that ends the session early, as an error
            self.error = f"ConnectionClosed: received {code} ({reason})"
            assert self.transport is not None
            self.transport.write(encode_frame(OP_CLOSE, payload[:2]))
        self.state = CLOSING
        self.throttled = False
        if self.transport is not None:
            self.transport.close()

    def _fail(self, exc: Exception) -> bool:
        if self.error is None:
            self.error = f"{type(exc).__name__}: {exc}"
        if not self.opened.done():
            self.opened.set_exception(exc)
        self.state = CLOSING
        self.throttled = False
        self.abort()
        return False

    def _handshake(self) -> None:
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            if len(self.buf) > MAX_HEAD:
                self._fail(HandshakeError("no end to the response headers"))
            return
        try:
            check_response(bytes(self.buf[:end]), self.key)
        except HandshakeError as exc:
            self._fail(exc)
            return
        del self.buf[: end + 4]
        self.state = OPEN
        self._parse(time.monotonic(), -1)  # the ``session`` event may have come in the same read

    # -- the slow client

    def _hold(self) -> None:
        """A slow session received data: keep it for ``_tick``; stop reading while the backlog is large."""
        if len(self.buf) > SLOW_HIGH and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()

    def _tick(self) -> None:
        """Every 25 ms: consume one audio frame (and the text or control frames before it)."""
        if not self.throttled:
            return
        self._parse(time.monotonic(), 1)
        if len(self.buf) < SLOW_LOW:
            self._resume()
        if self.throttled:
            self.next_tick = max(self.next_tick + SLOW_PERIOD, self.loop.time())  # on average, no bursts
            self.tick_timer = self.loop.call_at(self.next_tick, self._tick)

    def _resume(self) -> None:
        if self.paused and self.transport is not None:
            self.paused = False
            self.transport.resume_reading()

    def _cancel_timers(self) -> None:
        for timer in (self.end_timer, self.tick_timer, self.close_timer):
            if timer is not None:
                timer.cancel()
        self.end_timer = self.tick_timer = self.close_timer = None


def encode_server_frame(opcode: int, payload: bytes) -> bytes:
    """One final unmasked frame, as a server sends it (for reassembled messages and for tests)."""
    n = len(payload)
    if n < 126:
        return struct.pack("!BB", 0x80 | opcode, n) + payload
    if n < 2**16:
        return struct.pack("!BBH", 0x80 | opcode, 126, n) + payload
    return struct.pack("!BBQ", 0x80 | opcode, 127, n) + payload


# -- sessions and processes -------------------------------------------------------------------------


async def _join(proto: RawSession, role: Role, session: dict[str, Any], seconds: float, text: str) -> None:
    """Speak, or wait for the owner's ``session`` event and listen to it; then start the clock."""
    if role.listen is not None:
        if role.listen.session is None:
            raise ConnectionError("no fanout owner in this client process (fanout needs --clients 1)")
        owner = await asyncio.shield(role.listen.session)
        if owner is None:
            raise ConnectionError("the fanout owner has no session")
        message = {"type": "listen", "session_id": owner["session_id"], "key": owner["listen_key"]}
        proto.begin(message, seconds)
        return
    proto.begin({"type": "synthesize", "text": text}, seconds + (3.0 if role.owner else 0.0))
    if role.session is not None:
        role.session.set_result(session)


def _address(url: str) -> tuple[str, int, str]:
    parts = urlsplit(url)
    if parts.scheme != "ws" or not parts.hostname:
        raise ValueError(f"only ws:// URLs: {url}")
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return parts.hostname, parts.port or 80, target


async def _session(url: str, seconds: float, role: Role, text: str) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    proto: RawSession | None = None
    error: str | None = None
    try:
        host, port, target = _address(url)
        async with asyncio.timeout(OPEN_TIMEOUT):
            _, proto = await loop.create_connection(lambda: RawSession(host, port, target, role.slow), host, port)
            session = await proto.opened
            await _join(proto, role, session, seconds, text)
        await proto.closed
    except Exception as exc:  # a refused or dropped connection is a result, not a crash
        error = f"{type(exc).__name__}: {str(exc) or 'timed out opening the session'}"
        if proto is not None:
            proto.abort()
    finally:
        if role.session is not None and not role.session.done():
            role.session.set_result(None)  # release the listeners of an owner that failed
    stats = proto.stats(role.slow) if proto is not None else _empty_stats(role.slow)
    if error is not None:
        stats.setdefault("error", error)
    return stats


def _empty_stats(slow: bool) -> dict[str, Any]:
    return {"frames": 0, "gaps": 0, "lost": 0, "first_ms": None, "intervals": [], "slow": slow}


def _role(scenario: str, first: bool, i: int, owner: Role) -> Role:
    if scenario == "fanout":  # the first session of the first process speaks, the others listen
        return owner if first and i == 0 else Role(listen=owner)
    # in "slow", that first session is the runbook's slow client
    return Role(slow=scenario == "slow" and first and i == 0)


async def _run(url: str, count: int, seconds: float, scenario: str, first: bool, text: str) -> list[dict[str, Any]]:
    loop = asyncio.get_running_loop()
    fanout = scenario == "fanout"
    owner = Role(owner=fanout, session=loop.create_future() if fanout and first else None)
    tasks = []
    for i in range(count):
        tasks.append(asyncio.create_task(_session(url, seconds, _role(scenario, first, i, owner), text)))
        if i % STAGGER_EVERY == STAGGER_EVERY - 1:
            await asyncio.sleep(STAGGER_S)  # do not stampede the accept queue
    return list(await asyncio.gather(*tasks))


def _client_process(url: str, count: int, seconds: float, scenario: str, first: bool, queue: Any, text: str) -> None:
    import uvloop

    queue.put(uvloop.run(_run(url, count, seconds, scenario, first, text)))
