"""What Opus costs the worker per frame: ``python -m bench.opus [--seconds 20]``.

The worker's per-frame work with and without Opus, measured in the same run on the same audio (the
synthetic voice's speech-like signal at 48 kHz): a frame copied into a ring slot (the s16le path:
``FrameRing.offer``), and a frame encoded by libopus into the slot (``Encoder.encode_into``) then
offered. Also the bytes per second each puts on the wire (the 24-byte header and the 2- or 4-byte
WebSocket prefix included). Prints a table; ``--json`` writes it to bench/results/opus-<date>.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import time
from pathlib import Path

import numpy as np

from ringaudio import opus
from ringaudio.ring import FrameRing
from ringaudio.tts.backends import SyntheticBackend

from .common import machine

RESULTS = Path(__file__).resolve().parent / "results"


def speech(seconds: float) -> np.ndarray:
    backend = SyntheticBackend(native_rate=48_000, rtf=0)
    text = "The quick brown fox jumps over the lazy dog, and keeps on running for a while. "
    chunks: list[np.ndarray] = []
    while sum(map(len, chunks)) < seconds * 48_000:
        chunks.extend(backend.synthesize(text, None))
    audio = np.concatenate(chunks)
    if audio.dtype != np.int16:
        audio = (np.clip(audio, -1, 1) * 32767).astype(np.int16)
    return audio[: int(seconds * 48_000) // 960 * 960].reshape(-1, 960)


def run(seconds: float) -> dict[str, object]:
    frames = speech(seconds)
    rows: dict[str, object] = {"frames": len(frames), "machine": machine(), "date": dt.date.today().isoformat()}
    with FrameRing.create(capacity=64, frame_samples=960, overflow="drop_oldest") as ring:
        for name, complexity in (("s16le", None), ("opus c5", 5), ("opus c10", 10)):
            slot = np.zeros(960, np.int16)
            enc = opus.Encoder(48_000, 20, 32_000, complexity) if complexity is not None else None
            sizes = []
            t0 = time.perf_counter()
            for f in frames:
                if enc is None:
                    ring.offer(f)
                    sizes.append(1920)
                else:
                    n = enc.encode_into(f, slot)
                    ring.offer(slot, nbytes=n)
                    sizes.append(n)
            per_frame = (time.perf_counter() - t0) / len(frames)
            wire = np.mean([24 + s + (2 if 24 + s < 126 else 4) for s in sizes])
            rows[name] = {"us_per_frame": round(per_frame * 1e6, 1), "kbit_per_s": round(wire * 8 / 0.02 / 1000, 1)}
            if enc is not None:
                enc.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.opus")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rows = run(args.seconds)
    base = rows["s16le"]["us_per_frame"]  # type: ignore[index]
    print("| path | µs per 20 ms frame | × the s16le path | share of one core at 50 frames/s | on the wire |")
    print("|---|---|---|---|---|")
    for name in ("s16le", "opus c5", "opus c10"):
        r = rows[name]  # type: ignore[assignment]
        us = r["us_per_frame"]  # type: ignore[index]
        print(f"| {name} | {us} | {us / base:.0f}× | {us * 50 / 1e4:.2f} % | {r['kbit_per_s']} kbit/s |")  # type: ignore[index]
    print(f"\n{rows['machine']}; {rows['frames']} frames of speech-like audio; {rows['date']}")
    if args.json:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / f"opus-{rows['date']}.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
