"""The scheduler: one task serves every session — due times, reads by sequence, sends in place.

A heap of due times says which sessions may send now (a burst up to ``prebuffer_ms``, then one
frame per period). The scheduler reads their frames by sequence number (through the ring's gating
reader, so the worker's watermark follows what was actually sent), builds each WebSocket message in
place and writes it to the socket without awaiting, and holds back a client that has not consumed
what it was sent (under ``block`` the ring then fills and the worker waits: nothing is lost; under
``drop_oldest`` the next read reports the gap). Worker events wake it from the pool's thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time

import numpy as np
from websockets.asyncio.server import broadcast
from websockets.protocol import State

from .. import logs
from .. import wire as P
from ..errors import RingClosed
from ..stream import FLAG_FIRST
from . import backlog
from .formats import SEND_AS_IS, SEND_F32, Formats
from .pacing import batch_slack
from .session import Session

log = logging.getLogger("ringaudio.server")
WATCH_EVERY = 0.2  # s: how often each session's queue depth is compared with the watermarks ...
# ... a slice of the sessions each pass over the first WATCH_SPREAD of that time: a look at a thousand
# at once (their depth reads and pings) would hold up every lane due in that pass by milliseconds
WATCH_SPREAD = 0.75
SLOW_CLEAR = 5.0  # a slow-client episode ends when the client has kept up this long (s)
OVER_RECENT = 0.5  # s: a session held back this recently counts as congested for adaptive quality
UNDERRUN_HOLD = 1.0  # s: a client's reported underrun makes its session count as congested this long
MAX_EVENT_ROUNDS = 8  # reads in one pass that may yield only events (then the pass ends: bounded)
OPEN = State.OPEN
_pack = P.HEADER.pack_into


class Scheduling(Formats):
    def _watch(self, sessions: list[Session], now: float) -> None:
        """Backpressure episodes: a session's depth crossing its high watermark starts one (counted,
        logged with the real depth), coming back below the low one ends it (logged); adaptive
        quality's look at each session, and its round trip's ping when one is due."""
        for s in sessions:
            if s.closing or self.sessions.get(s.id) is not s:  # (gone since the round began)
                continue
            try:
                self._watch_one(s, now)
            except Exception:  # one session's figures must not cost the others their look
                log.exception("watch failed", extra={"session_id": s.id})

    def _watch_one(self, s: Session, now: float) -> None:
        self._measure_rtt(s, now)
        if s.quality is not None:
            self._adapt(s, now)
        depth = self.depth(s)
        if depth is not None:
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

    def _adapt(self, s: Session, now: float) -> None:
        """Congested (held back, or the client reporting underruns) or not: maybe a level change."""
        assert s.quality is not None
        if s.underruns > s.underruns_seen:  # acks come every few hundred ms: one counts for UNDERRUN_HOLD
            s.underruns_seen, s.underran_at = s.underruns, now
        stream = s.stream
        if stream is None or stream.encoding == "opus" or (s.wire_format is not None and s.wire_format[2] == "opus"):
            return  # Opus sessions keep their level (~40 kbit/s); a listener hears its owner's
        streaming = s.source is not None and not s.source.paused and s.source.busy
        # held back in the last half second (not the slow-client episode, which outlasts it by SLOW_CLEAR)
        congested = streaming and (now - s.over_at < OVER_RECENT or now - s.underran_at < UNDERRUN_HOLD)
        before = s.quality.level
        level = s.quality.observe(now, congested)
        if level is None:
            return
        direction = "down" if level > before else "up"
        rate, frame_ms = self.levels[level]
        self._apply_level(s, stream, level, "congestion" if direction == "down" else "recovered")
        self.metrics.quality_changes.labels(direction).inc()
        logs.event(
            log,
            logging.WARNING if direction == "down" else logging.INFO,
            "Quality level changed",
            s.id,
            direction=direction,
            quality_level=level,
            sample_rate=rate,
            frame_ms=frame_ms,
            held_back=now - s.over_at < OVER_RECENT,
            underruns=s.underruns,
        )

    async def _ticker(self) -> None:
        try:
            await self._tick()
        finally:
            self._eject_all()  # their rings' buffers and socket descriptors go back before the arena

    async def _tick(self) -> None:
        schedule, engine, wake = self.schedule, self.engine, self._wake
        folded = watched = time.monotonic()
        watching: list[Session] = []  # this round's sessions, looked at up to [looked]
        looked = 0
        steady = self._steady
        while not self.stopping.is_set():
            wake.clear()
            try:
                for stream in engine.poll():  # worker events: utterance ends, failures, cancels
                    s = self.sessions.get(stream.id)
                    if s is not None:
                        self._eject_with_listeners(s)
                        self._flush(s)
                        for listener in s.listeners:
                            self._flush(listener)
                        self._touch(s)
            except Exception:  # the scheduler of every session must not die of one event
                log.exception("worker event failed")
            now = time.monotonic()
            now_us = int(time.time() * 1e6)
            due: list[Session] = []
            if self.lanes is not None:
                try:
                    due = self._run_lanes(now, now_us, self.slack)
                except Exception:  # (memory): every session goes back to Python, where nothing is lost
                    log.exception("lanes failed")
                    self._eject_all(reschedule=True)
            due += schedule.pop_due(now + self.slack)
            if due:
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
                self._write_out()
                try:
                    for s, again in steady:  # all steady, nothing queued: the kernel serves it from here
                        if s.lane < 0 and self._admit(s, again):
                            schedule.discard(s)
                except Exception:  # (memory): that session stays in Python
                    log.exception("lane admission failed")
                steady.clear()
            if looked >= len(watching) and now - watched >= WATCH_EVERY:  # a new round, from when it was due
                # (one that comes late, after an idle loop's second, is taken whole in this pass)
                late = now - watched >= 2 * WATCH_EVERY
                watched = now - WATCH_EVERY * WATCH_SPREAD if late else watched + WATCH_EVERY
                watching, looked = list(self.sessions.values()), 0
            upto = min(len(watching), math.ceil(len(watching) * (now - watched) / (WATCH_EVERY * WATCH_SPREAD)))
            if upto > looked:
                self._watch(watching[looked:upto], now)  # (each session's look catches its own failure)
                looked = upto
            if now - folded > 1.0:
                folded = now
                # the slack batches Python pumps; a lane costs next to nothing per pass
                self.slack = batch_slack(len(self.sessions) - (self.lanes.count if self.lanes is not None else 0))
                self.metrics.interval.fold()
                self.metrics.jitter.fold()
                if self.collections.maybe(now, len(self.sessions)):
                    c = self.collections
                    log.debug("full collection", extra={"ms": round(c.last_ms, 2), "freed": c.freed})
                self._reap_idle(now)
                if engine.fatal and not self.exit_code:  # the workers gave up: so does the server
                    logs.event(log, logging.CRITICAL, "server failed", None, error=engine.fatal)
                    self.exit_code = 1
                    self.stopping.set()
            next_due = schedule.next_due()
            if self._lane_next < (next_due if next_due is not None else float("inf")):
                next_due = self._lane_next
            # idle: one wake-up a second (the figures, idle reaping, the collector's schedule) until
            # a command or a worker event. (asyncio.timeout, not wait_for: on Python 3.11 wait_for
            # can swallow the cancellation that stops this task.)
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
        if s.lane >= 0:  # (scheduled while in a lane: the lane's state first)
            self._eject(s, reschedule=False)
        source = s.source
        if source is None:
            return None
        st = source.state
        if st.paused:
            return None
        ws = s.ws
        transport = ws.transport
        if transport is None or transport.is_closing() or ws.protocol.state is not OPEN:
            return None
        if now - s.backlog_at >= backlog.REFRESH and s.sock is not None:
            probe = backlog.probe(s.sock)
            if probe.window is not None and probe.window > s.max_window:
                s.max_window = probe.window
            s.kernel_backlog = backlog.unconsumed(0, probe, s.max_window)
            s.backlog_at = now
            s.outq, s.window = probe.outq, probe.window
            # what the client has consumed so far, in frames: what it was sent, less what it has not read
            s.consumed.append(
                (now, s.frames_sent - (transport.get_write_buffer_size() + s.kernel_backlog) / s.frame_bytes)
            )
            if probe.outq == 0 and s.kernel_backlog > s.send_limit and not s.probing:
                # all acknowledged and only the client's window says it has not read: ask it
                self._spawn(self._ping(s))
        buffered = transport.get_write_buffer_size()
        unconsumed = buffered + s.kernel_backlog
        if unconsumed > s.send_limit:  # sent and not read: hold the rest back (block: the ring fills)
            s.over_at = now
            if not s.slow:  # a new episode: one line for it, not one per frame it holds back
                s.slow = True
                logs.event(
                    log,
                    logging.WARNING,
                    "Client not consuming frames fast enough",
                    s.id,
                    sequence=source.position,
                    unconsumed_frames=unconsumed // s.frame_bytes,
                    queue_size=self.depth(s),
                )
                self.metrics.slow_clients.inc()
                s.slow_episodes += 1
                s.slow_started = now
            s.slow_since = now
            return now + self.period
        if s.slow and now - s.slow_since > SLOW_CLEAR:  # it kept up for a while: the episode is over
            s.slow = False
            logs.event(log, logging.INFO, "Client consuming again", s.id, sequence=source.position)
        pacer = s.pacer
        # a session is taken up to self.slack early (with the others due then): its frame counts as due
        allowance = pacer.allowance(now, self.slack)
        sent = 0
        frame, pcm, offset, sent_at = s.frame, s.pcm, s.offset, s.sent_at
        events = st.events
        # frames as they are over a plain connection: each read is the whole message (one kernel call),
        # written with the pass's others at its end (_write_out)
        whole = s.raw and s.send_mode == SEND_AS_IS
        out = self._out
        self._out_owner, self._out_from = s, len(out)
        rounds = allowance + MAX_EVENT_ROUNDS
        fast = False
        if (
            whole
            and not buffered
            and allowance
            and s.sock is not None
            and not self.debug_frames
            and s.ring_format == source.format_word  # (else the long way reads first: a new format)
        ):
            # the steady state, in one kernel call: frames like the last one read, straight to the
            # socket (nothing is queued for it, so nothing can be overtaken); it stops at whatever
            # needs a look (a boundary, a flag, an event, an overrun) for the loop below to read
            sent, rest, waiting = source.send_frames(s.sock.fileno(), now_us, allowance)
            if sent:
                if rest is not None:
                    out.append((transport, rest))
                if len(sent_at) > 512:
                    sent_at.clear()
                for seq in range(st.cursor - sent, st.cursor):
                    sent_at[seq] = now
            if waiting and not events:
                rounds = 0  # the next frame is not written yet: nothing more to read now
            # all it was allowed, or all there was (the next frame is not written yet: a lane
            # looks for it again after poll_interval, in C, as this pump would in Python)
            fast = rest is None and (sent == allowance or (waiting and not events))
        for _ in range(rounds):
            if sent >= allowance:
                break
            # A read returns a frame, or None; what it queued as events goes out next, after the frame
            # it returned (an utterance.end) or before the one the next read returns (an overrun, an
            # utterance.start, a failure after the frames it wrote).
            if whole:
                message = source.read_message(now, now_us)
                if got := message is not None:
                    msg, seq, uid, flags = message  # type: ignore[misc]
            else:
                label = source.read_into(pcm, now)
                if got := label is not None:
                    seq, uid, flags = label  # type: ignore[misc]
            if got:
                if source.format_word != s.ring_format:  # a new format (or the client asked for one)
                    self._reformat(s, source.format_word)
                    if whole and s.send_mode != SEND_AS_IS:  # sent converted from now on: the long way
                        whole = False
                        self._write_own(s)
                        n = source.payload_bytes
                        s.pcm.view(np.uint8)[:n] = np.frombuffer(msg, np.uint8, n, len(msg) - n)
                mode = s.send_mode
                if whole:
                    out.append((transport, msg))
                elif mode == SEND_AS_IS:
                    _pack(frame, offset, P.MAGIC, P.VERSION, flags, uid & 0xFFFFFFFF, seq, now_us)
                    if s.raw:
                        transport.write(bytes(frame))  # a copy: the transport may keep it while the buffer is reused
                    else:  # an extension (permessage-deflate) was negotiated: the library frames it
                        broadcast([ws], memoryview(frame)[offset:])
                elif mode == SEND_F32:
                    self._send_f32(s, (P.MAGIC, P.VERSION, flags, uid & 0xFFFFFFFF, seq, now_us))
                else:
                    _pack(frame, offset, P.MAGIC, P.VERSION, flags, uid & 0xFFFFFFFF, seq, now_us)
                    self._send_packet(s, source.payload_bytes)
                sent += 1
                if self.debug_frames:
                    logs.event(
                        log, logging.DEBUG, "frame sent", s.id, sequence=seq, frame_sequence=seq, utterance_id=uid
                    )
                if flags & FLAG_FIRST and source.owner:
                    self.metrics.first_audio.observe(source.first_audio_ms)
                if len(sent_at) > 512:
                    sent_at.clear()
                sent_at[seq] = now
            if events:
                self._flush(s)
            elif not got:
                break
        if sent:
            self.metrics.totals.frames_sent += sent
            s.frames_sent += sent
            due = pacer.spent(sent, now)
            if s.last_send and now != s.last_send:  # (a lane that stopped this pass sent before: one send)
                interval = (now - s.last_send) * 1000
                self._intervals(interval)
                if s.last_interval:
                    self._jitters(abs(interval - s.last_interval))
                s.last_interval = interval
            s.last_send = now
            if sent == allowance:
                if fast and not events and self.lanes is not None:
                    self._steady.append((s, due))
                return due
        elif not allowance:
            return pacer.next_due(now)
        if not source.busy:
            return None  # idle
        again = now + self.poll_interval  # waiting for the worker
        if fast and not events and self.lanes is not None:
            self._steady.append((s, again))
        return again
