"""Lanes: the steady state of every session that has nothing else to say, served by one kernel call
per pass (``Lanes.run`` of the C kernels) instead of one Python pump per session.

A session enters a lane after a pump that sent all it was allowed the fast way (``send_frames``),
with nothing queued on its transport: from then on the kernel paces it (the same token bucket as
:class:`~.pacing.Pacer`), reads its frames and writes them to its socket. The kernel gives a lane back
(:meth:`Laning._eject`) at whatever needs a look — a frame not like the last, an event's position,
an overrun, a socket that did not take everything, or a client's backlog over its send limit (the
kernel reads it every :data:`backlog.REFRESH` as the pump does, and hands the readings back with the
lane) — and the server takes it back before anything else touches the session: a command from its
client, a worker event, a closing handshake, its close. A session is in exactly one of: a lane, the
schedule, neither (idle or paused).

The invariant that makes it safe: while a session is in a lane nothing but the lane writes to its
socket, and nothing was queued on its transport when it entered. What the library writes for it (a
ping, a pong, our events) the lane writes between its frames (``Connection.send_data`` hands it to
:meth:`Laning._send_from_lane`); every other write takes the session out of its lane first (the
pump does), so frames and other messages keep their order and a message is never split.
"""

from __future__ import annotations

import contextlib
import logging
import random
from typing import Any

from websockets.protocol import State

from ..kernels import backend
from ..ring import futex
from . import backlog
from .session import ServerBase, Session

log = logging.getLogger("ringaudio.server")
_Lanes: Any = getattr(backend.hot, "Lanes", None) if futex.AVAILABLE else None
_VISIT: int = getattr(backend.hot, "VISIT", -1)
OPEN = State.OPEN
# A lane's first reading of its client's backlog comes backlog.REFRESH after the pump's last, and up to
# VISIT_SPREAD of that later: sessions that started together would otherwise all read theirs in the
# same passes, a burst of syscalls that delays every other frame of those passes
VISIT_SPREAD = 0.4


def _lane_cap() -> int:
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard == resource.RLIM_INFINITY or hard > soft:
            want = hard if hard != resource.RLIM_INFINITY else max(soft, 65_536)
            with contextlib.suppress(ValueError, OSError):
                resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
            soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    except ImportError:  # not POSIX: no lanes either
        return 0
    return max(0, (soft - 256) // 2)


class Laning(ServerBase):
    lanes: Any = None  # the C kernels' Lanes, once the server runs (None: every session is pumped)
    _lane_next = float("inf")

    def _init_lanes(self, enabled: bool) -> None:
        self.lanes: Any = _Lanes() if enabled and _Lanes is not None else None
        # each lane holds a descriptor of its session's socket: they may take at most half of what
        # is left of the process's limit (raised to its hard limit here), never a new connection's
        self._lane_cap = _lane_cap() if self.lanes is not None else 0
        self._lane_of: list[Session | None] = []  # by lane slot
        self._lane_free: list[int] = []
        self._lane_next = float("inf")  # the earliest due time of a lane, as the last run said

    def _admit(self, s: Session, due: float) -> bool:
        """Put a session whose last pump was all steady into a lane (True), or leave it (False)."""
        source, sock, transport = s.source, s.sock, s.ws.transport
        if self.lanes is None or s.lane >= 0 or source is None or sock is None or transport is None:
            return False
        if self.lanes.count >= self._lane_cap:
            return False
        if transport.get_write_buffer_size() or s.slow or transport.is_closing():
            return False
        args = source.lane()
        if args is None:
            return False
        if self._lane_free:
            slot = self._lane_free.pop()
        else:
            slot = len(self._lane_of)
            self._lane_of.append(None)
        ctrl, slots, seq, gen, reader, uid, fmt, nbytes, limit = args
        p = s.pacer
        visit = s.backlog_at + backlog.REFRESH * (1 + VISIT_SPREAD * random.random())
        try:
            self.lanes.admit(
                slot, ctrl, slots, sock.fileno(), seq, gen, reader, uid, fmt, nbytes, limit,
                s.max_window, s.send_limit, p.tokens, p._last, p.period, float(p.prebuffer), due, visit,
                s.last_send, s.last_interval, backlog.REFRESH,
            )  # fmt: skip
        except (OSError, ValueError, TypeError, OverflowError):
            self._lane_free.append(slot)
            return False
        self._lane_of[slot] = s
        s.lane = slot
        s.lane_entries += 1
        if due < self._lane_next:
            self._lane_next = due
        return True

    def _eject(self, s: Session, reschedule: bool = True) -> None:
        """Take a session out of its lane (if it is in one): its stream, pacer, counts and send times
        carry on from where the lane left them; it is scheduled at the lane's due time unless told
        not to (the caller looks at it now)."""
        slot = s.lane
        if slot < 0:
            return
        taken, seq, tokens, last, due, last_send, last_interval, times, max_window, outq, window, samples = (
            self.lanes.eject(slot)
        )
        s.lane = -1
        self._lane_of[slot] = None
        self._lane_free.append(slot)
        if s.source is not None:
            s.source.lane_taken(taken)
        s.max_window = max_window
        if samples:  # the lane's readings of the backlog, as the pump would have taken them
            readings = memoryview(samples).cast("d")
            sent, size = s.frames_sent, s.frame_bytes or 1
            for i in range(0, len(readings), 3):
                s.consumed.append((readings[i], sent + readings[i + 1] - readings[i + 2] / size))
            s.backlog_at, s.kernel_backlog = readings[-3], int(readings[-1])
            s.outq, s.window = outq, (window if window >= 0 else None)
        s.frames_sent += taken
        p = s.pacer
        p.tokens, p._last = tokens, last
        s.last_send, s.last_interval = last_send, last_interval
        if times:
            sent_at = s.sent_at
            if len(sent_at) > 512:
                sent_at.clear()
            first = seq - len(times) // 8
            for i, t in enumerate(memoryview(times).cast("d")):
                sent_at[first + i] = t
        if reschedule:
            self.schedule.add(s, due)

    def _send_from_lane(self, s: Session, protocol: Any) -> None:
        """What the library has to write for a session in a lane (a ping, a pong, our event),
        written to its socket between the lane's frames: the lane goes on. A connection that is no
        longer open (a close frame, a half-close: nothing may follow them) takes the session out of
        its lane first and leaves the writes to the library, and a socket that does not take them all
        takes it out with the rest queued first."""
        transport = s.ws.transport
        if transport is None or protocol.state is not OPEN or not all(protocol.writes):
            self._eject(s)
            return
        writes = protocol.data_to_send()
        data = writes[0] if len(writes) == 1 else b"".join(writes)
        try:
            sent = self.lanes.write(s.lane, data)
        except Exception:  # (refused before the send): the transport's way
            log.exception("lane write failed")
            sent = 0
        if sent < len(data):
            self._eject(s)
            transport.write(data[sent:])

    def _eject_with_listeners(self, s: Session) -> None:
        self._eject(s)
        for listener in s.listeners:
            self._eject(listener)

    def _run_lanes(self, now: float, now_us: int, early: float) -> list[Session]:
        """One pass of every lane due by ``now + early``; the sessions it stopped, taken out of their
        lanes, for the caller to pump now (a stopped lane's unsent bytes are queued first)."""
        lanes = self.lanes
        if lanes is None or not lanes.count:
            self._lane_next = float("inf")
            return []
        m = self.metrics
        iv, jv = m.interval, m.jitter  # (binned by the kernel as it sends)
        frames, isum, jsum, self._lane_next, stopped = lanes.run(
            now, now_us, early, self.poll_interval, iv.bounds, iv.counts, jv.bounds, jv.counts
        )
        if frames:
            m.totals.frames_sent += frames
            iv.total += isum
            jv.total += jsum
        out: list[Session] = []
        for slot, code, rest in stopped:
            s = self._lane_of[slot]
            assert s is not None
            self._eject(s, reschedule=False)
            if code == _VISIT:
                s.backlog_at = 0.0  # over its send limit: the pump reads it again and holds it back
            if rest is not None:
                transport = s.ws.transport
                if transport is not None:
                    try:
                        transport.write(rest)  # before anything else to that socket
                    except Exception:
                        log.exception("frame write failed")
            out.append(s)
        return out

    def _eject_all(self, reschedule: bool = False) -> None:
        for s in list(self._lane_of):
            if s is not None:
                try:
                    self._eject(s, reschedule)
                except Exception:  # one session's state must not keep the others' lanes
                    log.exception("eject failed", extra={"session_id": s.id})
