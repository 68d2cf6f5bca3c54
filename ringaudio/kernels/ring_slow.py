"""numba kernels of the frame ring's slow paths: sleeping, leases and gating-reader slots.

These run when a writer must wait for room, a reader for data, a lease starts or
a reader joins: not per frame. The per-frame paths and the result codes are in
:mod:`ringaudio.kernels.ring`.
"""

from __future__ import annotations

import numpy as np
from numba import njit

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
    R_CLAIMING,
    R_PID,
    R_POS,
    READER0,
    STAMP0,
    STAMP_STRIDE,
)
from . import ring as hot
from .atomics import compare_exchange, cpu_relax, fetch_add, load_relaxed, load_seq_cst, store_relaxed, store_seq_cst

_MINUS_ONE = np.uint64(0xFFFFFFFFFFFFFFFF)


@njit(cache=True, nogil=True)
def begin_reader_wait(ctrl, capacity, seq, gen):  # type: ignore[no-untyped-def]
    """Announce a sleeping reader; returns the futex word to sleep on, or -1 if ``seq`` is ready now."""
    word = np.int64(load_seq_cst(ctrl, C_WRITE_SEQ)) & 0xFFFFFFFF
    fetch_add(ctrl, C_READERS_WAITING, 1)
    if hot.readable(ctrl, capacity, seq, gen, 0) != hot.NOT_READY or hot.ld(ctrl, C_STATE) != LEASED:
        fetch_add(ctrl, C_READERS_WAITING, _MINUS_ONE)
        return -1
    return word


@njit(cache=True, nogil=True)
def end_reader_wait(ctrl):  # type: ignore[no-untyped-def]
    fetch_add(ctrl, C_READERS_WAITING, _MINUS_ONE)


@njit(cache=True, nogil=True)
def begin_writer_wait(ctrl):  # type: ignore[no-untyped-def]
    """Announce a sleeping writer; returns the futex word to sleep on, or -1 if there is room now."""
    word = np.int64(load_seq_cst(ctrl, C_SPACE_EVENT)) & 0xFFFFFFFF
    w = np.int64(load_relaxed(ctrl, C_WRITE_SEQ))
    store_relaxed(ctrl, C_WAKE_AT, w - hot.ld(ctrl, C_LOW))
    store_seq_cst(ctrl, C_WRITER_WAITING, 1)
    if w - hot.min_gating_position(ctrl) <= hot.ld(ctrl, C_LOW) or hot.ld(ctrl, C_STATE) != LEASED:
        store_relaxed(ctrl, C_WRITER_WAITING, 0)
        return -1
    return word


@njit(cache=True, nogil=True)
def space_after_spin(ctrl, spins):  # type: ignore[no-untyped-def]
    """Spin up to ``spins`` rounds for the gating readers to bring the fill to the low watermark."""
    target = np.int64(load_relaxed(ctrl, C_WRITE_SEQ)) - hot.ld(ctrl, C_LOW)
    for _ in range(spins + 1):
        if hot.min_gating_position(ctrl) >= target or hot.ld(ctrl, C_STATE) != LEASED:
            return True
        cpu_relax()
    return False


@njit(cache=True, nogil=True)
def end_writer_wait(ctrl):  # type: ignore[no-untyped-def]
    store_relaxed(ctrl, C_WRITER_WAITING, 0)


@njit(cache=True, nogil=True)
def claim_gating(ctrl, start, pid):  # type: ignore[no-untyped-def]
    """Take a free gating-reader slot (1..) for a reader at ``start``; its index, or -1 if none is free.

    Safe against another process claiming at the same time: the slot goes free -> claiming (CAS),
    gets its position, and only then becomes active, so the writer never gates on a stale position.
    """
    for g in range(1, MAX_GATING_READERS):
        base = READER0 + g * LINE_WORDS
        if compare_exchange(ctrl, base + R_ACTIVE, 0, R_CLAIMING):
            store_seq_cst(ctrl, base + R_PID, pid)
            store_seq_cst(ctrl, base + R_POS, start)
            store_seq_cst(ctrl, base + R_ACTIVE, 1)
            store_seq_cst(ctrl, C_LIMIT, 0)  # make the writer look at the readers again
            return g
    return -1


@njit(cache=True, nogil=True)
def store(ctrl, i, value):  # type: ignore[no-untyped-def]
    """Sequentially consistent store of a control word (slow paths: lease, close, reader slots)."""
    store_seq_cst(ctrl, i, value)


@njit(cache=True, nogil=True)
def bump(ctrl, i):  # type: ignore[no-untyped-def]
    fetch_add(ctrl, i, 1)


@njit(cache=True, nogil=True)
def reset(ctrl, gen, policy, high, low):  # type: ignore[no-untyped-def]
    """Prepare a ring for a new lease: new generation first, so stale writers stop at once."""
    store_seq_cst(ctrl, C_GENERATION, gen)
    for i in range(STAMP0, len(ctrl)):
        store_relaxed(ctrl, i, 0)
    for g in range(MAX_GATING_READERS):
        base = READER0 + g * LINE_WORDS
        store_relaxed(ctrl, base + R_POS, 0)
        store_relaxed(ctrl, base + R_ACTIVE, 1 if g == 0 else 0)
    store_relaxed(ctrl, C_WRITE_SEQ, 0)
    store_relaxed(ctrl, C_LIMIT, 0)
    store_relaxed(ctrl, C_WRITER_WAITING, 0)
    store_relaxed(ctrl, C_PAUSED, 0)
    store_relaxed(ctrl, C_DROPPED, 0)
    store_relaxed(ctrl, C_FULL_COUNT, 0)
    store_relaxed(ctrl, C_POLICY, policy)
    store_relaxed(ctrl, C_HIGH, high)
    store_relaxed(ctrl, C_LOW, low)
    store_seq_cst(ctrl, C_STATE, LEASED)


_warmed: set[str] = set()
_DISPATCHED = (
    hot.write_frame,
    hot.write_block,
    hot.write_labelled_block,
    hot.read_frame,
    hot.read_labelled,
    hot.read_block,
)


def warm(dtype: np.dtype) -> None:
    """Compile (or load from the cache) every kernel for one frame format, on private arrays.

    Doing this before a ring is used keeps compilation off the first real frame,
    and keeps numba's compiler from ever holding references to shared memory.
    """
    key = np.dtype(dtype).str
    if key in _warmed:
        return
    for kernel in _DISPATCHED:
        kernel.disable_compile(False)
    capacity = 4
    frame_shape = (4,)
    ctrl = np.zeros(STAMP0 + capacity * STAMP_STRIDE, dtype=np.uint64)
    slots = np.zeros((capacity, *frame_shape), dtype=dtype)
    frame = np.zeros(frame_shape, dtype=dtype)
    block = np.zeros((2, *frame_shape), dtype=dtype)
    label = np.zeros(LABEL_WORDS, dtype=np.int64)
    reset(ctrl, 1, BLOCK, 3, 1)
    hot.write_frame(ctrl, slots, frame, 1, 1, 1, 1, 0)
    hot.write_block(ctrl, slots, block, 1)
    hot.write_labelled_block(ctrl, slots, block, 1, 1, 1, 2, 0)
    hot.read_frame(ctrl, slots, 0, frame, 1, 0)
    hot.read_frame(ctrl, slots, 1, frame, 1, -1)
    hot.read_labelled(ctrl, slots, 0, frame, label, 1, -1)
    hot.read_block(ctrl, slots, 0, block, 1, 0)
    hot.readable(ctrl, capacity, 0, 1, 1)
    if begin_reader_wait(ctrl, capacity, 9, 1) >= 0:
        end_reader_wait(ctrl)
    if begin_writer_wait(ctrl) >= 0:
        end_writer_wait(ctrl)
    hot.min_gating_position(ctrl)
    space_after_spin(ctrl, 1)
    claim_gating(ctrl, 0, 1)
    hot.ld(ctrl, 0)
    store(ctrl, C_STATE, LEASED)
    bump(ctrl, C_SPACE_EVENT)
    hot.advance(ctrl, 0, 0)
    for kernel in _DISPATCHED:
        # From now on a call with other argument types raises TypeError instead of compiling a
        # new variant: the Python layer relies on that to skip its own checks on the hot path.
        kernel.disable_compile()
    _warmed.add(key)
