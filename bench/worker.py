"""The worker's cost per frame written: ``python -m bench.worker [--seconds 60]``.

One utterance after another through the worker's own per-utterance path (``ActiveJob``: synthesis,
resampling, framing, the look-ahead, labels, ``FrameRing.offer``) into a real ring, in this process,
with the synthetic voice at RTF 0 so the voice's own cost is a copy (the worker's synthetic voice
caches a text it has said). Two voices: one speaking the wire's rate (48 kHz: no resampling) and one
at 22 050 Hz (resampled to 48 kHz). CPU time (``time.process_time``) per frame written, best of
``--runs``; what the voice's generator took (``synthesis_s``) is reported beside it. Prints a table;
writes bench/results/worker-<date>.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import time
from typing import Any

from ringaudio.ring import FrameRing
from ringaudio.tts.backends import SyntheticBackend
from ringaudio.tts.job import ActiveJob, Job, WorkerSpec

from .common import HERE, machine

TEXT = "The quick brown fox jumps over the lazy dog, and keeps on running across the field for a while. " * 2


def spec(rate: int) -> WorkerSpec:
    return WorkerSpec(
        backend="synthetic",
        voice="en",
        speed=175,
        synthetic_rtf=0.0,
        synthetic_rate=rate,
        output_sample_rate=48_000,
        frame_samples=960,
        resample_quality="hq",
        clause_chars=200,
        lead_frames=0,
    )


def measure(rate: int, seconds: float) -> dict[str, Any]:
    backend = SyntheticBackend(native_rate=rate, rtf=0.0)
    frames = 0
    synthesis = 0.0
    with FrameRing.create(capacity=512, overflow="drop_oldest") as ring:
        warm = ActiveJob(Job("warm", 0, TEXT, ring.handle), ring, backend, spec(rate))
        while warm.step(0.0) != "done":  # the kernels loaded, and the voice's cache holds the text
            pass
        cpu0 = time.process_time()
        deadline = time.monotonic() + seconds
        uid = 1
        while time.monotonic() < deadline:
            active = ActiveJob(Job("s", uid, TEXT, ring.handle), ring, backend, spec(rate))
            while active.step(0.0) != "done":
                pass
            frames += active.frames
            synthesis += active.synthesis_s
            uid += 1
        cpu = time.process_time() - cpu0
    return {
        "voice_rate": rate,
        "frames": frames,
        "us_per_frame": round(cpu / frames * 1e6, 2),
        "voice_us_per_frame": round(synthesis / frames * 1e6, 2),
        "share_of_core_per_session_pct": round(cpu / frames * 50 * 100, 3),  # 50 frames a second
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.worker", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="per run")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    rows = []
    for rate in (48_000, 22_050):
        runs = [measure(rate, args.seconds) for _ in range(args.runs)]
        rows.append(min(runs, key=lambda r: r["us_per_frame"]))
        print(json.dumps(rows[-1]), flush=True)
    print("\n| voice | µs per frame written | of which the voice | one session's share of a core |\n|---|---|---|---|")
    for r in rows:
        voice = "48 kHz (no resampling)" if r["voice_rate"] == 48_000 else f"{r['voice_rate']} Hz → 48 kHz"
        print(f"| {voice} | {r['us_per_frame']} | {r['voice_us_per_frame']} | {r['share_of_core_per_session_pct']} % |")
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d")
    out = HERE / "results" / f"worker-{stamp}.json"
    out.write_text(json.dumps({"machine": machine(), "date": stamp, "rows": rows}, indent=1))
    print(f"\n{machine()}; JSON: {out.relative_to(HERE.parent)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
