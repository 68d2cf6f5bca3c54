"""Prometheus metrics under the names the operators' runbook queries; per-session series removed at the end."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

_MS = (1, 2, 5, 10, 15, 20, 25, 30, 40, 50, 75, 100, 150, 200, 300, 500, 1000)
_JITTER = (0.25, 0.5, 1, 2, 3, 5, 10, 20, 50)


class BatchHistogram(Collector):
    """A histogram for per-frame observations: ``observe`` appends to a list (tens of ns, no lock);
    the samples are binned with NumPy when the list is long or when Prometheus scrapes.

    prometheus_client's own Histogram takes a lock and searches its buckets on every observation,
    which at 50 frames/s × hundreds of sessions is a large share of the scheduler's time. The kernels'
    lanes count into ``counts`` in place as they send (and add to ``total``): it is never rebound.
    """

    def __init__(self, name: str, documentation: str, buckets: tuple[float, ...]) -> None:
        self.name = name
        self.documentation = documentation
        self.bounds = np.asarray(buckets, np.float64)
        self.counts = np.zeros(len(buckets) + 1, np.int64)  # the last one is +Inf
        self.total = 0.0
        self.pending: list[float] = []

    def observe(self, value: float) -> None:
        pending = self.pending
        pending.append(value)
        if len(pending) >= 65_536:
            self.fold()

    def fold(self) -> None:
        if not self.pending:
            return
        values = np.asarray(self.pending, np.float64)
        self.pending.clear()  # in place: the scheduler holds its bound ``append``
        np.add.at(self.counts, np.searchsorted(self.bounds, values, side="left"), 1)
        self.total += float(values.sum())

    def collect(self) -> Iterator[HistogramMetricFamily]:
        self.fold()
        cumulative = np.cumsum(self.counts)
        labels = [*(f"{b:g}" for b in self.bounds), "+Inf"]
        family = HistogramMetricFamily(self.name, self.documentation)
        family.add_metric([], list(zip(labels, cumulative.astype(float).tolist(), strict=True)), self.total)
        yield family


class Totals(Collector):
    """Counters that outlive the sessions, kept as plain ints (the scheduler adds to them once per
    pass, which a prometheus_client Counter, with its lock, would make a per-frame cost)."""

    def __init__(self) -> None:
        self.frames_sent = 0
        self.workers = (0, 0, 0)  # alive, configured, restarts (set before each scrape)
        self.collections = (0, 0.0)  # the server's scheduled full collections: how many, seconds (likewise)
        self.frames_lost = 0  # all sessions: what tts_frames_dropped_total{session_id} added up to
        self.overruns = 0
        self.utterances = {"ended": 0, "failed": 0, "cancelled": 0}

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        yield CounterMetricFamily("tts_frames_sent", "Frames sent to clients, all sessions", value=self.frames_sent)
        yield CounterMetricFamily(
            "tts_frames_lost", "Frames sessions lost (overrun under drop_oldest), all sessions", value=self.frames_lost
        )
        yield CounterMetricFamily(
            "tts_overruns", "Sequence gaps reported to clients, all sessions", value=self.overruns
        )
        alive, size, restarts = self.workers
        yield GaugeMetricFamily("tts_workers_alive", "Worker processes alive and ready", value=alive)
        yield GaugeMetricFamily("tts_workers", "Worker processes configured", value=size)
        yield CounterMetricFamily("tts_worker_restarts", "Worker processes started again after dying", value=restarts)
        runs, seconds = self.collections
        yield CounterMetricFamily(
            "tts_full_collections", "Full garbage collections the server ran on its schedule", value=runs
        )
        yield CounterMetricFamily(
            "tts_full_collection_seconds",
            "Time the server's scheduled full garbage collections took (every stream waits for one)",
            value=seconds,
        )
        outcomes = CounterMetricFamily("tts_utterances", "Utterances by how they ended", labels=["outcome"])
        for outcome, n in self.utterances.items():
            outcomes.add_metric([outcome], n)
        yield outcomes


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.totals = Totals()
        r.register(self.totals)
        self.depth = Gauge(
            "tts_frame_queue_depth",
            "Frames between the worker and the client: ring fill + read, not yet on the socket",
            ["session_id"],
            registry=r,
        )
        self.full = Gauge(
            "tts_frame_queue_full_count",
            "Backpressure episodes: times the session's depth crossed its high watermark",
            ["session_id"],
            registry=r,
        )
        self.session_buffer = Gauge(
            "tts_session_client_buffer_seconds",
            "Audio buffered at the session's client, as its last ack said",
            ["session_id"],
            registry=r,
        )
        self.drops = Counter(
            "tts_frames_dropped_total", "Frames lost by the session (overruns)", ["session_id"], registry=r
        )
        self.interval = BatchHistogram("tts_frame_interval_ms", "Time between frames sent to a client", _MS)
        self.jitter = BatchHistogram("tts_frame_jitter_ms", "Change of the inter-frame interval", _JITTER)
        r.register(self.interval)
        r.register(self.jitter)
        self.end_to_end = Histogram(
            "tts_end_to_end_latency_ms", "Frame sent to played out, from client acks", buckets=_MS, registry=r
        )
        self.first_audio = Histogram(
            "tts_first_audio_latency_ms", "Synthesize request to first frame sent", buckets=_MS, registry=r
        )
        self.rtf = Histogram(
            "tts_rtf",
            "Real-time factor of synthesis",
            ["model_id"],
            buckets=(0.01, 0.05, 0.1, 0.3, 0.5, 1, 2),
            registry=r,
        )
        self.sessions = Gauge("tts_sessions", "Open sessions", registry=r)
        self.slow_clients = Counter(
            "tts_slow_client_episodes_total", "Times a client was found not consuming frames fast enough", registry=r
        )
        self.client_buffer = Histogram(
            "tts_client_buffer_seconds",
            "Audio buffered at the client, from its acks",
            buckets=tuple(b / 1000 for b in _MS),
            registry=r,
        )
        self.client_underruns = Counter(
            "tts_client_underruns_total", "Playout underruns the clients reported in their acks", registry=r
        )
        self.budget_closes = Counter(
            "tts_send_budget_closes_total", "Sessions closed for not reading (over the send budget)", registry=r
        )
        self.quality_changes = Counter(
            "tts_quality_changes_total", "Adaptive quality level changes", ["direction"], registry=r
        )
        self.level = Gauge(
            "tts_session_quality_level",
            "The session's adaptive quality level (0: the best of audio.quality_levels)",
            ["session_id"],
            registry=r,
        )
        self._known: set[str] = set()

    def dropped(self, session_id: str, lost: int) -> None:
        self._known.add(session_id)
        self.drops.labels(session_id).inc(lost)
        self.totals.frames_lost += lost

    def set_level(self, session_id: str, level: int) -> None:
        self._known.add(session_id)
        self.level.labels(session_id).set(level)

    def forget(self, session_id: str) -> None:
        """Remove a finished session's series."""
        if session_id in self._known:
            self._known.discard(session_id)
            for metric in (self.depth, self.full, self.drops, self.session_buffer, self.level):
                with contextlib.suppress(KeyError):
                    metric.remove(session_id)

    def exposition(self, gauges: dict[str, tuple[int, int, float | None]]) -> tuple[bytes, str]:
        """``gauges``: per live session, (queue depth, backpressure episodes, client buffer in s or None)."""
        for sid, (fill, full, buffered) in gauges.items():
            self._known.add(sid)
            self.depth.labels(sid).set(fill)
            self.full.labels(sid).set(full)
            if buffered is not None:
                self.session_buffer.labels(sid).set(buffered)
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
