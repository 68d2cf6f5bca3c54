"""Measure our resampler against soxr, resampy and scipy and print the README table:
``python -m bench.resample`` (22 050 -> 48 000 Hz, 10 s of signal, one core)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from .common import load_or_run

ORDER = [
    "ringaudio hq, one-shot",
    "ringaudio hq, 20 ms chunks",
    "ringaudio hq (one stage), 20 ms chunks",
    "ringaudio vhq, 20 ms chunks",
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


def quality_table() -> str:
    """SNR of 1 kHz against the analytic sine, level beside a 10.5 kHz tone, and the -3 dB point."""
    import numpy as np

    from ringaudio.resample import Resampler, resample

    def one_stage(x: Any) -> Any:
        r = Resampler(22_050, 48_000, stages=1)
        return np.concatenate([r.process(x), r.flush()])

    methods: dict[str, Any] = {
        "ringaudio hq": lambda x: resample(x, 22_050, 48_000),
        "ringaudio hq (one stage)": one_stage,
        "ringaudio vhq": lambda x: resample(x, 22_050, 48_000, "vhq"),
    }
    try:
        import soxr

        methods["soxr HQ"] = lambda x: soxr.resample(x, 22_050, 48_000, quality="HQ")
    except ImportError:
        pass
    try:
        import resampy

        methods["resampy kaiser_best"] = lambda x: resampy.resample(x, 22_050, 48_000, filter="kaiser_best")
    except ImportError:
        pass
    try:
        from scipy import signal

        methods["scipy resample_poly"] = lambda x: signal.resample_poly(x, 320, 147)
    except ImportError:
        pass

    def tone(f: float, rate: int, n: int) -> Any:
        return np.sin(2 * np.pi * f * np.arange(n) / rate)

    def fit(y: Any, f: float) -> tuple[float, Any]:
        t = np.arange(len(y)) / 48_000
        basis = np.stack([np.sin(2 * np.pi * f * t), np.cos(2 * np.pi * f * t)], axis=1)
        coef, *_ = np.linalg.lstsq(basis, y.astype(np.float64), rcond=None)
        return float(np.hypot(*coef)), y - basis @ coef

    lines = ["| method | SNR, 1 kHz | beside a 10.5 kHz tone | -3 dB point |", "|---|---|---|---|"]
    n = 22_050
    for name, fn in methods.items():
        edge = 2000
        y = np.asarray(fn(tone(1000, 22_050, n).astype(np.float32)), np.float64)
        ref = tone(1000, 48_000, len(y))
        snr = 10 * np.log10(np.sum(ref[edge:-edge] ** 2) / np.sum((y - ref)[edge:-edge] ** 2))
        y = np.asarray(fn(tone(10_500, 22_050, n).astype(np.float32)), np.float64)[edge:-edge]
        _, rest = fit(y, 10_500)
        beside = 20 * np.log10(np.sqrt(2 * np.mean(rest**2)))
        point = 0.0
        for frac in np.arange(0.80, 1.0, 0.0025):
            y = np.asarray(fn(tone(frac * 11_025, 22_050, n).astype(np.float32)), np.float64)[edge:-edge]
            gain, _ = fit(y, frac * 11_025)
            if 20 * np.log10(gain) < -3:
                break
            point = frac
        lines.append(f"| {name} | {snr:.0f} dB | {beside:.0f} dB | {point * 100:.1f} % of Nyquist |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.resample", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds of audio per round")
    parser.add_argument("--json", type=Path, help="only print the table of an earlier run")
    args = parser.parse_args(argv)
    env = {"RINGAUDIO_BENCH_SECONDS": str(args.seconds)}
    results = load_or_run(args.json, "test_resample_speed.py", "resample", env)
    if results is None:
        return 1
    print(table(results))
    print()
    print(quality_table())
    return 0


if __name__ == "__main__":
    sys.exit(main())
