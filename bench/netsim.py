"""A TCP impairment proxy on loopback: delay, jitter, a bandwidth cap, stalls and loss-like stalls.

Why a userspace proxy: this machine's kernel has no ``netem``, so the only way to give a client a slow
or jittery link to the server is to put something between them that holds bytes back. ``NetSim``
listens on 127.0.0.1:<free port> and forwards every accepted connection to 127.0.0.1:<target_port>,
applying an ``Impairment`` to each direction (``up`` = client→server, ``down`` = server→client).

Why stalls instead of loss: TCP cannot lose bytes, so what a lost packet does to the application is a
pause (the retransmission timeout), after which everything arrives at once. "Random stall-based loss"
models exactly that: with probability ``loss_stall_p`` per chunk (one read by the proxy) the stream
stops for ``loss_stall_ms`` before that chunk, and everything behind it waits too (head-of-line).

Why byte order is sacred: a TCP stream has no packets to reorder, so jitter here is a random extra
delay per chunk that never lets a chunk overtake the one before it: release time =
max(previous release time, arrival + delay + U(-jitter, +jitter)), clipped at >= arrival.

Pure core, I/O at the edge: ``Link`` decides, for one direction of one connection, how many bytes may
leave at a given time and when to ask again. It takes time as an argument (no clock, no sockets), so the
unit tests drive it without sleeping. The asyncio part (``_End``, ``_Pipe``, ``_Conn``, ``NetSim``) only
reads, queues the bytes, asks the ``Link`` and writes.

Bounded in memory and time: when one direction holds ``max_queue_bytes`` the proxy stops reading from
that side (``pause_reading``), so the sender's socket fills as it would on a real slow link; a receiver
that does not read fills the proxy's small write buffer, which stops the link, which fills the queue,
which stops the reading. After ``max_duration_s`` the proxy closes itself.

Use from asyncio (``async with NetSim(port, both=Impairment(delay_ms=50)) as sim: ... sim.port``), from
sync code (``with NetSim.running(port, up=..., down=...) as sim: ...``, the loop runs in a background
thread), or as a process: ``python -m bench.netsim --target 8765 --delay-ms 50`` logs
``{"message": "netsim listening", "port": ...}`` to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import math
import random
import signal
import socket
import struct
import sys
import threading
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, cast

HOST = "127.0.0.1"  # both ends, always: this tool never talks to anything but loopback
QUANTUM_S = 0.001  # under a rate cap a write is normally this much of the link's time (1 ms of bytes)
BURST_S = 0.004  # the token bucket: what a link that was idle may send at once
CATCHUP_S = 0.05  # a backlogged link whose wake-up came late may catch up this much (the average holds)
READ_SIZE = 64 * 1024  # one read from a socket, at most: one chunk
MAX_QUEUE = 256 * 1024  # bytes held per direction per connection before reading from that side stops
WRITE_HIGH = 64 * 1024  # the proxy's own write buffer per socket: above it the link stops releasing
MAX_DURATION_S = 600.0  # a forgotten proxy closes itself after this long
CONNECT_TIMEOUT_S = 10.0  # to the target
THREAD_TIMEOUT_S = 10.0  # start and stop of the background thread of ``NetSim.running``


@dataclass(frozen=True)
class Impairment:
    """What one direction of the link does to the bytes. The defaults are a perfect link."""

    delay_ms: float = 0.0  # each chunk is released this long after it was read
    jitter_ms: float = 0.0  # ± a uniform random extra delay per chunk (never reorders)
    rate_kbit: float | None = None  # a token-bucket cap on the bytes released (1 kbit = 1000 bit)
    stall_every_s: float | None = None  # every this many seconds (from the connection's start) ...
    stall_ms: float = 0.0  # ... nothing is released for this long
    loss_stall_p: float = 0.0  # per chunk: the probability of a retransmission-like stall before it
    loss_stall_ms: float = 200.0  # the length of that stall (an RTO)
    seed: int = 0  # of the jitter and loss draws; mixed with the connection number and direction

    def __post_init__(self) -> None:
        problems = [
            f"{name} must be >= 0"
            for name in ("delay_ms", "jitter_ms", "stall_ms", "loss_stall_ms")
            if not getattr(self, name) >= 0  # (also rejects NaN)
        ]
        if self.rate_kbit is not None and not self.rate_kbit > 0:
            problems.append("rate_kbit must be > 0 (None: no cap)")
        if self.stall_every_s is not None and not self.stall_every_s * 1000 > self.stall_ms:
            problems.append("stall_every_s must be longer than stall_ms (else the link never moves)")
        if not 0.0 <= self.loss_stall_p <= 1.0:
            problems.append("loss_stall_p must be in [0, 1]")
        if problems:
            raise ValueError("; ".join(problems))


# -- the pure core -----------------------------------------------------------------------------------


@dataclass(slots=True)
class _Chunk:
    due: float  # when it may leave (if nothing ahead holds it)
    size: int  # bytes of it still queued
    lost: bool  # a loss-stall is due before it (armed when it reaches the head of the queue)


class Link:
    """One direction of one connection: which queued bytes may leave when. No clock, no sockets.

    ``push(now, n)`` queues a chunk of ``n`` bytes read at ``now``; ``pull(now)`` returns how many bytes
    (from the head of the queue, in order) may be written at ``now`` and when to call ``pull`` again
    (``None``: nothing is queued; call it after the next ``push``). Calling ``pull`` late is harmless:
    the bytes wait; a rate cap with a backlog catches up by up to ``CATCHUP_S`` of bytes, so the
    average rate holds on a sluggish event loop, and a punctual one writes ``QUANTUM_S`` at a time.
    """

    def __init__(self, impairment: Impairment, start: float, seed: int | str | None = None) -> None:
        self.impairment = impairment
        self.start = start  # the phase of the periodic stalls
        self._rng = random.Random(impairment.seed if seed is None else seed)
        self._chunks: deque[_Chunk] = deque()
        self._last_due = -math.inf
        self._head_since = start  # when the head chunk became the head: a loss-stall starts no earlier
        self._set_rate(impairment.rate_kbit)
        self._tokens = self._depth
        self._refilled = start
        self._capped = False  # the last pull left due bytes behind for want of tokens
        self._window = 0  # the last periodic stall window that held something back
        self.queued = 0  # bytes
        self.chunks = 0
        self.stalls = 0  # periodic stall windows that held bytes back
        self.loss_stalls = 0  # loss-stalls applied

    def _set_rate(self, rate: float | None) -> None:
        self._rate = None if rate is None else rate * 1000 / 8  # bytes per second
        self._depth = 0.0 if self._rate is None else max(self._rate * BURST_S, 1.0)  # bucket size
        self._quantum = 0.0 if self._rate is None else min(max(self._rate * QUANTUM_S, 1.0), self._depth)
        self._catchup = 0.0 if self._rate is None else max(self._rate * CATCHUP_S, self._depth)

    def set_rate(self, now: float, rate_kbit: float | None) -> None:
        """A new cap from ``now`` on (None: none): the link got faster or slower mid-connection."""
        self._refill(now)
        self.impairment = dataclasses.replace(self.impairment, rate_kbit=rate_kbit)
        self._set_rate(rate_kbit)
        self._tokens = min(self._tokens, self._depth) if self._rate is not None else 0.0
        self._refilled = now

    def push(self, now: float, nbytes: int) -> float:
        """Queue ``nbytes`` read at ``now``; return their due time (before stalls and the rate cap)."""
        if nbytes <= 0:
            raise ValueError("a chunk has at least one byte")
        imp = self.impairment
        # both draws every time, so the loss pattern of a seed does not depend on the jitter setting
        extra = self._rng.uniform(-imp.jitter_ms, imp.jitter_ms)
        lost = self._rng.random() < imp.loss_stall_p
        due = max(self._last_due, now + max(0.0, imp.delay_ms + extra) / 1000)
        self._last_due = due
        if not self._chunks:
            self._head_since = now
        self._chunks.append(_Chunk(due, nbytes, lost))
        self.queued += nbytes
        self.chunks += 1
        return due

    def pull(self, now: float) -> tuple[int, float | None]:
        """How many bytes may be written at ``now``, and when to ask again (``None``: queue empty)."""
        chunks = self._chunks
        if not chunks:
            return 0, None
        if chunks[0].due > now:
            return 0, chunks[0].due
        end = self._stall_end(now)
        if end is not None:
            self._capped = False  # stalled, not late: no catching up afterwards
            return 0, end
        self._refill(now)
        budget = math.inf if self._rate is None else math.floor(self._tokens)
        out = 0
        while chunks and out < budget:
            head = chunks[0]
            if head.due > now:
                break
            if head.lost:  # the retransmission stall starts when this chunk could have left
                head.lost = False
                head.due = max(head.due, self._head_since) + self.impairment.loss_stall_ms / 1000
                self._last_due = max(self._last_due, head.due)
                self.loss_stalls += 1
                continue
            take = int(min(head.size, budget - out))
            out += take
            head.size -= take
            if not head.size:
                chunks.popleft()
                self._head_since = now
        self.queued -= out
        if self._rate is not None:
            self._tokens -= out
        return out, self._wake(now)

    def _wake(self, now: float) -> float | None:
        if not self._chunks:
            self._capped = False
            return None
        head = self._chunks[0]
        if head.due > now or self._rate is None:
            self._capped = False
            return head.due
        # the head is due and only the cap holds it: wait until a quantum of tokens has accrued
        self._capped = True
        return now + max((self._quantum - self._tokens) / self._rate, 1e-6)

    def _refill(self, now: float) -> None:
        if self._rate is not None:
            cap = self._catchup if self._capped else self._depth
            self._tokens = min(cap, self._tokens + max(0.0, now - self._refilled) * self._rate)
            self._refilled = now

    def _stall_end(self, now: float) -> float | None:
        """The end of the periodic stall window ``now`` is in, if any (windows start at k × every, k >= 1)."""
        every, length = self.impairment.stall_every_s, self.impairment.stall_ms / 1000
        if every is None or length <= 0:
            return None
        k = math.floor((now - self.start) / every)
        end = self.start + k * every + length
        if k < 1 or now >= end:
            return None
        if k != self._window:
            self._window = k
            self.stalls += 1
        return end


# -- the asyncio adapter -----------------------------------------------------------------------------


@dataclass
class Counters:
    """One direction, summed over all connections (``peak_queued``: the most one connection held)."""

    bytes_in: int = 0  # read from the sender
    bytes_out: int = 0  # written to the receiver
    chunks: int = 0  # reads
    stalls: int = 0  # periodic stall windows that held bytes back
    loss_stalls: int = 0
    pauses: int = 0  # times reading from the sender was paused because the queue was full
    queued: int = 0  # bytes held now
    peak_queued: int = 0
    dropped: int = 0  # bytes still queued when a connection was reset or closed


def _reset(transport: asyncio.Transport) -> None:
    """Close with an RST (SO_LINGER 0), so a reset on one side is a reset on the other."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError, AttributeError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


class _End(asyncio.BufferedProtocol):
    """One socket of a proxied connection (the client's or the target's); every event goes to its ``_Conn``."""

    def __init__(self, conn: _Conn) -> None:
        self.conn = conn
        self.transport: asyncio.Transport | None = None
        self.blocked = False  # our write buffer to it is full
        self.gone = False  # connection_lost was called
        self._buf = memoryview(bytearray(READ_SIZE))

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not an asyncio.Transport subclass
        self.transport.set_write_buffer_limits(high=WRITE_HIGH)
        self.conn.made(self)

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._buf

    def buffer_updated(self, nbytes: int) -> None:
        self.conn.received(self, self._buf[:nbytes])

    def eof_received(self) -> bool:
        self.conn.eof(self)
        return True  # half-open: the other direction goes on

    def pause_writing(self) -> None:
        self.blocked = True

    def resume_writing(self) -> None:
        self.blocked = False
        self.conn.writable(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.gone = True
        self.conn.lost(self, exc)


class _Pipe:
    """One direction of one connection: bytes read from ``src`` wait in ``buf`` until the link lets them go."""

    def __init__(self, conn: _Conn, link: Link, counters: Counters, src: _End, dst: _End, max_queue: int) -> None:
        self.conn, self.link, self.counters, self.src, self.dst = conn, link, counters, src, dst
        self.max_queue = max_queue
        self.buf = bytearray()
        self.timer: asyncio.TimerHandle | None = None
        self.paused = False  # we paused reading from src
        self.eof = False  # src sent EOF
        self.eof_sent = False

    def receive(self, data: memoryview) -> None:
        n, c = len(data), self.counters
        self.buf += data
        self.link.push(self.conn.loop.time(), n)
        c.bytes_in += n
        c.chunks += 1
        c.queued += n
        c.peak_queued = max(c.peak_queued, len(self.buf))
        if len(self.buf) >= self.max_queue and not self.paused and self.src.transport is not None:
            self.paused = True
            c.pauses += 1
            self.src.transport.pause_reading()
        self.kick()

    def kick(self) -> None:
        """Ask the link now, unless a wake-up is already scheduled or the receiver cannot take bytes."""
        if self.timer is None:
            self.tick()

    def tick(self) -> None:
        self.timer = None
        dst = self.dst.transport
        if self.conn.done or dst is None or self.dst.blocked or dst.is_closing():
            return  # ``writable`` / ``made`` kick again
        link, c = self.link, self.counters
        stalls, losses = link.stalls, link.loss_stalls
        n, wake = link.pull(self.conn.loop.time())
        c.stalls += link.stalls - stalls
        c.loss_stalls += link.loss_stalls - losses
        if n:
            data = bytes(self.buf[:n])
            del self.buf[:n]
            c.bytes_out += n
            c.queued -= n
            if self.paused and len(self.buf) <= self.max_queue // 2 and self.src.transport is not None:
                self.paused = False
                self.src.transport.resume_reading()
            dst.write(data)  # may call pause_writing: then no timer, ``writable`` resumes
        if wake is not None:
            if not self.dst.blocked:
                self.timer = self.conn.loop.call_at(wake, self.tick)
        elif self.eof and not self.eof_sent:
            self.eof_sent = True
            if dst.can_write_eof():
                dst.write_eof()
            else:
                dst.close()
            self.conn.maybe_finish()

    def drop(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.counters.queued -= len(self.buf)
        self.counters.dropped += len(self.buf)
        self.buf.clear()


class _Conn:
    """One accepted connection and the one it opened to the target, with a ``_Pipe`` each way."""

    def __init__(self, sim: NetSim, index: int) -> None:
        self.sim = sim
        self.loop = asyncio.get_running_loop()
        self.client, self.server = _End(self), _End(self)
        now = self.loop.time()
        ups, downs = sim.counters_up, sim.counters_down
        up = Link(sim.up, now, f"{sim.up.seed}:{index}:up")
        down = Link(sim.down, now, f"{sim.down.seed}:{index}:down")
        self.up = _Pipe(self, up, ups, self.client, self.server, sim.max_queue_bytes)
        self.down = _Pipe(self, down, downs, self.server, self.client, sim.max_queue_bytes)
        self.done = False
        self.ended: asyncio.Future[None] = self.loop.create_future()  # both sockets are closed
        self.connecting: asyncio.Task[None] | None = None

    def pipe_from(self, end: _End) -> _Pipe:
        return self.up if end is self.client else self.down

    def made(self, end: _End) -> None:
        if self.done:
            assert end.transport is not None
            _reset(end.transport)
        elif end is self.client:
            self.connecting = self.loop.create_task(self._connect())
        else:
            self.up.kick()  # what the client sent while we were connecting
            self.down.kick()

    async def _connect(self) -> None:
        try:
            connect = self.loop.create_connection(lambda: self.server, HOST, self.sim.target_port)
            await asyncio.wait_for(connect, CONNECT_TIMEOUT_S)
        except (OSError, TimeoutError):
            self.sim.connect_errors += 1
            self.finish(abort=True)

    def received(self, end: _End, data: memoryview) -> None:
        if not self.done:
            self.pipe_from(end).receive(data)

    def eof(self, end: _End) -> None:
        pipe = self.pipe_from(end)
        pipe.eof = True
        if not self.done:
            pipe.kick()

    def writable(self, end: _End) -> None:
        if not self.done:
            (self.down if end is self.client else self.up).kick()

    def maybe_finish(self) -> None:
        if self.up.eof_sent and self.down.eof_sent:
            self.finish(abort=False)

    def lost(self, end: _End, exc: Exception | None) -> None:
        if not self.done:
            # a reset (or a socket error) is passed on as a reset; a close we did not ask for, as a close
            if exc is not None:
                self.sim.resets += 1
            self.finish(abort=exc is not None)
        if self.client.gone and (self.server.gone or self.server.transport is None) and not self.ended.done():
            self.ended.set_result(None)

    def finish(self, abort: bool) -> None:
        """End both sockets: with an RST (``abort``), or a close that flushes what was written."""
        if self.done:
            return
        self.done = True
        self.up.drop()
        self.down.drop()
        if self.connecting is not None and not self.connecting.done():
            self.connecting.cancel()
        for end in (self.client, self.server):
            if end.transport is not None and not end.gone:
                if abort:
                    _reset(end.transport)
                else:
                    end.transport.close()
        self.sim.conns.discard(self)


class NetSim:
    """The proxy: 127.0.0.1:``port`` → 127.0.0.1:``target_port``, each direction impaired as told.

    ``up`` and ``down`` default to ``both``, which defaults to a perfect link. ``await start()`` (or
    ``async with``) binds a free port (or ``port``); ``await close()`` resets every connection and stops
    listening; so does ``max_duration_s`` after the start. ``counters()`` is a snapshot for benchmarks,
    safe to call from another thread.
    """

    def __init__(
        self,
        target_port: int,
        up: Impairment | None = None,
        down: Impairment | None = None,
        *,
        both: Impairment | None = None,
        max_queue_bytes: int = MAX_QUEUE,
        max_duration_s: float = MAX_DURATION_S,
        port: int = 0,
    ) -> None:
        if not 0 < target_port < 65536:
            raise ValueError(f"target_port {target_port} is not a TCP port")
        if max_queue_bytes < 1 or not max_duration_s > 0:
            raise ValueError("max_queue_bytes and max_duration_s must be positive")
        base = both if both is not None else Impairment()
        self.target_port = target_port
        self.up = up if up is not None else base
        self.down = down if down is not None else base
        self.max_queue_bytes = max_queue_bytes
        self.max_duration_s = max_duration_s
        self._port = port
        self.counters_up, self.counters_down = Counters(), Counters()
        self.connections = 0  # accepted
        self.connect_errors = 0  # to the target
        self.resets = 0  # connections ended by a reset or a socket error
        self.expired = False  # max_duration_s ran out
        self.conns: set[_Conn] = set()
        self._ending: set[asyncio.Future[None]] = set()
        self._server: asyncio.Server | None = None
        self._expiry: asyncio.TimerHandle | None = None
        self._closing: asyncio.Task[None] | None = None
        self._closed = False
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("NetSim not started")
        return self._port

    async def start(self) -> NetSim:
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._server = await loop.create_server(self._accept, HOST, self._port)
        self._port = self._server.sockets[0].getsockname()[1]
        self._expiry = loop.call_later(self.max_duration_s, self._expire)
        return self

    def _accept(self) -> _End:
        self.connections += 1
        conn = _Conn(self, self.connections)
        if self._closed:
            conn.done = True  # ``made`` resets it
        else:
            self.conns.add(conn)
            self._ending.add(conn.ended)
            conn.ended.add_done_callback(self._ending.discard)
        return conn.client

    def _expire(self) -> None:
        self.expired = True
        self._closing = asyncio.get_running_loop().create_task(self.close())

    async def close(self) -> None:
        """Stop listening and reset every connection; returns when their sockets are closed (or after 2 s)."""
        if self._closed:
            return
        self._closed = True
        if self._expiry is not None:
            self._expiry.cancel()
        if self._server is not None:
            self._server.close()
        for conn in list(self.conns):
            conn.finish(abort=True)
        if self._ending:
            await asyncio.wait(set(self._ending), timeout=2.0)
        if self._server is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)

    async def __aenter__(self) -> NetSim:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def set_rate(self, rate_kbit: float | None, direction: str = "down") -> None:
        """Change the cap of ``direction`` ("up", "down") for the connections open and those to come;
        from any thread when the proxy runs in the background (``running``)."""
        if direction not in ("up", "down"):
            raise ValueError(f"direction is 'up' or 'down', got {direction!r}")
        if rate_kbit is not None and not rate_kbit > 0:
            raise ValueError("rate_kbit must be > 0 (None: no cap)")

        def apply() -> None:
            setattr(self, direction, dataclasses.replace(getattr(self, direction), rate_kbit=rate_kbit))
            for conn in self.conns:
                pipe = getattr(conn, direction)
                pipe.link.set_rate(conn.loop.time(), rate_kbit)
                pipe.kick()

        loop = self._loop
        if loop is not None and loop.is_running():
            try:
                running = asyncio.get_running_loop()
            except RuntimeError:
                running = None
            if running is not loop:
                loop.call_soon_threadsafe(apply)
                return
        apply()

    def counters(self) -> dict[str, Any]:
        """``{"up": {...}, "down": {...}, "connections", "active", "connect_errors", "resets", "expired"}``."""
        return {
            "up": dataclasses.asdict(self.counters_up),
            "down": dataclasses.asdict(self.counters_down),
            "connections": self.connections,
            "active": len(self.conns),
            "connect_errors": self.connect_errors,
            "resets": self.resets,
            "expired": self.expired,
        }

    @classmethod
    @contextlib.contextmanager
    def running(
        cls,
        target_port: int,
        up: Impairment | None = None,
        down: Impairment | None = None,
        *,
        both: Impairment | None = None,
        max_queue_bytes: int = MAX_QUEUE,
        max_duration_s: float = MAX_DURATION_S,
        port: int = 0,
    ) -> Iterator[NetSim]:
        """For sync code: the proxy on its own event loop in a background thread while the block runs."""
        sim = cls(target_port, up, down, both=both, max_queue_bytes=max_queue_bytes,
                  max_duration_s=max_duration_s, port=port)  # fmt: skip
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name=f"netsim-{target_port}", daemon=True)
        thread.start()
        try:
            asyncio.run_coroutine_threadsafe(sim.start(), loop).result(THREAD_TIMEOUT_S)
            yield sim
        finally:
            try:
                asyncio.run_coroutine_threadsafe(sim.close(), loop).result(THREAD_TIMEOUT_S)
            finally:
                loop.call_soon_threadsafe(loop.stop)
                thread.join(THREAD_TIMEOUT_S)
                if not thread.is_alive():
                    loop.close()


# -- as a process ------------------------------------------------------------------------------------


async def _serve(args: argparse.Namespace) -> None:
    imp = Impairment(
        delay_ms=args.delay_ms,
        jitter_ms=args.jitter_ms,
        rate_kbit=args.rate_kbit,
        stall_every_s=args.stall_every_s,
        stall_ms=args.stall_ms,
        loss_stall_p=args.loss_stall_p,
        loss_stall_ms=args.loss_stall_ms,
        seed=args.seed,
    )
    async with NetSim(args.target, both=imp, port=args.port, max_duration_s=args.max_duration_s) as sim:
        print(json.dumps({"message": "netsim listening", "port": sim.port}), file=sys.stderr, flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        while not stop.is_set() and not sim.expired:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)
        print(json.dumps({"message": "netsim stopped", **sim.counters()}), file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="TCP impairment proxy on 127.0.0.1 (the same impairment both ways)")
    p.add_argument("--target", type=int, required=True, help="port on 127.0.0.1 to forward to")
    p.add_argument("--port", type=int, default=0, help="port to listen on (0: a free one)")
    p.add_argument("--delay-ms", type=float, default=0.0)
    p.add_argument("--jitter-ms", type=float, default=0.0)
    p.add_argument("--rate-kbit", type=float, default=None)
    p.add_argument("--stall-every-s", type=float, default=None)
    p.add_argument("--stall-ms", type=float, default=0.0)
    p.add_argument("--loss-stall-p", type=float, default=0.0)
    p.add_argument("--loss-stall-ms", type=float, default=200.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-duration-s", type=float, default=MAX_DURATION_S)
    asyncio.run(_serve(p.parse_args(argv)))


if __name__ == "__main__":
    main()
