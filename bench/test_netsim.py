"""The impairment proxy: its pure scheduling core without sleeps, then real sockets on loopback.

The socket tests assert behaviour with generous bounds only: the machine is shared and noisy, and a
proxy in Python adds its own milliseconds. What must hold exactly: no byte is lost or reordered, the
memory bound, EOF and resets passing through.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import itertools
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import pytest
import uvloop

from .netsim import BURST_S, CATCHUP_S, HOST, READ_SIZE, Impairment, Link, NetSim

T = TypeVar("T")
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def run(coro: Coroutine[Any, Any, T], timeout: float = 20.0, loop: str = "asyncio") -> T:
    """Run on the standard event loop, or on uvloop (what the server and the load client use)."""
    factory = uvloop.new_event_loop if loop == "uvloop" else None
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(asyncio.wait_for(coro, timeout))


LOOPS = pytest.mark.parametrize("loop", ["asyncio", "uvloop"])


# -- the pure core -----------------------------------------------------------------------------------


def drive(
    link: Link, arrivals: list[tuple[float, int]], until: float, step: float | None = None
) -> list[tuple[float, int]]:
    """Feed ``arrivals`` (time, bytes) and pull at every wake-up (or every ``step``): the (time, bytes) released."""
    out: list[tuple[float, int]] = []
    pending = deque(sorted(arrivals))
    now = pending[0][0] if pending else 0.0
    while now <= until:
        while pending and pending[0][0] <= now:
            link.push(*pending.popleft())
        n, wake = link.pull(now)
        if n:
            out.append((now, n))
        if step is not None and (link.queued or pending):
            now += step
            continue
        later = [t for t in (wake, pending[0][0] if pending else None) if t is not None]
        if not later:
            break
        now = min(later)
    return out


def at(link: Link, now: float) -> tuple[int, float | None]:
    """``link.pull(now)`` with the wake-up rounded to the µs, to compare with literals."""
    n, wake = link.pull(now)
    return n, None if wake is None else round(wake, 6)


def test_delay_releases_each_chunk_after_the_delay() -> None:
    link = Link(Impairment(delay_ms=100), start=0.0)
    assert link.push(0.0, 100) == pytest.approx(0.1)
    assert link.push(0.05, 50) == pytest.approx(0.15)
    assert at(link, 0.05) == (0, 0.1)
    assert at(link, 0.1) == (100, 0.15)
    assert at(link, 0.149) == (0, 0.15)
    assert link.pull(0.2) == (50, None)  # late is harmless
    assert link.queued == 0 and link.pull(1.0) == (0, None)


def test_perfect_link_releases_at_once() -> None:
    link = Link(Impairment(), start=0.0)
    link.push(1.0, 10)
    assert link.pull(1.0) == (10, None)


def test_jitter_never_reorders_and_stays_within_bounds() -> None:
    link = Link(Impairment(delay_ms=50, jitter_ms=20, seed=7), start=0.0)
    arrivals = [i * 0.001 for i in range(2000)]
    dues = [link.push(t, 1) for t in arrivals]
    assert all(b >= a for a, b in itertools.pairwise(dues))  # byte order kept
    extra = [d - t for d, t in zip(dues, arrivals, strict=True)]
    assert min(extra) >= 0.030 - 1e-9 and max(extra) <= 0.070 + 1e-9
    # chunks far enough apart that the order does not pin them: the jitter shows, uniform in ±20 ms
    link = Link(Impairment(delay_ms=50, jitter_ms=20, seed=7), start=0.0)
    sparse = [link.push(i * 0.05, 1) - i * 0.05 for i in range(1000)]
    assert min(sparse) >= 0.030 - 1e-9 and max(sparse) <= 0.070 + 1e-9
    assert min(sparse) < 0.032 and max(sparse) > 0.068 and sum(sparse) / len(sparse) == pytest.approx(0.05, abs=0.002)
    # a jitter larger than the delay is clipped at the arrival, never before it
    link = Link(Impairment(delay_ms=5, jitter_ms=50), start=0.0)
    assert all(link.push(t, 1) >= t for t in arrivals)


def test_rate_cap_over_a_simulated_second() -> None:
    cap = 256  # kbit/s: 32 000 bytes/s
    for step in (0.001, 0.0037, 0.02):  # a punctual loop, an irregular one, a sluggish one: the average holds
        link = Link(Impairment(rate_kbit=cap), start=0.0)
        out = drive(link, [(0.0, 1_000_000)], until=1.0, step=step)
        total, last = sum(n for _, n in out), out[-1][0]  # (the last pull of a coarse step is before 1 s)
        assert last > 0.97 and 32_000 * last * 0.99 <= total <= 32_000 * last + 32_000 * BURST_S + 1, step
        # fine grain: a write is what the time since the last one allows (plus the idle burst), no more
        assert max(n for _, n in out) <= 32_000 * max(step, BURST_S) + 1, step
    # a loop later than CATCHUP_S loses rate rather than sending a big burst
    link = Link(Impairment(rate_kbit=cap), start=0.0)
    out = drive(link, [(0.0, 1_000_000)], until=1.0, step=0.2)
    assert max(n for _, n in out) <= 32_000 * CATCHUP_S + 1
    # the wake-ups of an undisturbed link come every quantum (1 ms) with ~1 ms of bytes
    link = Link(Impairment(rate_kbit=cap), start=0.0)
    out = drive(link, [(0.0, 1_000_000)], until=0.5)
    sizes = [n for _, n in out[2:]]
    assert sizes and max(sizes) <= 33 and sum(n for _, n in out) == pytest.approx(16_000, rel=0.02)


def test_rate_cap_with_delay_starts_after_the_delay() -> None:
    link = Link(Impairment(delay_ms=100, rate_kbit=80), start=0.0)  # 10 000 bytes/s
    out = drive(link, [(0.0, 5_000)], until=2.0)
    assert out[0][0] == pytest.approx(0.1)
    assert out[-1][0] == pytest.approx(0.6, abs=0.01) and sum(n for _, n in out) == 5_000


def test_periodic_stall_holds_everything_for_its_length() -> None:
    link = Link(Impairment(stall_every_s=1.0, stall_ms=200), start=10.0)
    link.push(10.5, 1)
    assert link.pull(10.5) == (1, None)  # the first window is at start + 1 s
    link.push(11.05, 7)
    assert at(link, 11.05) == (0, 11.2)
    assert link.pull(11.2) == (7, None)
    link.push(12.1, 3)
    link.push(12.15, 3)
    assert at(link, 12.15) == (0, 12.2)
    assert link.pull(12.2) == (6, None)
    assert link.stalls == 2


def test_rate_cap_resumes_after_a_stall_without_a_burst() -> None:
    link = Link(Impairment(rate_kbit=256, stall_every_s=1.0, stall_ms=500), start=0.0)
    out = drive(link, [(0.0, 100_000)], until=2.0)
    assert not [t for t, _ in out if 1.0 <= t < 1.5]
    after = [n for t, n in out if t >= 1.5]
    assert after[0] <= 32_000 * BURST_S + 1 and max(after[1:]) <= 33  # the idle bucket, then 1 ms at a time
    assert sum(n for t, n in out if t < 1.0) == pytest.approx(32_000, rel=0.02)
    assert sum(after) == pytest.approx(16_000, rel=0.02)


def test_stall_every_must_exceed_the_stall() -> None:
    with pytest.raises(ValueError, match="stall_every_s"):
        Impairment(stall_every_s=0.1, stall_ms=100)
    with pytest.raises(ValueError, match="loss_stall_p"):
        Impairment(loss_stall_p=1.5)
    with pytest.raises(ValueError, match="delay_ms"):
        Impairment(delay_ms=-1)


def test_loss_stalls_are_seeded_and_hold_what_follows() -> None:
    arrivals = [(i * 0.01, 100) for i in range(300)]

    def releases(seed: int, p: float = 0.05) -> tuple[list[tuple[float, int]], int]:
        link = Link(Impairment(delay_ms=10, loss_stall_p=p, loss_stall_ms=200), start=0.0, seed=seed)
        return drive(link, arrivals, until=60.0), link.loss_stalls

    a, stalls = releases(1)
    assert releases(1) == (a, stalls)  # deterministic
    assert releases(2)[0] != a
    assert 3 <= stalls <= 40 and sum(n for _, n in a) == 30_000
    times = [t for t, _ in a]
    assert times == sorted(times)
    gaps = [b - t for t, b in itertools.pairwise(times)]
    assert sum(g >= 0.19 for g in gaps) >= 1  # a stall is a pause, then the backlog at once
    # every chunk lost: each waits 200 ms after the one before it could leave
    link = Link(Impairment(loss_stall_p=1.0, loss_stall_ms=200), start=0.0)
    out = drive(link, [(0.0, 1), (0.0, 1), (0.0, 1)], until=5.0)
    assert [t for t, _ in out] == pytest.approx([0.2, 0.4, 0.6])
    assert releases(1, p=0.0)[1] == 0


def test_loss_stall_under_a_backlog_still_stalls() -> None:
    # a rate-capped backlog: the lost chunk's own due time is long past when it reaches the head
    link = Link(Impairment(rate_kbit=80, loss_stall_p=1.0, loss_stall_ms=300), start=0.0)
    out = drive(link, [(0.0, 2_000), (0.0, 2_000)], until=5.0)
    times = [t for t, _ in out]
    assert times[0] >= 0.3  # before the first chunk
    gaps = [b - t for t, b in itertools.pairwise(times)]
    assert max(gaps) >= 0.29 and sum(n for _, n in out) == 4_000
    assert times[-1] == pytest.approx(0.3 + 0.2 + 0.3 + 0.2, abs=0.01)


# -- real sockets on loopback ------------------------------------------------------------------------


async def serve(handler: Handler) -> tuple[asyncio.Server, int]:
    async def guarded(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(guarded, HOST, 0)
    return server, server.sockets[0].getsockname()[1]


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()


async def sink(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while await reader.read(65536):
        pass


def pattern(nbytes: int) -> bytes:
    """Numbered 32-bit words: any lost, duplicated or reordered byte shows."""
    return array.array("I", range(nbytes // 4)).tobytes()


async def roundtrip(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, msg: bytes = b"ping") -> float:
    t0 = time.monotonic()
    writer.write(msg)
    await reader.readexactly(len(msg))
    return time.monotonic() - t0


def test_round_trip_is_twice_the_delay() -> None:
    async def main() -> None:
        server, port = await serve(echo)
        async with server, NetSim(port, both=Impairment(delay_ms=100)) as sim:
            reader, writer = await asyncio.open_connection(HOST, sim.port)
            rtts = [await roundtrip(reader, writer) for _ in range(3)]
            writer.close()
            assert all(0.18 <= r <= 0.4 for r in rtts), rtts
        c = sim.counters()
        assert c["up"]["bytes_in"] == c["up"]["bytes_out"] == 12 == c["down"]["bytes_out"]

    run(main())


def test_bandwidth_cap_passes_the_rate() -> None:
    async def source(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(bytes(1_000_000))
        await writer.drain()

    async def main() -> None:
        server, port = await serve(source)
        async with server, NetSim(port, down=Impairment(rate_kbit=256)) as sim:
            reader, writer = await asyncio.open_connection(HOST, sim.port)
            got = len(await reader.read(65536))
            t0 = time.monotonic()
            while time.monotonic() - t0 < 2.0:
                with contextlib.suppress(TimeoutError):
                    got += len(await asyncio.wait_for(reader.read(65536), 0.05))
            writer.close()
        assert 32_000 * 2 * 0.7 <= got <= 32_000 * 2 * 1.3, got

    run(main())


def test_periodic_stall_delays_delivery() -> None:
    async def main() -> None:
        server, port = await serve(echo)
        async with server, NetSim(port, up=Impairment(stall_every_s=1.2, stall_ms=1000)) as sim:
            reader, writer = await asyncio.open_connection(HOST, sim.port)
            t0 = time.monotonic()
            assert await roundtrip(reader, writer) < 0.3
            await asyncio.sleep(1.3 - (time.monotonic() - t0))  # into the window [1.2 s, 2.2 s)
            stalled = await roundtrip(reader, writer)
            writer.close()
            assert 0.6 <= stalled <= 1.5, stalled
            assert sim.counters()["up"]["stalls"] == 1

    run(main())


def test_loss_stall_delays_delivery() -> None:
    async def main() -> None:
        server, port = await serve(echo)
        async with server, NetSim(port, up=Impairment(loss_stall_p=1.0, loss_stall_ms=300)) as sim:
            reader, writer = await asyncio.open_connection(HOST, sim.port)
            rtt = await roundtrip(reader, writer)
            writer.close()
            assert 0.28 <= rtt <= 0.8, rtt
            assert sim.counters()["up"]["loss_stalls"] == 1

    run(main())


@LOOPS
def test_no_byte_lost_or_reordered_through_every_impairment(loop: str) -> None:
    data = pattern(2_000_000)
    imp = Impairment(delay_ms=2, jitter_ms=3, loss_stall_p=0.02, loss_stall_ms=10, rate_kbit=200_000, seed=3)

    async def main() -> None:
        server, port = await serve(echo)
        async with server, NetSim(port, both=imp) as sim:
            reader, writer = await asyncio.open_connection(HOST, sim.port)

            async def send() -> None:
                for at in range(0, len(data), 4096):  # many small chunks, so jitter has something to reorder
                    writer.write(data[at : at + 4096])
                    if at % 65536 == 0:
                        await writer.drain()
                await writer.drain()
                writer.write_eof()

            sending = asyncio.create_task(send())
            got = await reader.read(-1)  # to the EOF that came back from the echo server
            await sending
            writer.close()
            assert got == data
            c = sim.counters()
            assert c["up"]["bytes_in"] == c["up"]["bytes_out"] == len(data) == c["down"]["bytes_out"]
            assert c["up"]["chunks"] > 10 and c["up"]["queued"] == 0

    run(main(), loop=loop)


def test_fast_sender_is_held_back_not_buffered() -> None:
    async def main() -> None:
        server, port = await serve(sink)
        async with server, NetSim(port, up=Impairment(rate_kbit=64)) as sim:
            _, writer = await asyncio.open_connection(HOST, sim.port)
            writer.write(bytes(20_000_000))
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(writer.drain(), 2.0)
            c = sim.counters()["up"]
            bound = sim.max_queue_bytes + READ_SIZE
            assert c["pauses"] >= 1 and c["peak_queued"] <= bound, c
            assert c["bytes_in"] <= bound + c["bytes_out"], c  # the rest waits in the sender's socket
            assert 8_000 * 2 * 0.5 <= c["bytes_out"] <= 8_000 * 2 * 1.5, c
            assert writer.transport.get_write_buffer_size() > 10_000_000  # the sender sees a full socket
            writer.transport.abort()

    run(main())


@LOOPS
def test_slow_receiver_is_bounded_then_gets_everything_in_order(loop: str) -> None:
    data = pattern(8_000_000)

    async def source(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(data)
        await writer.drain()

    async def main() -> None:
        server, port = await serve(source)
        async with server, NetSim(port) as sim:
            reader, writer = await asyncio.open_connection(HOST, sim.port, limit=2**16)
            await asyncio.sleep(1.0)  # not reading: the proxy's write buffer fills, then its queue, then it stops
            c = sim.counters()["down"]
            assert c["pauses"] >= 1 and c["peak_queued"] <= sim.max_queue_bytes + READ_SIZE, c
            assert c["bytes_in"] - c["bytes_out"] <= sim.max_queue_bytes + READ_SIZE, c
            assert c["bytes_in"] < len(data)  # it stopped reading
            got = await reader.readexactly(len(data))
            writer.close()
            assert got == data

    run(main(), loop=loop)


def test_half_close_passes_through_both_ways() -> None:
    async def reply_after_eof(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        got = await reader.read(-1)  # the client's EOF reached us
        writer.write(b"got " + got)
        await writer.drain()

    async def main() -> None:
        server, port = await serve(reply_after_eof)
        async with server, NetSim(port, both=Impairment(delay_ms=20)) as sim:
            reader, writer = await asyncio.open_connection(HOST, sim.port)
            writer.write(b"hello")
            writer.write_eof()
            assert await asyncio.wait_for(reader.read(-1), 5) == b"got hello"  # and the server's EOF
            writer.close()
            await asyncio.sleep(0.1)
            assert sim.counters()["active"] == 0

    run(main())


def _linger0(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


@LOOPS
def test_resets_pass_through_both_ways(loop: str) -> None:
    seen: list[str] = []

    async def server_resets(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if await reader.read(1) == b"r":
            _linger0(writer)
            return
        try:
            await reader.read(1)  # the client resets
            seen.append("eof")
        except ConnectionResetError:
            seen.append("reset")

    async def main() -> None:
        server, port = await serve(server_resets)
        async with server, NetSim(port) as sim:
            reader, writer = await asyncio.open_connection(HOST, sim.port)
            writer.write(b"r")
            with pytest.raises(ConnectionResetError):
                await asyncio.wait_for(reader.read(10), 5)
            writer.close()
            reader, writer = await asyncio.open_connection(HOST, sim.port)
            writer.write(b"x")
            await asyncio.sleep(0.1)
            _linger0(writer)
            for _ in range(50):
                if seen:
                    break
                await asyncio.sleep(0.02)
            assert seen == ["reset"]
            assert sim.counters()["resets"] == 2

    run(main(), loop=loop)


def test_close_and_max_duration_end_every_connection() -> None:
    async def main() -> None:
        server, port = await serve(echo)
        async with server:
            sim = await NetSim(port).start()
            reader, _ = await asyncio.open_connection(HOST, sim.port)
            await asyncio.sleep(0.05)
            t0 = time.monotonic()
            await sim.close()
            with contextlib.suppress(ConnectionResetError):
                assert await asyncio.wait_for(reader.read(10), 2) == b""
            assert time.monotonic() - t0 < 2.5 and sim.counters()["active"] == 0
            with pytest.raises(OSError):
                await asyncio.open_connection(HOST, sim.port)

            sim = await NetSim(port, max_duration_s=0.3).start()
            reader, _ = await asyncio.open_connection(HOST, sim.port)
            with contextlib.suppress(ConnectionResetError):
                assert await asyncio.wait_for(reader.read(10), 3) == b""
            await asyncio.sleep(0.05)
            assert sim.counters()["expired"] and sim.counters()["active"] == 0

    run(main())


def test_target_refusing_resets_the_client() -> None:
    with socket.socket() as s:
        s.bind((HOST, 0))
        closed_port = s.getsockname()[1]  # nothing listens here once it is closed

    async def main() -> None:
        async with NetSim(closed_port) as sim:
            reader, _ = await asyncio.open_connection(HOST, sim.port)
            with contextlib.suppress(ConnectionResetError):
                assert await asyncio.wait_for(reader.read(10), 5) == b""
            assert sim.counters()["connect_errors"] == 1

    run(main())


def test_running_from_sync_code() -> None:
    listener = socket.create_server((HOST, 0))
    listener.settimeout(5)

    def echo_once() -> None:
        with contextlib.suppress(OSError):
            conn, _ = listener.accept()
            with conn:
                while data := conn.recv(65536):
                    conn.sendall(data)

    thread = threading.Thread(target=echo_once, daemon=True)
    thread.start()
    try:
        with NetSim.running(listener.getsockname()[1], both=Impairment(delay_ms=30)) as sim:
            with socket.create_connection((HOST, sim.port), timeout=5) as client:
                t0 = time.monotonic()
                client.sendall(b"hi")
                assert client.recv(2) == b"hi"
                assert 0.05 <= time.monotonic() - t0 <= 0.5
            assert sim.counters()["up"]["bytes_out"] == 2
    finally:
        listener.close()
        thread.join(5)


def test_a_cap_changed_mid_connection_takes_effect_at_once() -> None:
    link = Link(Impairment(rate_kbit=80), start=0.0)  # 10 000 bytes/s
    first = drive(link, [(0.0, 1_000_000)], until=1.0)
    assert sum(n for _, n in first) == pytest.approx(10_000, rel=0.05)
    link.set_rate(1.0, 800)  # ten times faster from 1 s on
    second = sum(link.pull(1.0 + k / 1000)[0] for k in range(1, 1001))
    assert second == pytest.approx(100_000, rel=0.05)
    link.set_rate(2.0, None)  # no cap at all: the rest goes at once
    n, _ = link.pull(2.0)
    assert n == 1_000_000 - sum(n for _, n in first) - second
