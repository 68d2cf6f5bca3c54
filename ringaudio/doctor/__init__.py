"""``python -m ringaudio.doctor``: the runbook's Quick Diagnostic Checklist, run against a live server."""

from .diagnose import Finding, Snapshot, diagnose, summarize_log

__all__ = ["Finding", "Snapshot", "diagnose", "summarize_log"]
