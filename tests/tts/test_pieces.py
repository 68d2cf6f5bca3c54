"""The pure parts of the workers: text splitting, framing, configuration, the synthetic backend."""

from __future__ import annotations

import numpy as np
import pytest

from ringaudio.tts import Framer, SyntheticBackend, split_text


def test_split_text_at_sentences_and_long_clauses() -> None:
    assert split_text("Hello there. How are you?  Fine!") == ["Hello there.", "How are you?", "Fine!"]
    long = "This first sentence goes on, and on, and on for a good while, well past the clause limit; then stops."
    pieces = split_text(long, clause_chars=30)
    assert len(pieces) > 2 and all(len(p) <= 40 for p in pieces[:-1])
    assert " ".join(pieces) == long  # nothing lost, nothing reordered
    assert split_text("   \n\n  ") == []
    assert split_text("one\n\ntwo") == ["one", "two"]


def test_framer_cuts_exact_frames_and_pads_the_last() -> None:
    framer = Framer(960)
    x = np.linspace(-0.5, 0.5, 2500, dtype=np.float32)
    frames = [f.copy() for chunk in np.array_split(x, 7) for f in framer.push(chunk)]
    assert len(frames) == 2 and framer.pending == 2500 - 1920
    tail = [f.copy() for f in framer.flush()]
    assert len(tail) == 1 and framer.frames == 3
    joined = np.concatenate(frames + tail)
    assert joined.dtype == np.int16 and len(joined) == 2880
    assert np.array_equal(joined[:2500], np.rint(x * 32768).astype(np.int16))
    assert not joined[2500:].any()


def test_synthetic_backend_is_deterministic_speech_length_and_voiced() -> None:
    b = SyntheticBackend(native_rate=16_000, rtf=0.0)
    text = "Hello there, general. How are you?"
    a = np.concatenate(list(b.synthesize(text)))
    again = np.concatenate(list(b.synthesize(text)))
    assert np.array_equal(a, again)
    assert len(a) == round(b.duration(text) * 16_000)
    assert 1.5 < b.duration(text) < 4.0  # speech length for a short sentence
    assert np.sqrt(np.mean(a**2)) > 0.02 and np.max(np.abs(a)) <= 1.0
    # pauses at punctuation are silent: the 0.3 s after the full stop holds a stretch of zeros
    runs = np.diff(np.flatnonzero(np.abs(a) > 1e-4))
    assert runs.max() > 0.25 * 16_000


def test_synthetic_backend_plays_a_slow_model() -> None:
    import time

    b = SyntheticBackend(rtf=1.5)
    t0 = time.monotonic()
    n = sum(len(c) for c in b.synthesize("Hi."))
    took = time.monotonic() - t0
    assert took >= 1.4 * n / b.native_rate  # RTF 1.5: slower than real time


@pytest.mark.parametrize("kernel", [True, False])
@pytest.mark.parametrize("blocks", [False, True])
def test_framer_gives_the_same_frames_whatever_the_chunking(
    blocks: bool, kernel: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Chunks converted whole (views of one buffer) or frame by frame, handed out as frames or as
    blocks, cut by the C kernel or in NumPy: the same int16 frames, the same count, and a non-finite
    sample still fails after the frames before it, at its index."""
    from ringaudio.errors import NonFiniteSamples
    from ringaudio.resample import float32_to_int16
    from ringaudio.tts import framer as framing
    from ringaudio.tts.framer import Framer

    if not kernel:
        monkeypatch.setattr(framing, "_cut", None)
    elif framing._cut is None:
        pytest.skip("the C kernels are not built")

    def push(framer: Framer, samples: np.ndarray) -> list[np.ndarray]:
        if blocks:
            return [f.copy() for block in framer.push_blocks(samples) for f in block]
        return [f.copy() for f in framer.push(samples)]

    def flush(framer: Framer) -> list[np.ndarray]:
        if blocks:
            return [f.copy() for block in framer.flush_blocks() for f in block]
        return [f.copy() for f in framer.flush()]

    rng = np.random.default_rng(7)
    x = (rng.standard_normal(960 * 37 + 123) * 0.4).astype(np.float32)
    expected = float32_to_int16(np.concatenate([x, np.zeros(-len(x) % 960, np.float32)])).reshape(-1, 960)
    for sizes in ([len(x)], [1] * 2000 + [len(x) - 2000], list(rng.integers(1, 5000, 200))):
        framer, got, at = Framer(960), [], 0
        for size in sizes:
            got += push(framer, x[at : at + size])
            at += size
            if at >= len(x):
                break
        if at < len(x):
            got += push(framer, x[at:])
        got += flush(framer)
        assert np.array_equal(np.array(got), expected) and framer.frames == len(expected)
    bad = x[: 960 * 5].copy()
    bad[960 * 3 + 10] = np.nan
    for samples in (bad, bad.astype(np.float64)):  # float64 samples take the same path
        for first in (0, 500):  # ... and a frame begun by an earlier push
            framer = Framer(960)
            before = push(framer, samples[:first])
            with pytest.raises(NonFiniteSamples) as caught:
                if blocks:
                    for block in framer.push_blocks(samples[first:]):
                        before += [f.copy() for f in block]
                else:
                    for f in framer.push(samples[first:]):
                        before.append(f.copy())
            assert np.array_equal(np.array(before), expected[:3])
            # counted from the first sample after the begun frame (the first of the frames)
            assert caught.value.index == 960 * 3 + 10 - (960 if first else 0)
            assert framer.frames == 3
    framer = Framer(960)  # a bad sample in the begun frame: nothing goes, its index in that frame
    push(framer, x[:500])
    with pytest.raises(NonFiniteSamples) as caught:
        push(framer, np.concatenate([np.array([np.nan], np.float32), x[: 960 * 2]]))
    assert caught.value.index == 500 and framer.frames == 0


@pytest.mark.parametrize("kernel", [True, False])
def test_framer_keeps_the_frames_a_writer_holds_back_in_front_of_the_next_block(
    kernel: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A writer that takes all but the last k frames of each block and sets ``keep = k`` gets them
    back at the front of the next block (from a push or the flush), and so takes every frame once,
    in order; a keep longer than the last block is refused."""
    from ringaudio.resample import float32_to_int16
    from ringaudio.tts import framer as framing

    if not kernel:
        monkeypatch.setattr(framing, "_cut", None)
    elif framing._cut is None:
        pytest.skip("the C kernels are not built")
    rng = np.random.default_rng(11)
    x = (rng.standard_normal(960 * 41 + 77) * 0.4).astype(np.float32)
    expected = float32_to_int16(np.concatenate([x, np.zeros(-len(x) % 960, np.float32)])).reshape(-1, 960)
    framer, taken, at, waiting = framing.Framer(960), [], 0, 0
    sizes = [int(s) for s in rng.integers(1, 4000, 60)]
    blocks = []
    for size in sizes:
        framer.keep = waiting
        blocks += [b for b in framer.push_blocks(x[at : at + size])]
        at += size
        if blocks:
            block = blocks.pop()
            assert len(block) >= waiting
            waiting = min(len(block), int(rng.integers(0, 3)))  # hold back 0..2 frames
            taken += [f.copy() for f in block[: len(block) - waiting]]
        if at >= len(x):
            break
    framer.keep = waiting
    (last,) = list(framer.flush_blocks())
    taken += [f.copy() for f in last]
    assert np.array_equal(np.array(taken), expected)
    framer.keep = 5
    with pytest.raises(ValueError, match="keep must be in"):
        list(framer.push_blocks(x[: 960 * 3]))


def test_the_cut_kernel_refuses_what_would_write_outside_its_arrays() -> None:
    """Bounds (a huge row0 included: no overflow), ``have`` out of range, an aliased pending and
    wrong types are refused; the arrays are left as they were."""
    from ringaudio.tts import framer as framing

    cut = framing._cut
    if cut is None:
        pytest.skip("the C kernels are not built")
    x, pending, out = np.ones(8, np.float32), np.zeros(4, np.float32), np.zeros((2, 4), np.int16)
    for row0, have in ((2**63 - 1, 0), (1, 0), (3, 0), (-1, 0), (0, 4), (0, -1)):
        with pytest.raises(ValueError, match="cut: have must be"):
            cut(x, pending, have, out, row0)
    with pytest.raises(ValueError, match="x is not pending"):
        cut(pending, pending, 0, out, 0)
    with pytest.raises(TypeError):
        cut(x.astype(np.float64), pending, 0, out, 0)
    assert not out.any() and not pending.any()
    assert cut(x, pending, 0, out, 0) is None and (out == 32767).all()  # 1.0 clips to the top
