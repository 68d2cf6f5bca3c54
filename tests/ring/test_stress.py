"""Real processes on a real ring: every frame derived from its sequence number and checked."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from ringaudio import FrameNotReady, FrameOverrun, FrameRing, RingTimeout
from ringaudio.ring import reclaim_stale

from ..conftest import long_runs, ringaudio_segments
from . import procs
from .patterns import bad, bad_block, fill, frame

CTX = mp.get_context("spawn")
N_BLOCK = 5_000_000 if long_runs() else 1_000_000


def _start(target: object, *args: object) -> mp.process.BaseProcess:
    proc = CTX.Process(target=target, args=args, daemon=True)
    proc.start()
    return proc


def _finish(proc: mp.process.BaseProcess) -> None:
    proc.join(60)
    if proc.is_alive():
        proc.kill()
        proc.join()
    assert proc.exitcode == 0, f"child exited with {proc.exitcode}"


def test_block_delivers_every_frame_in_order_uncorrupted() -> None:
    n = N_BLOCK
    with FrameRing.create(capacity=50) as ring:
        writer = _start(procs.write_sequence, ring.handle, n)
        out = np.empty(960, np.int16)
        corrupt = 0
        seq = 0
        while seq < n:
            try:
                ring.read(seq, out)
            except FrameNotReady:
                assert ring.wait(seq, timeout=30), f"writer stalled at {seq}"
                continue
            corrupt += bad(out, seq) != 0
            seq += 1
        _finish(writer)
        assert corrupt == 0
        assert ring.write_seq == n and ring.dropped == 0
        assert ring.full_count > 0  # the watermark really held the writer back


def test_block_batched_both_sides() -> None:
    n = N_BLOCK // 4
    with FrameRing.create(capacity=256, frame_samples=480, channels=2, dtype="float32") as ring:
        writer = _start(procs.write_sequence, ring.handle, n, 37)
        out = np.empty((64, 480, 2), np.float32)
        seq = corrupt = 0
        while seq < n:
            try:
                got = ring.read_many(seq, out)
            except FrameNotReady:
                assert ring.wait(seq, timeout=30)
                continue
            corrupt += bad_block(got, seq)
            seq += len(got)
        _finish(writer)
        assert corrupt == 0 and seq == n


def test_drop_oldest_slow_reader_losses_add_up_exactly() -> None:
    n = 200_000
    with FrameRing.create(capacity=50, overflow="drop_oldest") as ring:
        listener = ring.reader(gating=False, start=0)
        writer = _start(procs.write_sequence, ring.handle, n)
        out = np.empty(960, np.int16)
        received: list[int] = []
        listened = 0
        lost = overruns = corrupt = 0
        seq = 0
        while seq < n:
            try:
                ring.read(seq, out)
            except FrameNotReady:
                ring.wait(seq, timeout=30)
                continue
            except FrameOverrun as exc:
                assert exc.expected == seq and exc.lost == exc.oldest - seq > 0
                lost += exc.lost
                overruns += 1
                seq = exc.oldest
                continue
            corrupt += bad(out, seq) != 0
            received.append(seq)
            seq += 1
            if seq % 64 == 0:
                time.sleep(0.0005)  # deliberately slower than the writer
            if seq % 7 == 0:  # a second, non-gating listener that is lapped too
                try:
                    pos = listener.position
                    listener.read(out)
                    corrupt += bad(out, pos) != 0
                    listened += 1
                except (FrameOverrun, FrameNotReady):
                    pass
        _finish(writer)
        while listener.position < n:  # drain the listener to the end
            try:
                pos = listener.position
                listener.read(out)
                corrupt += bad(out, pos) != 0
                listened += 1
            except FrameOverrun:
                pass
        assert corrupt == 0
        assert overruns > 0 and lost > 0  # the test really lapped the reader
        assert len(received) + lost == n  # losses are exactly the frames not received
        assert len(set(received)) == len(received) and received == sorted(received)
        assert listened + listener.lost == n
        # the writer's own count is close but not exact (a frame copied at the instant it was overwritten
        # counts there, yet reached the reader intact); the reader's reports are the exact ones
        assert abs(ring.dropped - lost) <= lost // 10 + 100


def test_writer_killed_mid_write_leaves_no_corruption_and_no_leak() -> None:
    with FrameRing.create(capacity=50, overflow="drop_oldest") as ring:
        writer = _start(procs.write_until_killed, ring.handle)
        assert ring.wait(0, timeout=30)
        time.sleep(0.2)
        os.kill(writer.pid, signal.SIGKILL)  # type: ignore[arg-type]
        writer.join(10)
        assert writer.exitcode == -signal.SIGKILL
        end = ring.write_seq
        out = np.empty(960, np.int16)
        readable = corrupt = 0
        for seq in range(max(0, end - 50), end + 2):
            try:
                ring.read(seq, out)
            except (FrameNotReady, FrameOverrun):
                continue
            readable += 1
            corrupt += bad(out, seq) != 0
        assert corrupt == 0 and readable >= 40
        with pytest.raises(FrameNotReady):
            ring.read(end + 1)


def test_writer_killed_while_blocked_at_the_watermark() -> None:
    with FrameRing.create(capacity=8) as ring:
        writer = _start(procs.write_until_killed, ring.handle)
        deadline = time.monotonic() + 30
        while not ring.writer_paused and time.monotonic() < deadline:
            time.sleep(0.01)
        assert ring.writer_paused and ring.write_seq == 6  # asleep at the high watermark (0.8 * 8)
        os.kill(writer.pid, signal.SIGKILL)  # type: ignore[arg-type]
        writer.join(10)
        assert all(bad(ring.read(s), s) == 0 for s in range(6))


def test_a_dead_gating_reader_stops_holding_the_writer() -> None:
    with FrameRing.create(capacity=8) as ring:
        ready = CTX.Event()
        reader = _start(procs.gating_reader_then_hang, ring.handle, ready)
        assert ready.wait(60)
        for seq in range(6):
            ring.write(frame(seq))
            ring.read(seq)  # the default reader keeps up; the child's gating reader never reads
        with pytest.raises(RingTimeout):
            ring.write(frame(6), timeout=0.3)  # held at the watermark by the live child
        os.kill(reader.pid, signal.SIGKILL)  # type: ignore[arg-type]
        reader.join(10)
        assert ring.write(frame(6), timeout=5) == 6  # its slot was reaped: the writer goes on


def test_separately_started_process_does_not_unlink_the_ring() -> None:
    with FrameRing.create(capacity=4) as ring:
        ring.write(np.zeros(960, np.int16))
        out = subprocess.run(
            [sys.executable, "-m", "tests.ring.procs", "attach", ring.name],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        assert out.stdout.strip() == "ok"
        assert "leaked" not in out.stderr
        assert ring.name in ringaudio_segments()  # its resource tracker left our segment alone
        assert FrameRing.attach(ring.name).close() is None


def test_segment_of_a_killed_owner_is_reclaimable() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.ring.procs", "own"],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its resource tracker dies with it: nothing cleans up for it
    )
    try:
        assert proc.stdout is not None
        name = proc.stdout.readline().strip()
        assert name.startswith("ringaudio") and name in ringaudio_segments()
        assert name not in reclaim_stale()  # owner alive: left alone
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
        proc.stdout.close()  # type: ignore[union-attr]
    time.sleep(0.1)
    assert name in ringaudio_segments()  # stale: nobody unlinked it
    assert name in reclaim_stale()
    assert name not in ringaudio_segments()


def test_polling_fallback_without_futex() -> None:
    script = (
        "import multiprocessing as mp, numpy as np\n"
        "from ringaudio import FrameRing, FrameNotReady\n"
        "from ringaudio.ring import futex\n"
        "from tests.ring import procs\n"
        "from tests.ring.patterns import bad\n"
        "assert not futex.AVAILABLE\n"
        "if __name__ == '__main__':\n"
        "    with FrameRing.create(capacity=8) as ring:\n"
        "        p = mp.get_context('spawn').Process(target=procs.write_sequence, args=(ring.handle, 20000))\n"
        "        p.start()\n"
        "        seq = 0\n"
        "        while seq < 20000:\n"
        "            try:\n"
        "                assert bad(ring.read(seq), seq) == 0\n"
        "                seq += 1\n"
        "            except FrameNotReady:\n"
        "                ring.wait(seq, 30)\n"
        "        p.join()\n"
        "        assert p.exitcode == 0\n"
        "    print('ok')\n"
    )
    env = {**os.environ, "RINGAUDIO_NO_FUTEX": "1"}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_fill_pattern_detects_a_torn_frame() -> None:
    # the check the stress tests rely on must catch a frame mixing two sequence numbers
    a = np.empty(960, np.int16)
    fill(a, 41)
    b = np.empty(960, np.int16)
    fill(b, 42)
    torn = np.concatenate([a[:480], b[480:]])
    assert bad(torn, 41) == 480 and bad(torn, 42) == 480 and bad(a, 41) == 0


def test_labels_travel_with_their_frames_across_processes_even_when_lapped() -> None:
    """The label is published under the frame's own stamp: a reader that copies a frame while it is
    being overwritten (drop_oldest, a slow reader) never gets one frame's samples with another's
    label. The owner's reader and a non-gating listener read the same labels."""
    n = 100_000
    with FrameRing.create(capacity=16, overflow="drop_oldest") as ring:
        writer = _start(procs.write_labelled, ring.handle, n)
        out = np.empty(960, np.int16)
        label = np.zeros(4, np.int64)
        seq = read = mismatched = lapped = 0
        heard = 0
        listener_seq = 0
        while seq < n:
            r = ring.read_labelled(seq, out, label)
            if r == 0:
                read += 1
                want = (seq // 7 + 1, seq % 4, seq, 1920)
                mismatched += bad(out, seq) != 0 or tuple(int(x) for x in label) != want
                seq += 1
                if seq % 256 == 0:
                    # a pause long enough for the writer to lap us however fast it is, then a burst
                    time.sleep(0.002)
            elif r == FrameRing.OVERRUN:
                lapped += 1
                seq = ring.oldest(seq)
            else:
                ring.wait(seq, timeout=30)
            if seq % 5 == 0 and listener_seq < seq:  # a non-gating reader of the same ring
                if ring.read_labelled(listener_seq, out, label, slot=-1) == 0:
                    mismatched += bad(out, listener_seq) != 0 or int(label[0]) != listener_seq // 7 + 1
                    heard += 1
                listener_seq = seq
        _finish(writer)
        assert mismatched == 0
        assert read > n // 20 and heard > 0
        assert lapped > 0  # the writer really overwrote frames the reader was after
