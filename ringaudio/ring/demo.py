"""The ring demo behind ``python -m ringaudio.ring [--seconds 5] [--overflow block|drop_oldest] [--slow-ms 0]``.

A writer process produces a 440 Hz tone as fast as the ring lets it (a fast TTS
model); this process reads it back by sequence number at real time, 50 frames
per second, and prints what the ring does once a second: fill between the
watermarks under ``block``, reported gaps under ``drop_oldest`` with a slow
reader.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import signal
import sys
import time

import numpy as np

from ..errors import FrameNotReady, FrameOverrun, RingAudioError, RingClosed
from .arena import FrameRing
from .view import RingHandle

RATE = 48_000
FRAME = 960  # 20 ms


def _tone_writer(handle: RingHandle) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when we stop
    t = np.arange(FRAME) / RATE
    try:
        with FrameRing.attach(handle) as ring:
            seq = 0
            while True:
                phase = 2 * np.pi * 440 * seq * FRAME / RATE
                ring.write((np.sin(2 * np.pi * 440 * t + phase) * 12_000).astype(np.int16))
                seq += 1
    except RingClosed:
        pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ringaudio.ring", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="how long to run (0: until Ctrl-C)")
    parser.add_argument("--overflow", choices=["block", "drop_oldest"], default="block")
    parser.add_argument("--capacity", type=int, default=50)
    parser.add_argument("--slow-ms", type=float, default=0.0, help="extra time the reader spends per frame")
    args = parser.parse_args(argv)
    try:
        ring = FrameRing.create(capacity=args.capacity, overflow=args.overflow)
    except RingAudioError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    writer = mp.get_context("spawn").Process(target=_tone_writer, args=(ring.handle,), daemon=True)
    period = FRAME / RATE
    out = np.empty(FRAME, np.int16)
    seq = received = lost = 0
    try:
        writer.start()
        start = next_report = time.monotonic()
        high, low = ring.watermarks
        print(f"ring {ring.name}: capacity {ring.capacity}, watermarks {high}/{low} frames, {args.overflow}")
        while args.seconds <= 0 or time.monotonic() - start < args.seconds:
            try:
                ring.read(seq, out)
                seq += 1
                received += 1
            except FrameNotReady:
                if not ring.wait(seq, timeout=1.0) and not writer.is_alive():
                    print(f"error: the writer process exited ({writer.exitcode})", file=sys.stderr)
                    return 1
                continue
            except FrameOverrun as exc:
                print(f"  gap: expected {exc.expected}, resumed at {exc.oldest} ({exc.lost} lost)")
                lost += exc.lost
                seq = exc.oldest
                continue
            time.sleep(max(0.0, start + received * period - time.monotonic()) + args.slow_ms / 1000)
            if time.monotonic() >= next_report:
                next_report += 1.0
                print(
                    f"  t={time.monotonic() - start:4.1f}s frames={received} fill={ring.fill} "
                    f"writer_paused={ring.writer_paused} lost={lost}"
                )
    except KeyboardInterrupt:
        pass
    finally:
        ring.close()
        ring.unlink()
        writer.join(2)
        if writer.is_alive():
            writer.kill()
            writer.join()
    print(f"done: {received} frames received in order, {lost} lost")
    return 0
