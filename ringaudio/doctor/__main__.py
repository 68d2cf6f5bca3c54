"""``python -m ringaudio.doctor [--url http://127.0.0.1:8080] [--token T] [--log FILE] [--json]
[--interval S]``: two looks at a server's ``/metrics`` and ``/debug/sessions``, ``--interval``
seconds apart, then the runbook's verdict per unhealthy session and for the server as a whole.

Exit status: 0 healthy, 1 problems found, 2 the server cannot be reached (or refuses the token).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from .diagnose import Finding, Snapshot, diagnose, summarize_log

OK, PROBLEMS, UNREACHABLE = 0, 1, 2
TIMEOUT_S = 5.0


class Unreachable(Exception):
    """The server did not answer, or not as a ringaudio server does."""


def _get(url: str, token: str | None) -> bytes:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as answer:
            return bytes(answer.read())
    except urllib.error.HTTPError as exc:
        if exc.code == 401:
            raise Unreachable(f"{url}: 401 unauthorized (pass --token, or set RINGAUDIO_TOKEN)") from exc
        raise Unreachable(f"{url}: HTTP {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise Unreachable(f"{url}: {reason}") from exc


def parse_metrics(text: str) -> tuple[dict[str, float], dict[str, list[tuple[float, float]]]]:
    """Each sample's value summed over its labels; each histogram's cumulative buckets (summed too)."""
    from prometheus_client.parser import text_string_to_metric_families

    values: dict[str, float] = {}
    buckets: dict[str, dict[float, float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.endswith("_bucket") and "le" in sample.labels:
                le = math.inf if sample.labels["le"] == "+Inf" else float(sample.labels["le"])
                per = buckets.setdefault(sample.name[: -len("_bucket")], {})
                per[le] = per.get(le, 0.0) + sample.value
            else:
                values[sample.name] = values.get(sample.name, 0.0) + sample.value
    return values, {name: sorted(per.items()) for name, per in buckets.items()}


def look(url: str, token: str | None) -> Snapshot:
    try:
        debug = json.loads(_get(f"{url}/debug/sessions", token))
        values, buckets = parse_metrics(_get(f"{url}/metrics", token).decode("utf-8", "replace"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise Unreachable(f"{url}: not a ringaudio server's answer ({exc})") from exc
    if not isinstance(debug, dict) or not isinstance(debug.get("sessions"), list):
        raise Unreachable(f"{url}/debug/sessions: not a ringaudio server's answer")
    return Snapshot(debug, values, buckets)


def render(url: str, snap: Snapshot, findings: list[Finding]) -> str:
    d = snap.debug
    w = d["workers"]
    out = [
        f"ringaudio doctor: {url} (ringaudio {d['version']}, up {d['uptime_s']:.0f} s, "
        f"{len(d['sessions'])} sessions, workers {w['alive']}/{w['configured']}, overflow {d['overflow']})"
    ]
    flagged = {f.session_id for f in findings if f.problem and f.session_id is not None}
    for f in findings:
        where = "server" if f.session_id is None else f"session {f.session_id}"
        out.append(f"{'PROBLEM' if f.problem else 'note'}  {where}: {f.title}")
        out.extend(f"    - {line}" for line in f.evidence)
        if f.resolution:
            out.append(f"    what to do (runbook: {f.runbook}): {f.resolution}" if f.runbook else f"    {f.resolution}")
    healthy = len(d["sessions"]) - len(flagged)
    problems = sum(f.problem for f in findings)
    out.append(f"{healthy} of {len(d['sessions'])} sessions healthy" if d["sessions"] else "no sessions open")
    out.append("verdict: healthy" if not problems else f"verdict: {problems} problem{'s' * (problems != 1)} found")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ringaudio.doctor", description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8080", help="the server's HTTP address")
    parser.add_argument("--token", default=os.environ.get("RINGAUDIO_TOKEN"), help="(default: $RINGAUDIO_TOKEN)")
    parser.add_argument("--log", type=Path, help="the server's JSON log, for sessions that have ended")
    parser.add_argument("--json", action="store_true", help="the findings as one JSON object")
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between the two looks (default 2)")
    args = parser.parse_args(argv)
    url = args.url.rstrip("/")
    log = None
    if args.log is not None:
        try:
            log = summarize_log(args.log.read_text("utf-8", "replace").splitlines())
        except OSError as exc:
            print(f"ringaudio doctor: cannot read {args.log}: {exc.strerror}", file=sys.stderr)
            return UNREACHABLE
    try:
        before = look(url, args.token)
        time.sleep(max(0.0, args.interval))
        now = look(url, args.token)
    except Unreachable as exc:
        if args.json:
            print(json.dumps({"url": url, "reachable": False, "error": str(exc)}))
        else:
            print(f"ringaudio doctor: cannot reach the server: {exc}", file=sys.stderr)
        return UNREACHABLE
    findings = diagnose(before, now, log)
    problems = any(f.problem for f in findings)
    if args.json:
        report: dict[str, Any] = {
            "url": url,
            "reachable": True,
            "healthy": not problems,
            "findings": [f.to_dict() for f in findings],
            "server": {k: v for k, v in now.debug.items() if k != "sessions"},
            "sessions": now.debug["sessions"],
        }
        print(json.dumps(report))
    else:
        print(render(url, now, findings))
    return PROBLEMS if problems else OK


if __name__ == "__main__":
    sys.exit(main())
