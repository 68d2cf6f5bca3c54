"""numba kernels of the frame ring: the per-frame hot paths, one call each.

Each kernel takes the ring's control words (``ctrl``: control lines, reader
lines and stamp lines, ``uint64``) and its slot array (``slots``: ``(capacity,
samples * channels)``; frames are flat here) and does all the shared-memory
work of one operation, so the Python layer pays one dispatch per frame or per
batch. The caller validates shapes and dtypes; nothing here allocates. The
sleeping protocol, leases and reader slots (the slow paths) are in
:mod:`ringaudio.kernels.ring_slow`; the stamp and watermark rules are the
compiled functions of :mod:`ringaudio.ring.layout`.

Results are small integers so nothing is boxed: a non-negative result is
``value << 1 | wake``, where ``wake`` asks the caller to wake the other side's
futex; each refusal has a code of its own (below).

Memory ordering is a seqlock: the writer stores an odd stamp, fences
(release), writes the label and copies the samples, then publishes the even
stamp with release and the write cursor with seq_cst; the reader loads the
stamp with acquire, copies the label and the samples, fences (acquire) and
re-reads the stamp. The sleeping protocol is Dekker-style (seq_cst store, then
seq_cst load) on both sides, so a sleeper and a waker can never both miss each
other.
"""

from __future__ import annotations

import numpy as np
from numba import njit
from numba.extending import register_jitable

from ..ring import layout
from ..ring.layout import (
    BLOCK,
    C_DROPPED,
    C_FULL_COUNT,
    C_GENERATION,
    C_HIGH,
    C_LIMIT,
    C_LOW,
    C_PAUSED,
    C_POLICY,
    C_READERS_WAITING,
    C_SPACE_EVENT,
    C_STATE,
    C_WAKE_AT,
    C_WRITE_SEQ,
    C_WRITER_WAITING,
    LABEL_WORDS,
    LEASED,
    LINE_WORDS,
    MAX_GATING_READERS,
    R_ACTIVE,
    R_POS,
    READER0,
    READY,
    S_BYTES,
    S_FLAGS,
    S_FORMAT,
    S_UTTERANCE,
    STAMP0,
    STAMP_STRIDE,
    classify,
    must_pause,
    stamp_published,
    stamp_writing,
)
from ..ring.layout import (
    OVERRUN as STAMP_OVERRUN,
)
from .atomics import (
    cpu_relax,
    exchange,
    fence_acquire,
    fence_release,
    fetch_add,
    load_acquire,
    load_relaxed,
    load_seq_cst,
    store_relaxed,
    store_release,
    store_seq_cst,
)

# The layout's rules, compiled where these kernels call them (they stay plain Python elsewhere).
for _rule in (layout.stamp_writing, layout.stamp_published, layout.classify, layout.must_pause):
    register_jitable(_rule)

# Refusals, one code each (a non-negative result is a success).
WAIT = -1  # writer: the ring is at its high watermark (block); wait for the readers
CLOSED = -2  # writer: the ring is closed or its lease has ended
BAD_ARGUMENT = -3  # a frame of the wrong length, or a negative sequence: the caller re-checks and raises
NOT_READY = -4  # reader: the frame is not written yet
OVERRUN = -5  # reader: the frame was overwritten before (or while) it was read


@njit(cache=True, nogil=True)
def ld(ctrl, i):  # type: ignore[no-untyped-def]
    """Acquire-load of a control word, as int64 (uint64/int64 mixes become floats in numba)."""
    return np.int64(load_acquire(ctrl, i))


@njit(cache=True, nogil=True)
def _copy(dst, src):  # type: ignore[no-untyped-def]
    # an explicit loop vectorises; slice assignment goes through numba's generic broadcasting (3x slower)
    for i in range(dst.shape[0]):
        dst[i] = src[i]


@njit(cache=True, nogil=True)
def verdict(stamp, gen, seq):  # type: ignore[no-untyped-def]
    """A slot's stamp as a reader's result: 0 (ready), NOT_READY or OVERRUN."""
    c = classify(stamp, gen, seq)
    if c == READY:
        return 0
    return OVERRUN if c == STAMP_OVERRUN else NOT_READY


@njit(cache=True, nogil=True)
def min_gating_position(ctrl):  # type: ignore[no-untyped-def]
    """Smallest published position over the active gating readers (write_seq if none)."""
    low = np.int64(load_relaxed(ctrl, C_WRITE_SEQ))
    for g in range(MAX_GATING_READERS):
        base = READER0 + g * LINE_WORDS
        if load_acquire(ctrl, base + R_ACTIVE) == 1:
            pos = np.int64(load_seq_cst(ctrl, base + R_POS))
            if pos < low:
                low = pos
    return low


@njit(cache=True, nogil=True)
def _admit(ctrl, capacity, gen):  # type: ignore[no-untyped-def]
    """May the writer put the next frame? 0 yes, WAIT, or CLOSED. Applies policy bookkeeping.

    Under ``block`` the writer caches how far it may go (``C_LIMIT``) and looks
    at the readers' positions only when it gets there, as a Disruptor producer
    caches its gating sequence: positions only grow, so the cache is safe, and
    the readers' cache lines are not pulled to the writer on every frame.
    """
    if ld(ctrl, C_GENERATION) != gen or ld(ctrl, C_STATE) != LEASED:
        return CLOSED
    w = np.int64(load_relaxed(ctrl, C_WRITE_SEQ))
    paused = load_relaxed(ctrl, C_PAUSED) != 0
    if ld(ctrl, C_POLICY) == BLOCK:
        if not paused and w < np.int64(load_relaxed(ctrl, C_LIMIT)):
            return 0
        fill = w - min_gating_position(ctrl)
        high = ld(ctrl, C_HIGH)
        if must_pause(fill, paused, high, ld(ctrl, C_LOW)):
            if not paused:
                store_relaxed(ctrl, C_PAUSED, 1)
                store_relaxed(ctrl, C_FULL_COUNT, load_relaxed(ctrl, C_FULL_COUNT) + np.uint64(1))
            return WAIT
        if paused:
            store_relaxed(ctrl, C_PAUSED, 0)
        store_relaxed(ctrl, C_LIMIT, w + high - fill)
        return 0
    # drop_oldest: never waits; count frames the default reader never got
    dropping = w >= capacity and np.int64(load_seq_cst(ctrl, READER0 + R_POS)) <= w - capacity
    if dropping:
        store_relaxed(ctrl, C_DROPPED, load_relaxed(ctrl, C_DROPPED) + np.uint64(1))
        if not paused:
            store_relaxed(ctrl, C_PAUSED, 1)
            store_relaxed(ctrl, C_FULL_COUNT, load_relaxed(ctrl, C_FULL_COUNT) + np.uint64(1))
    elif paused:
        store_relaxed(ctrl, C_PAUSED, 0)
    return 0


@njit(cache=True, nogil=True)
def _put(ctrl, slots, frame, gen, w, utterance, flags, fmt, nbytes):  # type: ignore[no-untyped-def]
    line = STAMP0 + (w % slots.shape[0]) * STAMP_STRIDE
    store_relaxed(ctrl, line, stamp_writing(gen, w))
    fence_release()
    store_relaxed(ctrl, line + S_UTTERANCE, utterance)
    store_relaxed(ctrl, line + S_FLAGS, flags)
    store_relaxed(ctrl, line + S_FORMAT, fmt)
    store_relaxed(ctrl, line + S_BYTES, nbytes if nbytes > 0 else slots.shape[1] * slots.itemsize)
    _copy(slots[w % slots.shape[0]], frame)
    store_release(ctrl, line, stamp_published(gen, w))
    store_seq_cst(ctrl, C_WRITE_SEQ, w + 1)


@njit(cache=True, nogil=True)
def write_frame(ctrl, slots, frame, gen, utterance, flags, fmt, nbytes):  # type: ignore[no-untyped-def]
    """Write one frame with its label (``nbytes``: the payload's size, 0 for the whole slot).
    Returns ``seq << 1 | wake``, WAIT, CLOSED or BAD_ARGUMENT."""
    if frame.shape[0] != slots.shape[1] or utterance < 0 or flags < 0 or fmt < 0:
        return BAD_ARGUMENT
    if nbytes < 0 or nbytes > slots.shape[1] * slots.itemsize:
        return BAD_ARGUMENT
    admitted = _admit(ctrl, slots.shape[0], gen)
    if admitted != 0:
        return admitted
    w = np.int64(load_relaxed(ctrl, C_WRITE_SEQ))
    _put(ctrl, slots, frame, gen, w, utterance, flags, fmt, nbytes)
    wake = 1 if load_seq_cst(ctrl, C_READERS_WAITING) != 0 else 0
    return (w << 1) | wake


@njit(cache=True, nogil=True)
def write_labelled_block(ctrl, slots, block, gen, utterance, first, last, fmt):  # type: ignore[no-untyped-def]
    """Write frames of ``block`` until done or told to wait, each labelled ``utterance`` and ``fmt``
    (whole slots); row 0 gets flags ``first`` and the block's last row ``last`` (both, for one row),
    the rows between none. Returns ``n << 1 | wake``, WAIT, CLOSED or BAD_ARGUMENT."""
    if block.shape[1] != slots.shape[1] or utterance < 0 or first < 0 or last < 0 or fmt < 0:
        return BAD_ARGUMENT
    n = 0
    count = block.shape[0]
    for i in range(count):
        admitted = _admit(ctrl, slots.shape[0], gen)
        if admitted != 0:
            if n == 0:
                return admitted
            break
        flags = (first if i == 0 else 0) | (last if i == count - 1 else 0)
        _put(ctrl, slots, block[i], gen, np.int64(load_relaxed(ctrl, C_WRITE_SEQ)), utterance, flags, fmt, 0)
        n += 1
    wake = 1 if load_seq_cst(ctrl, C_READERS_WAITING) != 0 else 0
    return (n << 1) | wake


@njit(cache=True, nogil=True)
def write_block(ctrl, slots, block, gen):  # type: ignore[no-untyped-def]
    """Write frames of ``block`` (unlabelled) until done or told to wait. Returns ``n << 1 | wake``,
    WAIT, CLOSED or BAD_ARGUMENT."""
    return write_labelled_block(ctrl, slots, block, gen, 0, 0, 0, 0)


@njit(cache=True, nogil=True)
def _advance(ctrl, reader, new_pos):  # type: ignore[no-untyped-def]
    """Publish a gating reader's position; 1 if the writer asked to be woken at it."""
    if reader < 0:
        return 0
    p = READER0 + reader * LINE_WORDS + R_POS
    if new_pos > np.int64(load_relaxed(ctrl, p)):
        store_seq_cst(ctrl, p, new_pos)
    # whoever clears the flag wakes the writer: one wake-up per sleep, not one per read
    if (
        load_seq_cst(ctrl, C_WRITER_WAITING) != 0
        and new_pos >= ld(ctrl, C_WAKE_AT)
        and exchange(ctrl, C_WRITER_WAITING, 0) != 0
    ):
        fetch_add(ctrl, C_SPACE_EVENT, 1)
        return 1
    return 0


@njit(cache=True, nogil=True)
def advance(ctrl, reader, new_pos):  # type: ignore[no-untyped-def]
    """Publish a gating reader's position without reading (a reader that skips frames)."""
    return _advance(ctrl, reader, new_pos)


@njit(cache=True, nogil=True)
def _open(ctrl, capacity, seq, gen):  # type: ignore[no-untyped-def]
    """Begin reading frame ``seq``: its slot's stamp (> 0) if the slot holds it, else NOT_READY or
    OVERRUN."""
    s1 = np.int64(load_acquire(ctrl, STAMP0 + (seq % capacity) * STAMP_STRIDE))
    v = verdict(s1, gen, seq)
    return s1 if v == 0 else v


@njit(cache=True, nogil=True)
def _intact(ctrl, capacity, seq, s1):  # type: ignore[no-untyped-def]
    """End reading frame ``seq``: was the slot left alone while it was copied?"""
    fence_acquire()
    return np.int64(load_relaxed(ctrl, STAMP0 + (seq % capacity) * STAMP_STRIDE)) == s1


@njit(cache=True, nogil=True)
def _get(ctrl, slots, seq, out, gen):  # type: ignore[no-untyped-def]
    s1 = _open(ctrl, slots.shape[0], seq, gen)
    if s1 < 0:
        return s1
    _copy(out, slots[seq % slots.shape[0]])
    return 0 if _intact(ctrl, slots.shape[0], seq, s1) else OVERRUN


@njit(cache=True, nogil=True)
def read_frame(ctrl, slots, seq, out, gen, reader):  # type: ignore[no-untyped-def]
    """Copy frame ``seq`` into ``out``. Returns ``0 | wake``, NOT_READY, OVERRUN or BAD_ARGUMENT."""
    if out.shape[0] != slots.shape[1] or seq < 0:
        return BAD_ARGUMENT
    got = _get(ctrl, slots, seq, out, gen)
    if got != 0:
        return got
    return _advance(ctrl, reader, seq + 1)


@njit(cache=True, nogil=True)
def read_labelled(ctrl, slots, seq, out, label, gen, reader):  # type: ignore[no-untyped-def]
    """Copy frame ``seq`` into ``out`` and its label (utterance, flags, format, bytes) into ``label``
    (int64, LABEL_WORDS). Returns ``0 | wake``, NOT_READY, OVERRUN or BAD_ARGUMENT."""
    capacity = slots.shape[0]
    if out.shape[0] != slots.shape[1] or seq < 0 or label.shape[0] != LABEL_WORDS:
        return BAD_ARGUMENT
    s1 = _open(ctrl, capacity, seq, gen)
    if s1 < 0:
        return s1
    line = STAMP0 + (seq % capacity) * STAMP_STRIDE
    for i in range(LABEL_WORDS):
        label[i] = np.int64(load_relaxed(ctrl, line + S_UTTERANCE + i))
    _copy(out, slots[seq % capacity])
    if not _intact(ctrl, capacity, seq, s1):
        return OVERRUN
    return _advance(ctrl, reader, seq + 1)


@njit(cache=True, nogil=True)
def read_block(ctrl, slots, seq, out, gen, reader):  # type: ignore[no-untyped-def]
    """Copy up to ``len(out)`` frames from ``seq``. Returns ``n << 1 | wake`` (n >= 1), NOT_READY or OVERRUN.

    Stops early at the first frame that is not ready or was overrun; the next
    call starting there reports it.
    """
    n = 0
    for i in range(out.shape[0]):
        got = _get(ctrl, slots, seq + i, out[i], gen)
        if got != 0:
            if n == 0:
                return got
            break
        n += 1
    return (n << 1) | _advance(ctrl, reader, seq + n)


@njit(cache=True, nogil=True)
def readable(ctrl, capacity, seq, gen, spins):  # type: ignore[no-untyped-def]
    """Spin up to ``spins`` atomic loads for ``seq``: 0 ready, NOT_READY, OVERRUN."""
    slot = STAMP0 + (seq % capacity) * STAMP_STRIDE
    v = NOT_READY
    for _ in range(spins + 1):
        v = verdict(np.int64(load_acquire(ctrl, slot)), gen, seq)
        if v != NOT_READY:
            break
        cpu_relax()
    return v
