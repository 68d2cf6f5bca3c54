"""``GET /debug/sessions``: what each session looks like now, in figures, for ``ringaudio.doctor``.

Everything here is read from state the server keeps anyway (no syscalls but one ``TCP_INFO`` /
``SIOCOUTQ`` probe of each session's socket): the ring, the transport, the kernel's send queue, the
client's window, what the client said in its last ``ack``, the round trips of the periodic WebSocket
pings, the worker's real-time factor. Each field's meaning is in the README (Observability).
"""

from __future__ import annotations

import contextlib
import statistics
import time
from typing import Any

from .. import __version__
from ..errors import RingClosed
from . import backlog
from .lanes import Laning
from .session import ServerBase, Session

CONSUMED_WINDOW = 3.0  # seconds of (time, frames consumed) samples a consumption rate is taken over


def consumed_ratio(samples: list[tuple[float, float]], now: float, period: float) -> float | None:
    """Frames the client consumed per frame of real time over the last CONSUMED_WINDOW seconds
    (1.0: it reads as fast as audio plays), or None with less than a second of samples."""
    recent = [(t, c) for t, c in samples if now - t <= CONSUMED_WINDOW]
    if len(recent) < 2 or recent[-1][0] - recent[0][0] < 1.0:
        return None
    (t0, c0), (t1, c1) = recent[0], recent[-1]
    return round(max(0.0, c1 - c0) / ((t1 - t0) / period), 3)


def _state(s: Session) -> str:
    source = s.source
    if s.closing:
        return "closing"
    if source is not None and source.paused:
        return "paused"
    if s.slow:
        return "held_back"  # sent and not read: over server.send_buffer_frames
    if source is not None and source.busy:
        return "streaming"
    return "idle"


def _age(now: float, at: float) -> float | None:
    return round(now - at, 3) if at else None


def session_view(server: ServerBase, s: Session, now: float) -> dict[str, Any]:
    in_lane = s.lane >= 0
    if in_lane and isinstance(server, Laning):
        server._eject(s)  # its position and counts as the lane left them
    transport = s.ws.transport
    unsent = transport.get_write_buffer_size() if transport is not None else 0
    probe = backlog.probe(s.sock) if s.sock is not None else backlog.Probe(0, None)
    held = max(0, s.max_window - probe.window) if probe.window is not None else 0
    ring_depth = None
    if s.stream is not None and not s.stream.ended:
        with contextlib.suppress(RingClosed):
            ring_depth = s.stream.ring.fill
    rtts = [r * 1000 for r in s.rtts]
    model, rtf = s.rtf if s.rtf is not None else (None, None)
    frame = s.frame_bytes or server.frame_bytes
    return {
        "session_id": s.id,
        "role": "listener" if s.listening_to is not None else "owner",
        "state": _state(s),
        "age_s": round(now - s.opened, 3),
        "position": s.source.position if s.source is not None else None,
        "frames_sent": s.frames_sent,
        "kernel_lane": in_lane,  # its steady state was served by the C kernels (server.kernel_lanes)
        "kernel_lane_entries": s.lane_entries,  # how often it went into a lane (this view takes it out)
        "ring_depth": ring_depth,  # frames written by the worker and not read yet
        "queue_depth": server.depth(s),  # tts_frame_queue_depth
        "unsent_frames": unsent // frame,  # read from the ring, still in the server's transport buffer
        "socket_send_queue_bytes": probe.outq,  # in the kernel: not sent, or not acknowledged yet
        "client_window_bytes": probe.window,  # the receive window the client advertises now
        "client_unread_bytes": held,  # acknowledged by the client's kernel, not read by the client
        "unconsumed_frames": (unsent + probe.outq + held) // frame,
        "consumed_ratio": consumed_ratio(list(s.consumed), now, s.pacer.period),
        "slow": s.slow,
        "slow_episodes": s.slow_episodes,
        "held_back_s": _age(now, s.slow_started) if s.slow else None,
        "backpressure_episodes": s.episodes,
        "high_watermark": s.high,
        "overruns": s.overruns,
        "drops": s.drops_exported,
        "paused_s": _age(now, s.paused_at),
        "client_buffer_ms": s.client_buffer_ms,
        "client_underruns": s.underruns,
        "acks": s.acks,
        "last_ack_s": _age(now, s.acked_at),
        "rtt_ms": round(statistics.median(rtts), 2) if rtts else None,
        "rtt_max_ms": round(max(rtts), 2) if rtts else None,
        "rtt_min_ms": round(min(rtts), 2) if rtts else None,
        "rtt_samples": len(rtts),
        "ping_unanswered_s": _age(now, s.ping_out),
        "model_id": model,
        "rtf": rtf,
        "format": list(s.wire_format) if s.wire_format is not None else None,  # [rate, frame µs, encoding]
        "frame_bytes": s.frame_bytes,
    }


def view(server: ServerBase) -> dict[str, Any]:
    now = time.monotonic()
    cfg = server.config
    for s in server.sessions.values():
        server._export_drops(s)
    pool = server.engine.pool
    return {
        "version": __version__,
        "uptime_s": round(now - server.started, 3),
        "frame_ms": cfg.frame_duration_ms,
        "sample_rate": cfg.output_sample_rate,
        "frame_bytes": server.frame_bytes,
        "bitrate_kbps": round(server.frame_bytes * 8 / server.period / 1000, 1),
        "overflow": cfg.worker.overflow,
        "lead_ms": cfg.worker.lead_ms,
        "frame_queue_size": server.capacity,
        "high_watermark_frames": server.high_frames,
        "low_watermark_frames": server.low_frames,
        "send_buffer_frames": cfg.server.send_buffer_frames,
        "prebuffer_ms": cfg.server.prebuffer_ms,
        "workers": {
            "alive": pool.alive() if pool is not None else 0,
            "configured": pool.size if pool is not None else 0,
            "restarts": pool.restarts if pool is not None else 0,
        },
        "sessions": [session_view(server, s, now) for s in list(server.sessions.values())],
    }
