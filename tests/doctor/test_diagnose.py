"""The runbook's rules, driven by table rows: no server, no clock."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from ringaudio.doctor.diagnose import Snapshot, diagnose, quantile, session_findings, summarize_log

SERVER: dict[str, Any] = {
    "version": "0",
    "uptime_s": 60.0,
    "frame_ms": 20,
    "sample_rate": 48000,
    "frame_bytes": 1948,
    "bitrate_kbps": 779.2,
    "overflow": "block",
    "lead_ms": 300,
    "frame_queue_size": 50,
    "high_watermark_frames": 40,
    "low_watermark_frames": 25,
    "send_buffer_frames": 25,
    "prebuffer_ms": 200,
    "workers": {"alive": 1, "configured": 1, "restarts": 0},
}


def session(**changes: Any) -> dict[str, Any]:
    """A healthy streaming session, changed by ``changes``."""
    s: dict[str, Any] = {
        "session_id": "s1",
        "role": "owner",
        "state": "streaming",
        "age_s": 10.0,
        "position": 400,
        "frames_sent": 400,
        "ring_depth": 12,
        "queue_depth": 12,
        "unsent_frames": 0,
        "socket_send_queue_bytes": 0,
        "client_window_bytes": 65536,
        "client_unread_bytes": 0,
        "unconsumed_frames": 0,
        "consumed_ratio": 1.0,
        "slow": False,
        "slow_episodes": 0,
        "held_back_s": None,
        "backpressure_episodes": 0,
        "high_watermark": False,
        "overruns": 0,
        "drops": 0,
        "paused_s": None,
        "client_buffer_ms": None,
        "client_underruns": 0,
        "acks": 0,
        "last_ack_s": None,
        "rtt_ms": 1.0,
        "rtt_max_ms": 2.0,
        "rtt_min_ms": 0.5,
        "rtt_samples": 3,
        "ping_unanswered_s": None,
        "model_id": "synthetic",
        "rtf": 0.05,
    }
    s.update(changes)
    return s


HELD = {"state": "held_back", "slow": True, "slow_episodes": 1, "held_back_s": 4.0, "unconsumed_frames": 30}

CASES: list[tuple[str, dict[str, Any], dict[str, Any], list[str]]] = [
    ("healthy", {}, {}, []),
    (
        "a client that stopped reading",
        {},
        {**HELD, "consumed_ratio": 0.0, "client_unread_bytes": 58000, "client_window_bytes": 0},
        ["client_playback_stall"],
    ),
    (
        "no pong for long, no rate yet",
        {},
        {**HELD, "consumed_ratio": None, "ping_unanswered_s": 8.0, "client_unread_bytes": 58000},
        ["client_playback_stall"],
    ),
    (
        "paused by the client, the buffer not draining",
        {"state": "paused", "paused_s": 12.0, "client_buffer_ms": 800.0},
        {"state": "paused", "paused_s": 14.0, "client_buffer_ms": 800.0},
        ["client_playback_stall"],
    ),
    (
        "paused by the client, the buffer draining: someone is listening",
        {"state": "paused", "paused_s": 12.0, "client_buffer_ms": 800.0},
        {"state": "paused", "paused_s": 14.0, "client_buffer_ms": 600.0},
        [],
    ),
    (
        "a client reading at 0.6x, the backlog in its kernel",
        {},
        {**HELD, "consumed_ratio": 0.6, "client_unread_bytes": 40000, "client_window_bytes": 8000},
        ["client_cpu_overload"],
    ),
    (
        "the backlog in the server's send queue, the window open",
        {},
        {**HELD, "consumed_ratio": 0.5, "socket_send_queue_bytes": 60000, "client_window_bytes": 3_000_000},
        ["websocket_congestion"],
    ),
    ("a long round trip", {}, {"rtt_ms": 400.0, "rtt_max_ms": 450.0, "rtt_min_ms": 380.0}, ["slow_network"]),
    ("an irregular round trip", {}, {"rtt_ms": 60.0, "rtt_max_ms": 220.0, "rtt_min_ms": 30.0}, ["slow_network"]),
    (
        "frames lost while the client kept up",
        {"drops": 0},
        {"drops": 300, "overruns": 4, "rtf": 0.01},
        ["worker_too_fast"],
    ),
    (
        "frames lost by a held-back client: the client's fault, with the losses as evidence",
        {"drops": 0},
        {**HELD, "drops": 120, "consumed_ratio": 0.0, "client_unread_bytes": 58000},
        ["client_playback_stall"],
    ),
    (
        "underruns with a server that keeps up",
        {"client_underruns": 0},
        {"client_underruns": 3, "client_buffer_ms": 20.0},
        ["slow_network"],
    ),
    ("at the high watermark with a fast worker: a note", {}, {"backpressure_episodes": 2}, ["worker_ahead"]),
]


@pytest.mark.parametrize(("name", "before", "now", "causes"), CASES, ids=[c[0] for c in CASES])
def test_each_cause_is_told_apart(name: str, before: dict[str, Any], now: dict[str, Any], causes: list[str]) -> None:
    found = session_findings(session(**before), session(**now), SERVER)
    assert [f.cause for f in found] == causes
    for f in found:
        assert f.evidence and all(isinstance(line, str) and line for line in f.evidence)
        assert f.resolution and f.title
        assert f.problem == (f.cause != "worker_ahead")
        if f.cause != "worker_ahead":
            assert f.runbook  # the section to open


def test_evidence_carries_the_figures() -> None:
    stall = session_findings(
        session(), session(**HELD, consumed_ratio=0.0, client_unread_bytes=58368, ping_unanswered_s=6.2), SERVER
    )[0]
    text = " ".join(stall.evidence)
    assert "held back for 4.0 s" in text and "57 KiB unread" in text and "0.00× real time" in text
    assert "no pong" in text and "6.2 s" in text
    fast = session_findings(session(), session(drops=300, rtf=0.01), {**SERVER, "lead_ms": 0})[0]
    assert "lost 300 frames" in fast.evidence[0] and "100× faster" in fast.evidence[1]
    assert "worker pacing off" in fast.evidence[2]


def test_quantile_is_prometheus_histogram_quantile() -> None:
    buckets = [(10.0, 50.0), (20.0, 90.0), (50.0, 100.0), (math.inf, 100.0)]
    assert quantile(buckets, 0.5) == 10.0
    assert quantile(buckets, 0.95) == pytest.approx(35.0)
    assert quantile([(10.0, 0.0), (math.inf, 0.0)], 0.95) is None
    assert quantile([(10.0, 0.0), (math.inf, 5.0)], 0.95) == 10.0  # all above the last bound


def snapshot(sessions: list[dict[str, Any]], **metrics: float) -> Snapshot:
    return Snapshot({**SERVER, "sessions": sessions}, dict(metrics))


def test_server_findings_workers_restarts_and_losses_of_ended_sessions() -> None:
    before = snapshot([session(session_id="gone")], tts_worker_restarts_total=0, tts_frames_lost_total=10)
    now = snapshot([], tts_worker_restarts_total=1, tts_frames_lost_total=60)
    now.debug["workers"] = {"alive": 0, "configured": 1, "restarts": 1}
    causes = [f.cause for f in diagnose(before, now)]
    assert causes == ["workers_down", "workers_down", "frames_lost"]
    lost = diagnose(before, now)[2]
    assert "50 frames lost" in lost.evidence[0] and "gone" in lost.evidence[0]


def test_server_histograms() -> None:
    now = snapshot([])
    now.buckets = {
        "tts_first_audio_latency_ms": [(100.0, 10.0), (500.0, 100.0), (math.inf, 100.0)],
        "tts_frame_jitter_ms": [(1.0, 100.0), (math.inf, 100.0)],
        "tts_rtf": [(0.5, 10.0), (2.0, 100.0), (math.inf, 100.0)],
    }
    causes = [f.cause for f in diagnose(snapshot([]), now)]
    assert causes == ["first_audio_slow", "worker_too_slow"]


def test_the_log_tells_about_ended_sessions() -> None:
    def line(message: str, sid: str | None, **fields: Any) -> str:
        return json.dumps({"timestamp": 1.0, "level": "WARNING", "message": message, "session_id": sid, **fields})

    lines = [
        line("Frame sequence gap detected", "a", expected=10, received=60),
        line("Frame sequence gap detected", "a", expected=100, received=110),
        line("Client not consuming frames fast enough", "b"),
        line("Frame sequence gap detected", "b", expected=5, received=9),
        line("Frame sequence gap detected", "live", expected=5, received=9),
        line("utterance synthesized", "a", model_id="m", rtf=0.02),
        "not json",
        "[1, 2]",
    ]
    log = summarize_log(lines)
    assert log["sessions"]["a"] == {"gaps": 2, "lost": 60, "slow": 0}
    assert log["rtf"] == {"m": [0.02]}
    found = diagnose(snapshot([session(session_id="live")]), snapshot([session(session_id="live")]), log)
    by_session = {f.session_id: f.cause for f in found}
    assert by_session == {"a": "worker_too_fast", "b": "client_cpu_overload"}


def test_jitter_counts_the_last_seconds_and_not_a_held_back_session() -> None:
    inf = math.inf
    before = snapshot([session()])
    before.buckets = {"tts_frame_jitter_ms": [(1.0, 100.0), (50.0, 100.0), (inf, 100.0)]}
    late = snapshot([session()])
    late.buckets = {"tts_frame_jitter_ms": [(1.0, 100.0), (50.0, 200.0), (inf, 200.0)]}  # 100 new, all late
    assert [f.cause for f in diagnose(before, late)] == ["server_jitter"]
    calm = snapshot([session()])
    calm.buckets = {"tts_frame_jitter_ms": [(1.0, 200.0), (50.0, 200.0), (inf, 200.0)]}  # 100 new, all punctual
    assert diagnose(late, calm) == []
    held = snapshot([session(**HELD, consumed_ratio=0.0, client_unread_bytes=58000)])
    held.buckets = late.buckets
    assert [f.cause for f in diagnose(before, held)] == ["client_playback_stall"]  # its bursts are its own
