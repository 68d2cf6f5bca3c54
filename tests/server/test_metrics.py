"""The server's Prometheus metrics (``ringaudio.server.metrics``), without a server."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ringaudio.server.metrics import BatchHistogram, Metrics


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
