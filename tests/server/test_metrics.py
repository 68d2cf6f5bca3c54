"""The server's Prometheus metrics (``ringaudio.server.metrics``), without a server."""

from __future__ import annotations

import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.sync.client import connect as sync_connect

from ringaudio.server.metrics import BatchHistogram, Metrics

from .conftest import ServerProcess, wait_until


def test_batch_histogram_bins_like_prometheus() -> None:
    h = BatchHistogram("x_ms", "test", (1, 5, 20))
    for v in (0.5, 1.0, 3, 20, 25, 100):
        h.observe(v)
    family = next(iter(h.collect()))
    buckets = {s.labels["le"]: s.value for s in family.samples if s.name == "x_ms_bucket"}
    assert buckets == {"1": 2.0, "5": 3.0, "20": 4.0, "+Inf": 6.0}  # le: value <= bound
    total = next(s.value for s in family.samples if s.name == "x_ms_sum")
    assert total == pytest.approx(149.5)


def test_batch_histogram_folds_a_long_list_before_a_scrape_and_keeps_counting() -> None:
    h = BatchHistogram("x_ms", "test", (10,))
    for _ in range(65_536):  # the fold threshold: the pending list is binned and emptied in place
        h.observe(1.0)
    assert h.pending == [] and h.counts.tolist() == [65_536, 0]
    h.observe(50.0)
    family = next(iter(h.collect()))
    count = next(s.value for s in family.samples if s.name == "x_ms_count")
    assert count == 65_537 and h.total == pytest.approx(65_536 + 50.0)


def samples(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text.decode())
        for s in family.samples
    }


def test_exposition_has_the_runbook_names_and_a_forgotten_session_has_no_series() -> None:
    m = Metrics()
    m.dropped("s1", 3)
    m.interval.observe(20.0)
    body, content_type = m.exposition({"s1": (12, 1, 0.25), "s2": (0, 0, None)})
    assert content_type.startswith("text/plain")
    got = samples(body)
    assert got[("tts_frame_queue_depth", (("session_id", "s1"),))] == 12
    assert got[("tts_frame_queue_full_count", (("session_id", "s1"),))] == 1
    assert got[("tts_frames_dropped_total", (("session_id", "s1"),))] == 3
    assert got[("tts_session_client_buffer_seconds", (("session_id", "s1"),))] == 0.25
    assert ("tts_session_client_buffer_seconds", (("session_id", "s2"),)) not in got  # no ack said it yet
    assert got[("tts_frame_interval_ms_count", ())] == 1
    for name in ("tts_frame_jitter_ms", "tts_end_to_end_latency_ms", "tts_first_audio_latency_ms", "tts_rtf"):
        assert f"# TYPE {name} histogram" in body.decode(), name
    m.forget("s1")
    m.forget("never-seen")  # no series: nothing to remove
    after = m.exposition({"s2": (0, 0, None)})[0]
    assert b'session_id="s1"' not in after and b'session_id="s2"' in after


def scraped(srv: ServerProcess, name: str) -> float:
    with urllib.request.urlopen(f"{srv.http}/metrics", timeout=5) as r:
        text = r.read().decode()
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    )


def test_the_servers_scheduled_full_collections_are_counted_and_timed_on_metrics() -> None:
    """``python -m ringaudio.server`` runs its full collections itself: with no session left open,
    the first that ends makes one due, run at the scheduler's next once-a-second look."""
    srv = ServerProcess()
    try:
        assert scraped(srv, "tts_full_collections_total") == 0
        with sync_connect(srv.url, open_timeout=10) as ws:
            ws.recv(10)  # its session event
        wait_until(lambda: scraped(srv, "tts_full_collections_total") == 1, timeout=10)
        assert scraped(srv, "tts_full_collection_seconds_total") > 0
    finally:
        assert srv.stop() == 0
