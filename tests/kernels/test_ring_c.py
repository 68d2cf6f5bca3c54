"""The C kernels against the numba kernels: the same layout, the same results, the same words.

Each case drives both kernel sets through one sequence of operations on twin rings (two
identical control and slot arrays) and compares every result and every word after every step;
a cross-process case has a writer on one set and a reader on the other.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import random
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from ringaudio import FrameRing, RingHandle
from ringaudio.kernels import backend
from ringaudio.kernels import ring as nk
from ringaudio.kernels import ring_slow as nks
from ringaudio.ring import layout

from ..ring.patterns import bad, fill

c = pytest.importorskip("ringaudio.kernels._ring", reason="the C kernels were not built")

CONSTANTS = [
    "LINE_WORDS",
    "MAX_GATING_READERS",
    "C_WRITE_SEQ",
    "C_LIMIT",
    "C_WRITER_WAITING",
    "C_WAKE_AT",
    "C_SPACE_EVENT",
    "C_READERS_WAITING",
    "C_STATE",
    "C_GENERATION",
    "C_POLICY",
    "C_HIGH",
    "C_LOW",
    "C_PAUSED",
    "C_DROPPED",
    "C_FULL_COUNT",
    "READER0",
    "R_ACTIVE",
    "R_POS",
    "R_PID",
    "R_CLAIMING",
    "STAMP0",
    "STAMP_STRIDE",
    "S_UTTERANCE",
    "S_BYTES",
    "LABEL_WORDS",
    "LEASED",
    "BLOCK",
    "GEN_SHIFT",
    "GEN_MASK",
]


def test_the_c_kernels_are_built_for_this_layout() -> None:
    for name in CONSTANTS:
        assert getattr(c, name) == getattr(layout, name), name
    for name in ("WAIT", "CLOSED", "BAD_ARGUMENT", "NOT_READY", "OVERRUN"):
        assert getattr(c, name) == getattr(nk, name), name


def test_the_ring_runs_on_the_c_kernels_when_they_are_built() -> None:
    # what the server and the workers use unless told otherwise
    if os.environ.get(backend.ENV, "") in ("", "c"):
        assert backend.NAME == "c" and backend.hot is c


class Twins:
    """Two identical rings, one per kernel set; every call goes to both and must agree."""

    def __init__(self, capacity: int, samples: int, dtype: str) -> None:
        words = layout.STAMP0 + capacity * layout.STAMP_STRIDE
        self.ctrl = [np.zeros(words, np.uint64) for _ in range(2)]
        self.slots = [np.zeros((capacity, samples), dtype) for _ in range(2)]
        self.capacity, self.samples, self.dtype = capacity, samples, np.dtype(dtype)
        nks.warm(self.dtype)

    def call(self, name: str, *args: Any, arrays: Callable[[int], tuple[Any, ...]] | None = None) -> Any:
        """``name(ctrl, [slots,] *args)`` on both sets; ``arrays(i)`` gives the i-th set's extra arrays."""
        results = []
        for i, kernels in enumerate(((nk, nks), (c, c))):
            fn = getattr(kernels[0], name, None) or getattr(kernels[1], name)
            extra = arrays(i) if arrays else ()
            results.append(fn(self.ctrl[i], *extra, *args))
        numba_result, c_result = results
        assert _plain(numba_result) == _plain(c_result), name
        assert np.array_equal(self.ctrl[0], self.ctrl[1]), f"control words differ after {name}"
        assert np.array_equal(self.slots[0], self.slots[1]), f"slots differ after {name}"
        return numba_result


def _plain(x: Any) -> Any:
    return None if x is None else int(x)


@pytest.mark.parametrize("policy", [layout.BLOCK, layout.DROP_OLDEST])
@pytest.mark.parametrize("dtype", ["int16", "float32"])
def test_both_kernel_sets_agree_on_every_step_of_a_random_run(policy: int, dtype: str) -> None:
    rng = random.Random(f"{policy}-{dtype}")
    t = Twins(capacity=8, samples=6, dtype=dtype)
    gen = 1
    t.call("reset", gen, policy, 6, 2)
    frames = [np.arange(6, dtype=dtype) + k for k in range(4)]
    outs = [[np.zeros(6, dtype), np.zeros(6, dtype)] for _ in range(2)]
    blocks = [np.zeros((3, 6), dtype), np.zeros((3, 6), dtype)]
    labels = [np.zeros(layout.LABEL_WORDS, np.int64), np.zeros(layout.LABEL_WORDS, np.int64)]
    wb = np.stack(frames[:3])
    seen: dict[str, int] = {}
    for step in range(4000):
        op = rng.randrange(16)
        seq = max(0, int(t.ctrl[0][layout.C_WRITE_SEQ]) - rng.randrange(12))
        reader = rng.choice([-1, 0, 0, 1, 2, 3])
        if op <= 3:
            f = frames[rng.randrange(4)]
            w = t.call(
                "write_frame",
                gen,
                rng.randrange(5),
                rng.randrange(4),
                rng.randrange(3),
                rng.choice([0, 4, 12]),
                arrays=lambda i, f=f: (t.slots[i], f),  # type: ignore[misc]
            )
            seen["written" if w >= 0 else f"write {w}"] = seen.get("written" if w >= 0 else f"write {w}", 0) + 1
        elif op == 4:
            if rng.random() < 0.5:
                t.call("write_block", gen, arrays=lambda i: (t.slots[i], wb))
            else:
                labelled = (rng.randrange(5), rng.randrange(3), rng.randrange(3), rng.randrange(3))
                rows = wb[: rng.randrange(1, 4)]
                t.call("write_labelled_block", gen, *labelled, arrays=lambda i, b=rows: (t.slots[i], b))  # type: ignore[misc]
        elif op in (5, 6):
            r = [
                fn(t.ctrl[i], t.slots[i], seq, outs[0][i], gen, reader)
                for i, fn in enumerate((nk.read_frame, c.read_frame))
            ]
            assert int(r[0]) == int(r[1]) and np.array_equal(outs[0][0], outs[0][1])
            key = "read" if r[0] >= 0 else f"read {r[0]}"
            seen[key] = seen.get(key, 0) + 1
        elif op == 7:
            r = [
                fn(t.ctrl[i], t.slots[i], seq, outs[1][i], labels[i], gen, reader)
                for i, fn in enumerate((nk.read_labelled, c.read_labelled))
            ]
            assert int(r[0]) == int(r[1])
            if r[0] >= 0:
                assert np.array_equal(labels[0], labels[1]) and np.array_equal(outs[1][0], outs[1][1])
        elif op == 8:
            r = [
                fn(t.ctrl[i], t.slots[i], seq, blocks[i], gen, reader)
                for i, fn in enumerate((nk.read_block, c.read_block))
            ]
            assert int(r[0]) == int(r[1])
            if r[0] >= 0:
                n = r[0] >> 1
                assert np.array_equal(blocks[0][:n], blocks[1][:n])
        elif op == 9:
            t.call("advance", reader, seq + rng.randrange(3))
        elif op == 10:
            t.call("readable", t.capacity, seq + rng.randrange(3), gen, rng.randrange(3))
        elif op == 11:
            if t.call("begin_reader_wait", t.capacity, seq + rng.randrange(3), gen) >= 0:
                t.call("end_reader_wait")
        elif op == 12:
            if t.call("begin_writer_wait") >= 0:
                t.call("end_writer_wait")
            t.call("space_after_spin", rng.randrange(3))
        elif op == 13:
            slot = t.call("claim_gating", seq, 4242)
            if slot > 0 and rng.random() < 0.7:
                t.call("store", layout.READER0 + slot * layout.LINE_WORDS + layout.R_ACTIVE, 0)
        elif op == 14:
            t.call("min_gating_position")
            t.call("ld", rng.randrange(layout.STAMP0))
            t.call("bump", layout.C_SPACE_EVENT)
        elif rng.random() < 0.05:  # a new lease now and then: stale stamps must read as not ready
            gen += 1
            t.call("reset", gen, policy, rng.randrange(2, 8), 1)
        assert np.array_equal(t.ctrl[0], t.ctrl[1]), f"step {step}"
    # the run really wrote, read, missed and lapped, and (under block) waited
    assert seen.get("written", 0) > 50 and seen.get("read", 0) > 50, seen
    assert seen.get(f"read {nk.NOT_READY}", 0) > 0 and seen.get(f"read {nk.OVERRUN}", 0) > 0, seen
    if policy == layout.BLOCK:
        assert seen.get(f"write {nk.WAIT}", 0) > 0, seen


def test_the_c_kernels_refuse_what_they_cannot_take() -> None:
    t = Twins(capacity=4, samples=6, dtype="int16")
    ctrl, slots = t.ctrl[1], t.slots[1]
    c.reset(ctrl, 1, layout.BLOCK, 3, 1)
    out = np.zeros(6, np.int16)
    label = np.zeros(layout.LABEL_WORDS, np.int64)
    # the refusals the Python layer turns into typed errors: TypeError for what is not an array of the
    # right kind, BAD_ARGUMENT for a wrong length or a negative sequence, IndexError for a stray word
    for bad_args in [
        (ctrl, slots, 0, None, 1, 0),
        (ctrl, slots, 0, np.zeros(6, np.float32), 1, 0),
        (ctrl, slots, 0, np.zeros(12, np.int16)[::2], 1, 0),
        (ctrl, slots, 0, np.zeros(6, np.int16).view(), "1", 0),
        (ctrl.astype(np.int64), slots, 0, out, 1, 0),
        (None, slots, 0, out, 1, 0),
    ]:
        with pytest.raises(TypeError):
            c.read_frame(*bad_args)
    readonly = np.zeros(6, np.int16)
    readonly.flags.writeable = False
    with pytest.raises(TypeError):
        c.read_frame(ctrl, slots, 0, readonly, 1, 0)
    with pytest.raises(OverflowError):
        c.read_frame(ctrl, slots, 1 << 70, out, 1, 0)
    assert c.read_frame(ctrl, slots, 0, np.zeros(5, np.int16), 1, 0) == c.BAD_ARGUMENT
    assert c.read_frame(ctrl, slots, -1, out, 1, 0) == c.BAD_ARGUMENT
    assert c.read_frame(ctrl, slots, 0, out, 1, 7) == c.BAD_ARGUMENT  # no such gating reader
    assert c.read_labelled(ctrl, slots, 0, out, np.zeros(3, np.int64), 1, 0) == c.BAD_ARGUMENT
    assert c.read_frame(ctrl[: layout.STAMP0 + 2 * layout.STAMP_STRIDE], slots, 0, out, 1, 0) == c.BAD_ARGUMENT
    assert c.write_frame(ctrl, slots, out, 1, 0, 0, 0, 13) == c.BAD_ARGUMENT  # more bytes than a slot
    assert c.read_labelled(ctrl, slots, 0, out, label, 1, 0) == c.NOT_READY
    with pytest.raises(IndexError):
        c.store(ctrl, len(ctrl), 1)
    with pytest.raises(IndexError):
        c.ld(ctrl, -1)
    with pytest.raises(TypeError):
        c.read_frame(ctrl, slots, 0, out, 1)  # one argument short
    with pytest.raises(TypeError):
        c.read_frame(ctrl, slots, 0.0, out, 1, 0)  # a float is not a sequence number
    assert c.read_frame(ctrl, slots, np.int64(0), out, np.uint8(1), 0) == c.NOT_READY  # numpy's ints are


def test_waiting_for_a_negative_sequence_is_refused_whatever_the_kernels() -> None:
    from ringaudio.errors import InvalidSequence

    with FrameRing.create(capacity=4) as ring, pytest.raises(InvalidSequence):
        ring.wait(-1, timeout=0.1)


CTX = mp.get_context("spawn")


def _write_on_numba(handle: RingHandle, n: int) -> None:
    from ringaudio.kernels import backend as child_backend

    assert child_backend.NAME == "numba"
    with FrameRing.attach(handle) as ring:
        frame = np.empty(ring.frame_shape, ring.dtype)
        for seq in range(n):
            fill(frame, seq)
            ring.write(frame)


def test_a_numba_writer_and_a_c_reader_share_a_ring_across_processes(monkeypatch: pytest.MonkeyPatch) -> None:
    n = 100_000
    with FrameRing.create(capacity=16) as ring:
        monkeypatch.setenv(backend.ENV, "numba")  # the child picks its kernels at import
        child = CTX.Process(target=_write_on_numba, args=(ring.handle, n), daemon=True)
        child.start()
        monkeypatch.delenv(backend.ENV)
        out = np.empty(ring.frame_shape, ring.dtype)
        corrupt = 0
        for seq in range(n):
            while not ring.try_read(seq, out):
                assert ring.wait(seq, timeout=30), f"writer stalled at {seq}"
            corrupt += bad(out, seq) != 0
        child.join(60)
        assert child.exitcode == 0
        assert corrupt == 0 and ring.write_seq == n and ring.dropped == 0


@pytest.mark.parametrize("nbytes", [0, 1920, 80, 7])
def test_a_frame_read_as_its_message_is_the_wires_message_on_both_kernel_sets(
    nbytes: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``read_message`` (the server's read): RFC 6455 prefix, audio header, the label's payload
    bytes, straight from the slot; the numba kernels' path builds the same bytes in Python."""
    from ringaudio import wire
    from ringaudio.ring import reader

    with FrameRing.create(capacity=4) as ring:
        pcm = (np.arange(960) * 37 % 20011).astype(np.int16)
        ring.write(pcm, utterance=(1 << 33) + 5, flags=1, fmt=12345, nbytes=nbytes)
        payload = pcm.tobytes()[: nbytes or 1920]
        want = (wire.audio_message(1, 5, 0, 777, payload), (1 << 33) + 5, 1, 12345)
        assert ring.read_message(0, 777, slot=-1) == want
        assert ring.read_message(1, 777, slot=-1) == ring.NOT_READY
        monkeypatch.setattr(reader, "_read_message", None)
        assert ring.read_message(0, 777, slot=-1) == want
        assert ring.read_message(1, 777, slot=-1) == ring.NOT_READY
        assert c.WIRE_MAGIC == wire.MAGIC and c.WIRE_VERSION == wire.VERSION and c.WIRE_HEADER == wire.HEADER_SIZE


def test_a_lapped_message_read_is_an_overrun() -> None:
    with FrameRing.create(capacity=4, overflow="drop_oldest") as ring:
        for seq in range(9):
            ring.write(frame_of(seq))
        assert ring.read_message(2, 0, slot=-1) == ring.OVERRUN
        msg = ring.read_message(8, 0, slot=-1)
        assert isinstance(msg, tuple) and not bad(np.frombuffer(msg[0], np.int16, offset=4 + 24), 8)


def frame_of(seq: int) -> np.ndarray:
    out = np.empty(960, np.int16)
    fill(out, seq)
    return out
