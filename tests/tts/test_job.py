"""One utterance in a worker (ActiveJob): its pacing clock, and the labels it writes with each frame."""

from __future__ import annotations

import numpy as np
import pytest

from ringaudio import FrameRing, wire
from ringaudio.ring import layout
from ringaudio.tts.backends import Backend, SyntheticBackend
from ringaudio.tts.job import ActiveJob, Job, PlaybackClock, WorkerSpec
from ringaudio.tts.spec import pace_frames


def spec(**kw: object) -> WorkerSpec:
    base: dict[str, object] = dict(
        backend="synthetic",
        voice="en",
        speed=175,
        synthetic_rtf=0.0,
        synthetic_rate=22_050,
        output_sample_rate=48_000,
        frame_samples=960,
        resample_quality="hq",
        clause_chars=200,
        lead_frames=0,
    )
    base.update(kw)
    return WorkerSpec(**base)  # type: ignore[arg-type]


def run_job(backend: Backend, text: str, uid: int = 7) -> tuple[list[list[int]], int]:
    """Write one utterance into a fresh ring; every frame's label, and what the job counted."""
    with FrameRing.create(capacity=512, overflow="drop_oldest") as ring:
        active = ActiveJob(Job("s", uid, text, ring.handle), ring, backend, spec())
        while active.step(0.0) != "done":
            pass
        out = np.empty(960, np.int16)
        label = np.zeros(layout.LABEL_WORDS, np.int64)
        labels = []
        for seq in range(ring.write_seq):
            assert ring.read_labelled(seq, out, label) == 0
            labels.append(label.tolist())
        return labels, active.frames


def test_every_frame_carries_its_utterance_and_only_the_ends_are_flagged() -> None:
    labels, frames = run_job(SyntheticBackend(rtf=0.0), "Hello there. How are you today?")
    assert len(labels) == frames > 10
    fmt = layout.encode_format(48_000, 20_000, "s16le")
    assert all(uid == 7 and f == fmt and n == 1920 for uid, _, f, n in labels)
    flags = [lab[1] for lab in labels]
    assert flags[0] == wire.FLAG_FIRST and flags[-1] == wire.FLAG_LAST
    assert not any(flags[1:-1])


class OneFrameChunks(Backend):
    """A backend that yields audio in chunks of one frame's worth or less: the look-ahead then waits
    for the next chunk before writing a frame, so the last one is still known."""

    name = "tiny"
    native_rate = 48_000
    model_id = "tiny"

    def synthesize(self, text: str, voice: str | None = None):  # type: ignore[no-untyped-def]
        for _ in range(len(text)):
            yield np.full(500, 0.1, np.float32)


def test_a_short_utterance_in_small_chunks_is_first_and_last_correctly() -> None:
    labels, frames = run_job(OneFrameChunks(), "abc")  # 1500 samples: two frames (the second padded)
    assert frames == 2
    assert [lab[1] for lab in labels] == [wire.FLAG_FIRST, wire.FLAG_LAST]
    labels, frames = run_job(OneFrameChunks(), "a")  # one frame: first and last at once
    assert [lab[1] for lab in labels] == [wire.FLAG_FIRST | wire.FLAG_LAST]


def test_no_audio_writes_nothing() -> None:
    labels, frames = run_job(OneFrameChunks(), "")
    assert labels == [] and frames == 0


def test_the_playback_clock_paces_a_writer_its_lead_ahead_of_real_time() -> None:
    clock = PlaybackClock(lead=15, period=0.02)
    reader = lambda: 100  # noqa: E731 - where the reader is when the clock starts
    # the frame being played and the lead after it go at once, then one frame per period
    assert all(clock.due(seq, 10.0, reader) <= 10.0 for seq in range(100, 116))
    assert clock.due(116, 10.0, reader) == pytest.approx(10.02)
    assert clock.due(125, 10.0, reader) == pytest.approx(10.2)


def test_the_playback_clock_is_set_back_to_a_late_writer_and_restarts_from_the_reader() -> None:
    clock = PlaybackClock(lead=15, period=0.02)
    assert clock.due(0, 0.0, lambda: 0) <= 0.0
    # synthesis stalled for 2 s after 20 frames: the clock is 100 frames on, the writer is not
    assert clock.due(20, 2.0, lambda: 20) == 2.0
    # what comes next is paced again from there: a lead, not 80 frames at once
    assert clock.due(35, 2.0, lambda: 20) <= 2.0
    assert clock.due(36, 2.0, lambda: 20) == pytest.approx(2.02)
    clock.restart()  # backpressure: the next question starts it where the reader is
    assert clock.due(60, 5.0, lambda: 50) == pytest.approx(5.0 - 5 * 0.02)  # 10 ahead of it: may go
    assert clock.due(66, 5.0, lambda: 50) == pytest.approx(5.02)


@pytest.mark.parametrize("blocks", [True, False])
@pytest.mark.parametrize(("lead", "prebuffer"), [(20, 10), (15, 10), (30, 10), (10, 10), (11, 10), (10, 5)])
def test_a_paced_job_writes_each_frame_its_margin_before_the_server_reads_it(
    lead: int, prebuffer: int, blocks: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a simulated clock (1 ms steps): the server takes ``prebuffer`` frames at once, then one a
    period; the job, stepped whenever it is due, writes every frame at least three periods (or all the
    lead leaves beyond the prebuffer, if less) before it is read, in looks of ``pace`` frames, each
    one step; the block way and the frame way alike."""
    monkeypatch.setattr(ActiveJob, "BLOCKS", blocks)
    pace = pace_frames(lead, prebuffer)
    assert pace == {(20, 10): 8, (15, 10): 4, (30, 10): 8, (10, 10): 1, (11, 10): 1, (10, 5): 4}[lead, prebuffer]
    period = 0.02
    with FrameRing.create(capacity=50, overflow="block") as ring:
        job = Job("s", 1, "A paced job, stepped when it is due, for a few seconds of speech.", ring.handle)
        active = ActiveJob(
            job,
            ring,
            SyntheticBackend(native_rate=48_000, rtf=0.0),
            spec(lead_frames=lead, prebuffer_ms=prebuffer * 20),
        )
        written: list[float] = []  # when each frame was written
        looks = steps = pos = 0
        out = np.empty(960, np.int16)
        t0, now, status = 100.0, 100.0, ""
        while status != "done":
            if active.retry_at <= now:
                before = ring.write_seq
                status = active.step(now)
                steps += 1
                written += [now] * (ring.write_seq - before)
                looks += ring.write_seq > before
            # the server: the prebuffer at once, then a frame a period (it reads what is there)
            while pos < min(ring.write_seq, prebuffer + int((now - t0) / period + 1e-9)):
                ring.read(pos, out)
                pos += 1
            now = round(now + 0.001, 6)
    n = len(written)
    assert n > 100
    due_at = [t0 + max(0, k - prebuffer + 1) * period for k in range(n)]  # (the burst's last at t0)
    margins = [(due - at) / period for due, at in zip(due_at, written, strict=True)]
    # once past the first burst: lead - prebuffer - pace + 2 periods, three or more when the lead allows
    margin = lead - prebuffer - pace + 2
    assert margin >= min(3, lead - prebuffer + 1)
    assert min(margins[lead + 1 :]) >= margin - 0.06  # (a wake-up within the 1 ms step)
    assert looks <= n / pace + 3  # one look per pace frames (after the first burst) ...
    assert steps <= looks + 4  # ... each one step (not a second to learn the next frame is not due)


class Chunky(Backend):
    """Chunks of awkward sizes at the wire's rate (or at 22 050 Hz: resampled), a silent one among them."""

    name = "chunky"
    model_id = "chunky"

    def __init__(self, rate: int) -> None:
        self.native_rate = rate
        self.pulled = 0  # chunks handed out: the engine's work so far

    def synthesize(self, text: str, voice: str | None = None):  # type: ignore[no-untyped-def]
        rng = np.random.default_rng(len(text))
        for size in (7, 5000, 1, 961, 0, 19_999, 300, 2048, 4410) * 4:
            self.pulled += 1
            yield (rng.standard_normal(size) * 0.2).astype(np.float32)


def drive(blocks: bool, backend: Chunky, lead: int, overflow: str) -> tuple[list[str], list[list[int]], np.ndarray]:
    """Step one job to its end on a simulated clock, a gating reader taking a frame every 20 ms:
    every status (with the chunks asked of the voice by then), and every frame with its label as the
    reader got them."""
    ActiveJob.BLOCKS = blocks
    try:
        with FrameRing.create(capacity=40, overflow=overflow, high_watermark=0.5, low_watermark=0.25) as ring:
            active = ActiveJob(Job("s", 3, "x" * 40, ring.handle), ring, backend, spec(lead_frames=lead))
            assert active._blocks is blocks
            statuses: list[str] = []
            labels: list[list[int]] = []
            frames = []
            out = np.empty(960, np.int16)
            label = np.zeros(layout.LABEL_WORDS, np.int64)
            now, status, pos = 100.0, "", 0
            while status != "done" or pos < ring.write_seq:
                if status != "done":
                    status = active.step(now)
                    statuses.append(f"{status} after {backend.pulled} chunks")  # no chunk asked for early
                if pos < ring.write_seq:  # one frame per period (the ring's default reader gates the writer)
                    r = ring.read_labelled(pos, out, label)
                    if r == 0:
                        labels.append(label.tolist())
                        frames.append(out.copy())
                        pos += 1
                    else:  # lapped (drop_oldest): resume at the oldest, and say so
                        statuses.append(f"lapped at {pos}")
                        pos = ring.oldest(pos)
                now += 0.02
            return statuses, labels, np.array(frames)
    finally:
        ActiveJob.BLOCKS = True


@pytest.mark.parametrize("rate", [48_000, 22_050])
@pytest.mark.parametrize(("lead", "overflow"), [(0, "block"), (6, "block"), (0, "drop_oldest")])
def test_the_block_way_writes_what_the_frame_way_writes(rate: int, lead: int, overflow: str) -> None:
    """The same statuses step by step (pacing, the watermark), and the same frames and labels."""
    ways = [drive(blocks, Chunky(rate), lead, overflow) for blocks in (False, True)]
    (s0, l0, f0), (s1, l1, f1) = ways
    assert s0 == s1
    assert l0 == l1
    assert np.array_equal(f0, f1)
    assert len(l0) > 40 and np.abs(f0).max() > 1000  # a real utterance (lapped, under drop_oldest)
    assert l0[-1][1] == wire.FLAG_LAST and not any(lab[1] for lab in l0[1:-1])
    assert l0[0][1] == wire.FLAG_FIRST or overflow == "drop_oldest"  # (the first may be lapped)
    if lead:
        assert any(status.startswith("paced") for status in s0)
    if overflow == "block" and not lead:  # (paced, the writer stays under the watermark)
        assert any(status.startswith("blocked") for status in s0)
    if overflow == "drop_oldest":
        assert any(status.startswith("lapped") for status in s0)
