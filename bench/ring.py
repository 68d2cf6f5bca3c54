"""Measure the ring against its peers and print the README table: ``python -m bench.ring``.

Runs ``bench/test_ring_throughput.py`` with 200 000 frames per round (one benchmark at a time: the
machine has two cores and each benchmark uses both), stores pytest-benchmark's JSON under
``bench/results/`` and prints frames/s and the ratios the targets are stated in.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .common import load_or_run


def table(results: dict[str, object]) -> str:
    rows: dict[tuple[str, int], float] = {}
    for bench in results["benchmarks"]:  # type: ignore[index]
        info = bench["extra_info"]
        rows[(info["transport"], info["frame_bytes"])] = info["frames"] / bench["stats"]["median"]
    sizes = sorted({size for _, size in rows})
    order = [
        "ringaudio",
        "ringaudio batched",
        "multiprocessing.Queue (ndarray)",
        "multiprocessing.Queue (bytes)",
        "multiprocessing.Pipe",
        "faster-fifo",
        "np.copyto (streaming)",
        "np.copyto (cached)",
    ]
    head = "| transport | " + " | ".join(f"{s} B frames/s" for s in sizes) + " |"
    lines = [head, "|---|" + "---|" * len(sizes)]
    for name in order:
        cells = [f"{rows[(name, s)] / 1e3:,.0f} k" if (name, s) in rows else "—" for s in sizes]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("| ratio (same run) | " + " | ".join(f"{s} B" for s in sizes) + " | target |")
    lines.append("|---|" + "---|" * len(sizes) + "---|")
    checks = [
        ("ringaudio ÷ Queue (ndarray)", "ringaudio", "multiprocessing.Queue (ndarray)", "≥ 12×"),
        ("ringaudio ÷ Queue (bytes)", "ringaudio", "multiprocessing.Queue (bytes)", ""),
        ("ringaudio ÷ Pipe", "ringaudio", "multiprocessing.Pipe", "≥ 3×"),
        ("ringaudio ÷ faster-fifo", "ringaudio", "faster-fifo", ""),
        ("batched ÷ np.copyto (streaming)", "ringaudio batched", "np.copyto (streaming)", "≥ 50 %"),
        ("batched ÷ np.copyto (cached)", "ringaudio batched", "np.copyto (cached)", ""),
    ]
    for label, a, b, target in checks:
        cells = []
        for s in sizes:
            if (a, s) in rows and (b, s) in rows:
                r = rows[(a, s)] / rows[(b, s)]
                cells.append(f"{r * 100:.0f} %" if "%" in target else f"{r:.1f}×")
            else:
                cells.append("—")
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {target} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ring", description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=200_000, help="frames per round")
    parser.add_argument("--json", type=Path, help="only print the table of an earlier run")
    args = parser.parse_args(argv)
    results = load_or_run(args.json, "test_ring_throughput.py", "ring", {"RINGAUDIO_BENCH_FRAMES": str(args.frames)})
    if results is None:
        return 1
    print(f"{args.frames} frames per round, median of 5 rounds.\n")
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
