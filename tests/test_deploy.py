"""The shipped Prometheus files: valid for promtool, every alert unit-tested, and our /metrics lint-clean
but for the runbook's own ``_ms`` names (Prometheus' convention is base units: seconds)."""

from __future__ import annotations

import re
import shutil
import subprocess
import urllib.request
from pathlib import Path

import pytest

from .server.conftest import ServerProcess

PROMTOOL = shutil.which("promtool")
DEPLOY = Path(__file__).resolve().parents[1] / "deploy" / "prometheus"
RUNBOOK_MS = {"tts_frame_interval_ms", "tts_frame_jitter_ms", "tts_end_to_end_latency_ms"}  # its own names
pytestmark = pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed (scripts/env.sh installs it)")


def promtool(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run([PROMTOOL, *args], input=stdin, capture_output=True, text=True, timeout=60, cwd=DEPLOY)


def named(file: str, key: str) -> set[str]:
    lines = (DEPLOY / file).read_text().splitlines()
    return {line.split(":", 1)[1].strip() for line in lines if key in line}


def test_the_rules_and_the_scrape_config_are_valid_and_every_alert_is_unit_tested() -> None:
    rules = promtool("check", "rules", "alerts.yml")
    assert rules.returncode == 0 and "SUCCESS: 8 rules found" in rules.stdout, rules.stdout + rules.stderr
    for scrape in ("prometheus.yml", "prometheus-boxes.yml"):
        config = promtool("check", "config", scrape)
        assert config.returncode == 0, config.stdout + config.stderr
    tested = promtool("test", "rules", "alerts.test.yml")
    assert tested.returncode == 0 and "SUCCESS" in tested.stdout, tested.stdout + tested.stderr
    alerts, covered = named("alerts.yml", "- alert:"), named("alerts.test.yml", "alertname:")
    assert alerts == covered and len(alerts) == 8


@pytest.mark.parametrize("processes", ["1", "2"])
def test_metrics_lint_clean_but_for_the_runbooks_millisecond_names(processes: str) -> None:
    """One server's exposition, and the one a --processes 2 server merges from both processes."""
    srv = ServerProcess(args=("--processes", processes))
    try:
        with urllib.request.urlopen(srv.http + "/metrics", timeout=10) as r:
            text = r.read().decode()
    finally:
        assert srv.stop() == 0
    lint = promtool("check", "metrics", stdin=text)
    problems = [line for line in (lint.stdout + lint.stderr).splitlines() if line.strip()]
    assert all("abbreviated units" in line for line in problems), problems
    # tts_first_audio_latency_ms was named like the runbook's before these files existed (tests rely on it)
    allowed = {*RUNBOOK_MS, "tts_first_audio_latency_ms"}
    names = {re.sub(r"_(bucket|count|sum|created)$", "", line.split()[0]) for line in problems}
    assert names <= allowed, names
    assert ('process="p1"' in text) == (processes == "2")
