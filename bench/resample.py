"""Measure our resampler against soxr, resampy and scipy and print the README table:
``python -m bench.resample`` (22 050 -> 48 000 Hz, 10 s of signal, one core)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from .common import run

ORDER = [
    "ringaudio hq, one-shot",
    "ringaudio hq, 20 ms chunks",
    "soxr HQ, one-shot",
    "soxr HQ, 20 ms chunks",
    "resampy kaiser_best, one-shot",
    "scipy resample_poly, one-shot",
]


def table(results: dict[str, Any]) -> str:
    rows = {}
    for b in results["benchmarks"]:
        info = b["extra_info"]
        median = b["stats"]["median"]
        rows[info["method"]] = (info["seconds"] / median, median / info["chunks"] * 1e6)
    ours = rows.get("ringaudio hq, 20 ms chunks")
    lines = ["| method | × real time | µs per 20 ms | ours (20 ms chunks) ÷ this |", "|---|---|---|---|"]
    for name in ORDER:
        if name in rows:
            speed, per_chunk = rows[name]
            ratio = f"{ours[0] / speed:.2f}" if ours else "—"
            lines.append(f"| {name} | {speed:,.0f} | {per_chunk:.1f} | {ratio} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.resample", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds of audio per round")
    parser.add_argument("--json", type=Path, help="only print the table of an earlier run")
    args = parser.parse_args(argv)
    results = (
        json.loads(args.json.read_text())
        if args.json
        else run("test_resample_speed.py", "resample", {"RINGAUDIO_BENCH_SECONDS": str(args.seconds)})
    )
    if results is None:
        return 1
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
