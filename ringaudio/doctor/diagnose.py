"""The runbook's diagnosis as rules: two snapshots of a server (``/debug/sessions`` and ``/metrics``,
a couple of seconds apart) and, optionally, its JSON log in; findings out, each naming one of the
runbook's five causes (or a server-wide problem), with the figures that point to it and what to do.

Pure: no sockets, no clock. The thresholds are the module's constants, and the README's.

How the causes are told apart, per session (the first rule that matches wins):

1. **client playback stall** — held back (more sent than it read) and it read next to nothing over
   the last seconds, or it paused the stream long ago and its buffer does not drain;
2. **client CPU overload** — held back, reading, but slower than real time, with the backlog in
   *its* kernel (its receive window shrank): the network delivered, the client did not read;
3. **WebSocket congestion** — held back with the backlog in *the server's* send queue while the
   client's window is open: the path cannot carry the stream's bitrate;
4. **slow network** — the client keeps up, but the round trip of the server's pings is long or
   irregular;
5. **worker producing too fast** — frames lost while the client kept up: the worker lapped the
   ring (``drop_oldest`` without pacing, and an RTF far below 1).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

STALL_RATIO = 0.1  # reading less than this share of real time while held back: a stall
KEEPS_UP_RATIO = 0.95  # reading at least this share of real time: it keeps up
PING_STALL_S = 5.0  # a ping unanswered this long while held back: not reading
PAUSE_STALL_S = 10.0  # paused by the client this long with a buffer that does not drain
RTT_SLOW_MS = 150.0  # median round trip above this: a slow network
RTT_SPREAD_MS = 100.0  # round trips spread over more than this: irregular timing
FAST_RTF = 0.5  # below this the worker outruns playback (runbook: RTF < 0.5)
SLOW_RTF = 1.0  # above this it falls behind it
FIRST_AUDIO_P95_MS = 300.0  # the runbook's p95 target for first audio
JITTER_P95_MS = 10.0

RUNBOOK = {
    "slow_network": "1. Slow Network Connection",
    "client_cpu_overload": "2. Client CPU Overload",
    "worker_too_fast": "3. Worker Producing Too Fast (RTF Issue)",
    "worker_too_slow": "3. Worker Producing Too Fast (RTF Issue)",
    "websocket_congestion": "4. WebSocket Congestion",
    "client_playback_stall": "5. Client Playback Stall",
    "workers_down": "Related: worker supervision",
    "first_audio_slow": "Diagnostic Steps 4. Measure End-to-End Latency",
    "server_jitter": "Diagnostic Steps 1. Measure Frame Timing",
    "frames_lost": "Diagnostic Steps 3. Check Frame Sequence Gaps",
}
TITLES = {
    "slow_network": "slow network connection",
    "client_cpu_overload": "client CPU overload",
    "worker_too_fast": "worker producing too fast",
    "worker_too_slow": "worker slower than real time",
    "websocket_congestion": "WebSocket congestion",
    "client_playback_stall": "client playback stall",
    "workers_down": "worker processes down",
    "first_audio_slow": "first audio slower than the 300 ms p95 target",
    "server_jitter": "frames sent irregularly",
    "frames_lost": "frames lost",
    "worker_ahead": "worker ahead of real time (backpressure working)",
}
RESOLUTIONS = {
    "slow_network": (
        "Give the client a buffer deeper than the round trip's swings (the browser player's minBufferMs, "
        "200 ms by default; it raises its target itself after underruns). For faster failure detection use "
        "a shorter ring (transport.websocket.frame_queue_size: 25). Check the path to the client."
    ),
    "client_cpu_overload": (
        "Make the client's frame handling cheaper: play through Web Audio in an AudioWorklet (the browser "
        "player does), move decoding to a Web Worker, or send fewer, larger frames "
        "(audio.frame_duration_ms: 40)."
    ),
    "worker_too_fast": (
        "Pace the worker against real time (worker.lead_ms, 400 by default; 0 turns pacing off), or let it "
        "wait at the high watermark instead of overwriting (worker.overflow: block), or give the stream a "
        "deeper ring (transport.websocket.frame_queue_size: 100 is 2 s)."
    ),
    "worker_too_slow": (
        "The worker takes longer to synthesize than the audio lasts: use more worker processes "
        "(worker.workers), a faster voice or model, or shorter clauses (worker.clause_chars)."
    ),
    "websocket_congestion": (
        "The path carries less than the stream needs. Halve the bitrate (audio.output_sample_rate: 24000), "
        "try compression (transport.websocket.compress: true), or fix the link's bandwidth."
    ),
    "client_playback_stall": (
        "Make sure the client's AudioContext is running (resume it after a user gesture), flush stale "
        "buffers when playback lags by more than 500 ms (the player's flushLagMs), and resume the stream "
        "if the client paused it."
    ),
    "workers_down": 'Look at the log for why the workers died ("worker died" lines); the pool restarts them.',
    "first_audio_slow": "See the worker's RTF and queue wait (queue_wait_ms in the log); add workers.",
    "server_jitter": "The server's scheduler is late: the machine is overloaded (CPU), or too many sessions.",
    "frames_lost": 'Find which sessions lost them in the log ("Frame sequence gap detected").',
    "worker_ahead": "Nothing to do: the ring absorbs it and the worker waits at the high watermark; nothing is lost.",
}


@dataclass
class Finding:
    cause: str
    problem: bool  # False: worth knowing, not wrong
    evidence: list[str]
    session_id: str | None = None  # None: the server as a whole
    title: str = ""
    runbook: str = ""
    resolution: str = ""

    def __post_init__(self) -> None:
        self.title = self.title or TITLES.get(self.cause, self.cause)
        self.runbook = self.runbook or RUNBOOK.get(self.cause, "")
        self.resolution = self.resolution or RESOLUTIONS.get(self.cause, "")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Snapshot:
    """One look at the server: ``/debug/sessions`` as parsed JSON, ``/metrics`` as {name: value}
    (each series' value summed over its labels; histograms as ``name_bucket{le}``)."""

    debug: dict[str, Any]
    metrics: dict[str, float] = field(default_factory=dict)
    buckets: dict[str, list[tuple[float, float]]] = field(default_factory=dict)  # name -> [(le, count)]


def _kib(n: float) -> str:
    return f"{n / 1024:.0f} KiB"


def _audio_s(frames: float, frame_ms: float) -> str:
    return f"{frames * frame_ms / 1000:.2f} s of audio"


def quantile(buckets: list[tuple[float, float]], q: float) -> float | None:
    """Prometheus' histogram_quantile over cumulative (le, count) pairs (le = inf for +Inf)."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    total = buckets[-1][1]
    rank = q * total
    prev_le, prev_count = 0.0, 0.0
    for le, count in buckets:
        if count >= rank:
            if le == float("inf"):
                return prev_le
            return prev_le + (le - prev_le) * ((rank - prev_count) / (count - prev_count) if count > prev_count else 1)
        prev_le, prev_count = le, count
    return prev_le


def session_findings(before: dict[str, Any] | None, now: dict[str, Any], server: dict[str, Any]) -> list[Finding]:
    """What is wrong with one session (``now``), given how it looked ``before`` (None: it is new)."""
    sid = now["session_id"]
    frame_ms = float(server["frame_ms"])
    frame_bytes = float(now.get("frame_bytes") or server["frame_bytes"])  # the session's own (Opus, levels)
    ratio = now.get("consumed_ratio")
    held = now["state"] == "held_back"
    lost = now["drops"] - (before["drops"] if before else 0)
    underruns = now["client_underruns"] - (before["client_underruns"] if before else 0)
    findings: list[Finding] = []
    common: list[str] = []
    if lost > 0:
        common.append(f"lost {lost} frames in the last seconds ({now['drops']} in all; worker.overflow: drop_oldest)")
    if underruns > 0:
        common.append(f"the client reported {underruns} playout underruns in the last seconds")
    unconsumed = now["unconsumed_frames"]
    backlog = (
        f"{unconsumed} frames ({_audio_s(unconsumed, frame_ms)}) sent and not read by the client: "
        f"{now['unsent_frames']} in the server's buffer, {_kib(now['socket_send_queue_bytes'])} in its kernel's send "
        f"queue, {_kib(now['client_unread_bytes'])} unread in the client's kernel"
    )
    reading = f"it read {ratio:.2f}× real time over the last 3 s" if ratio is not None else ""
    unanswered = now.get("ping_unanswered_s") or 0.0
    client_side = now["client_unread_bytes"] >= now["socket_send_queue_bytes"] + now["unsent_frames"] * frame_bytes

    if held and ((ratio is not None and ratio < STALL_RATIO) or unanswered >= PING_STALL_S):
        evidence = [f"held back for {now['held_back_s']:.1f} s: the client is not reading", backlog]
        if reading:
            evidence.append(reading)
        if unanswered >= PING_STALL_S:
            evidence.append(f"no pong to the server's ping for {unanswered:.1f} s")
        findings.append(Finding("client_playback_stall", True, evidence + common, sid))
    elif (
        now["state"] == "paused"
        and (now.get("paused_s") or 0) >= PAUSE_STALL_S
        and now.get("client_buffer_ms")
        and before is not None
        and before.get("client_buffer_ms") is not None
        and now["client_buffer_ms"] >= before["client_buffer_ms"] - frame_ms
    ):
        evidence = [
            f"the client paused the stream {now['paused_s']:.0f} s ago",
            f"its buffer holds {now['client_buffer_ms']:.0f} ms and is not draining "
            f"(was {before['client_buffer_ms']:.0f} ms)",
        ]
        findings.append(Finding("client_playback_stall", True, evidence + common, sid))
    elif held and ratio is not None and ratio < KEEPS_UP_RATIO and client_side:
        evidence = [
            f"{reading}: it reads, but slower than the audio plays",
            backlog,
            f"its receive window is down to {_kib(now['client_window_bytes'] or 0)}: the network delivered, "
            "the client did not read",
        ]
        findings.append(Finding("client_cpu_overload", True, evidence + common, sid))
    elif held and (ratio is None or ratio < KEEPS_UP_RATIO):
        carried = f" (about {ratio * server['bitrate_kbps']:.0f} of the {server['bitrate_kbps']:.0f} kbit/s needed)"
        evidence = [
            f"held back for {now['held_back_s']:.1f} s with the backlog on the server's side",
            backlog,
            f"the client's window is open ({_kib(now['client_window_bytes'] or 0)}): it reads what arrives",
        ]
        if reading:
            evidence.append(reading + (carried if ratio is not None else ""))
        findings.append(Finding("websocket_congestion", True, evidence + common, sid))
    elif lost > 0 and not held:
        evidence = [f"lost {lost} frames while the client kept up (state {now['state']}, not held back)"]
        if now.get("rtf") is not None:
            evidence.append(
                f"the worker's RTF is {now['rtf']:.3f} ({now['model_id']}): {1 / max(now['rtf'], 1e-3):.0f}× "
                "faster than real time"
            )
        pacing = "off" if server.get("lead_ms") == 0 else f"{server.get('lead_ms')} ms"
        evidence.append(
            f"the ring holds {server['frame_queue_size']} frames, overflow {server['overflow']}, worker pacing {pacing}"
        )
        findings.append(Finding("worker_too_fast", True, evidence + common[1:], sid))

    rtt = now.get("rtt_ms")
    spread = (now["rtt_max_ms"] - now["rtt_min_ms"]) if now.get("rtt_samples", 0) >= 3 else 0.0
    if not findings and rtt is not None and (rtt > RTT_SLOW_MS or spread > RTT_SPREAD_MS):
        evidence = [
            f"round trip {rtt:.0f} ms (median of {now['rtt_samples']} pings, "
            f"{now['rtt_min_ms']:.0f} to {now['rtt_max_ms']:.0f} ms)"
        ]
        if now.get("client_buffer_ms") is not None:
            evidence.append(f"the client buffers {now['client_buffer_ms']:.0f} ms")
        findings.append(Finding("slow_network", True, evidence + common, sid))
    if not findings and lost > 0:
        findings.append(Finding("frames_lost", True, common, sid))
    if not findings and underruns > 0:
        late = "the server kept up: frames were late on the way"
        findings.append(Finding("slow_network", True, [*common, late], sid))
    if not findings and now["backpressure_episodes"] and (now.get("rtf") or 1.0) < FAST_RTF:
        evidence = [
            f"{now['backpressure_episodes']} times at the high watermark ({server['high_watermark_frames']} frames)",
            f"the worker's RTF is {now['rtf']:.3f}",
        ]
        findings.append(Finding("worker_ahead", False, evidence, sid))
    return findings


def _since(before: Snapshot, now: Snapshot, name: str) -> list[tuple[float, float]]:
    """A histogram's buckets counting only what was observed between the two snapshots."""
    earlier = dict(before.buckets.get(name, []))
    return [(le, count - earlier.get(le, 0.0)) for le, count in now.buckets.get(name, [])]


def server_findings(before: Snapshot, now: Snapshot, log: dict[str, Any] | None = None) -> list[Finding]:
    findings: list[Finding] = []
    w = now.debug["workers"]
    if w["configured"] and w["alive"] < w["configured"]:
        findings.append(Finding("workers_down", True, [f"{w['alive']} of {w['configured']} workers alive"]))
    restarts = now.metrics.get("tts_worker_restarts_total", 0) - before.metrics.get("tts_worker_restarts_total", 0)
    if restarts > 0:
        findings.append(Finding("workers_down", True, [f"{restarts:.0f} worker restarts in the last seconds"]))
    live = {s["session_id"] for s in now.debug["sessions"]}
    lost = now.metrics.get("tts_frames_lost_total", 0) - before.metrics.get("tts_frames_lost_total", 0)
    ended = [s for s in before.debug["sessions"] if s["session_id"] not in live]
    if lost > 0 and ended:
        ids = ", ".join(s["session_id"] for s in ended[:5])
        findings.append(Finding("frames_lost", True, [f"{lost:.0f} frames lost in the last seconds; ended: {ids}"]))
    first = quantile(now.buckets.get("tts_first_audio_latency_ms", []), 0.95)
    if first is not None and first > FIRST_AUDIO_P95_MS:
        findings.append(Finding("first_audio_slow", True, [f"first audio p95 {first:.0f} ms since the server started"]))
    # a held-back session is sent to in bursts, as its client reads: its jitter is its client's, not the server's
    held = any(
        s["state"] == "held_back" or s["slow_episodes"] for s in [*before.debug["sessions"], *now.debug["sessions"]]
    )
    jitter = quantile(_since(before, now, "tts_frame_jitter_ms"), 0.95)
    if jitter is not None and jitter > JITTER_P95_MS and not held:
        findings.append(Finding("server_jitter", True, [f"frame jitter p95 {jitter:.1f} ms in the last seconds"]))
    rtf = quantile(now.buckets.get("tts_rtf", []), 0.5)
    if rtf is not None and rtf > SLOW_RTF:
        findings.append(Finding("worker_too_slow", True, [f"median RTF {rtf:.2f} since the server started"]))
    if log:
        findings.extend(log_findings(log, live))
    return findings


def log_findings(log: dict[str, Any], live: set[str]) -> list[Finding]:
    """What the log says about sessions no longer open (``log``: :func:`summarize_log`'s answer)."""
    findings = []
    for sid, counts in log["sessions"].items():
        if sid in live or not counts.get("gaps"):
            continue
        evidence = [f"the log shows {counts['gaps']} sequence gaps, {counts['lost']} frames lost"]
        if counts.get("slow"):
            evidence.append(f"and {counts['slow']} 'Client not consuming frames fast enough' warnings: the client")
            cause = "client_cpu_overload"
        else:
            evidence.append("and no slow-client warning: the client kept up, the worker lapped the ring")
            cause = "worker_too_fast"
        findings.append(Finding(cause, True, evidence, sid, title=f"{TITLES[cause]} (ended session, from the log)"))
    return findings


def summarize_log(lines: list[str]) -> dict[str, Any]:
    """Per session: sequence gaps and frames lost, slow-client warnings; per model: RTFs."""
    sessions: dict[str, dict[str, int]] = {}
    rtfs: dict[str, list[float]] = {}
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if not isinstance(entry, dict):
            continue
        sid, message = entry.get("session_id"), entry.get("message")
        if message == "utterance synthesized" and isinstance(entry.get("rtf"), (int, float)):
            rtfs.setdefault(str(entry.get("model_id")), []).append(float(entry["rtf"]))
        if not isinstance(sid, str):
            continue
        counts = sessions.setdefault(sid, {"gaps": 0, "lost": 0, "slow": 0})
        if message == "Frame sequence gap detected":
            counts["gaps"] += 1
            if isinstance(entry.get("received"), int) and isinstance(entry.get("expected"), int):
                counts["lost"] += max(0, entry["received"] - entry["expected"])
        elif message == "Client not consuming frames fast enough":
            counts["slow"] += 1
    return {"sessions": sessions, "rtf": rtfs}


def diagnose(before: Snapshot, now: Snapshot, log: dict[str, Any] | None = None) -> list[Finding]:
    """Every finding, the server's first, then each session's."""
    earlier = {s["session_id"]: s for s in before.debug["sessions"]}
    findings = server_findings(before, now, log)
    for s in now.debug["sessions"]:
        findings.extend(session_findings(earlier.get(s["session_id"]), s, now.debug))
    return findings
