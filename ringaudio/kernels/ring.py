"""numba kernels of the frame ring: the per-frame hot paths, one call each.

Each kernel takes the ring's control words (``ctrl``: control lines, reader
lines and stamps, ``uint64``) and its slot array (``slots``: ``(capacity,
samples * channels)``; frames are flat here) and does all the shared-memory work of one operation, so the
Python layer pays one dispatch per frame or per batch. The caller validates
shapes and dtypes; nothing here allocates.

Return codes are small integers so nothing is boxed: a non-negative result is
``value << 1 | wake`` where ``wake`` asks the caller to wake the other side's
futex; ``-1`` means "not now" (writer must wait / frame not ready) and ``-2``
"refused" (ring closed or lease moved on / frame overrun).

Memory ordering is the seqlock of DESIGN.md: the writer stores an odd stamp,
fences (release), copies, then publishes the even stamp with release and the
write cursor with seq_cst; the reader loads the stamp with acquire, copies,
fences (acquire) and re-reads the stamp. The sleeping protocol is Dekker-style
(seq_cst store, then seq_cst load) on both sides, so a sleeper and a waker can
never both miss each other.
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
    GEN_MASK,
    GEN_SHIFT,
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
from .atomics import (
    compare_exchange,
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

WAIT = -1
NOT_READY = -1
CLOSED = -2
OVERRUN = -2
BAD_ARGUMENT = -3  # frame of the wrong length, or a negative sequence: the caller re-checks and raises
_MINUS_ONE = np.uint64(0xFFFFFFFFFFFFFFFF)


@njit(cache=True, nogil=True)
def ld(ctrl, i):  # type: ignore[no-untyped-def]
    """Acquire-load of a control word, as int64 (uint64/int64 mixes become floats in numba)."""
    return np.int64(load_acquire(ctrl, i))


@njit(cache=True, nogil=True)
def stamp(gen, seq, published):  # type: ignore[no-untyped-def]
    return ((np.int64(gen) & GEN_MASK) << GEN_SHIFT) | (2 * np.int64(seq) + (2 if published else 1))


@njit(cache=True, nogil=True)
def _copy(dst, src):  # type: ignore[no-untyped-def]
    # an explicit loop vectorises; slice assignment goes through numba's generic broadcasting (3x slower)
    for i in range(dst.shape[0]):
        dst[i] = src[i]


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
        if paused:
            if fill > ld(ctrl, C_LOW):
                return WAIT
            store_relaxed(ctrl, C_PAUSED, 0)
        elif fill >= high:
            store_relaxed(ctrl, C_PAUSED, 1)
            store_relaxed(ctrl, C_FULL_COUNT, load_relaxed(ctrl, C_FULL_COUNT) + np.uint64(1))
            return WAIT
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
def _put(ctrl, slots, frame, gen, w):  # type: ignore[no-untyped-def]
    capacity = slots.shape[0]
    slot = w % capacity
    store_relaxed(ctrl, STAMP0 + slot * STAMP_STRIDE, stamp(gen, w, False))
    fence_release()
    _copy(slots[slot], frame)
    store_release(ctrl, STAMP0 + slot * STAMP_STRIDE, stamp(gen, w, True))
    store_seq_cst(ctrl, C_WRITE_SEQ, w + 1)


@njit(cache=True, nogil=True)
def write_frame(ctrl, slots, frame, gen):  # type: ignore[no-untyped-def]
    """Write one frame. Returns ``seq << 1 | wake``, WAIT, CLOSED or BAD_ARGUMENT."""
    if frame.shape[0] != slots.shape[1]:
        return BAD_ARGUMENT
    verdict = _admit(ctrl, slots.shape[0], gen)
    if verdict != 0:
        return verdict
    w = np.int64(load_relaxed(ctrl, C_WRITE_SEQ))
    _put(ctrl, slots, frame, gen, w)
    wake = 1 if load_seq_cst(ctrl, C_READERS_WAITING) != 0 else 0
    return (w << 1) | wake


@njit(cache=True, nogil=True)
def write_block(ctrl, slots, block, gen):  # type: ignore[no-untyped-def]
    """Write frames of ``block`` until done or told to wait. Returns ``n << 1 | wake``, WAIT or CLOSED."""
    n = 0
    for i in range(block.shape[0]):
        verdict = _admit(ctrl, slots.shape[0], gen)
        if verdict != 0:
            if n == 0:
                return verdict
            break
        _put(ctrl, slots, block[i], gen, np.int64(load_relaxed(ctrl, C_WRITE_SEQ)))
        n += 1
    wake = 1 if load_seq_cst(ctrl, C_READERS_WAITING) != 0 else 0
    return (n << 1) | wake


@njit(cache=True, nogil=True)
def classify_stamp(s, gen, seq):  # type: ignore[no-untyped-def]
    want = stamp(gen, seq, True)
    if s == want:
        return 0
    if (s >> GEN_SHIFT) != (np.int64(gen) & GEN_MASK):
        return NOT_READY
    return NOT_READY if s < want else OVERRUN


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
def _get(ctrl, slots, seq, out, gen):  # type: ignore[no-untyped-def]
    slot = seq % slots.shape[0]
    s1 = np.int64(load_acquire(ctrl, STAMP0 + slot * STAMP_STRIDE))
    verdict = classify_stamp(s1, gen, seq)
    if verdict != 0:
        return verdict
    _copy(out, slots[slot])
    fence_acquire()
    if np.int64(load_relaxed(ctrl, STAMP0 + slot * STAMP_STRIDE)) != s1:
        return OVERRUN  # overwritten while we copied
    return 0


@njit(cache=True, nogil=True)
def read_frame(ctrl, slots, seq, out, gen, reader):  # type: ignore[no-untyped-def]
    """Copy frame ``seq`` into ``out``. Returns ``0 | wake``, NOT_READY, OVERRUN or BAD_ARGUMENT."""
    if out.shape[0] != slots.shape[1] or seq < 0:
        return BAD_ARGUMENT
    verdict = _get(ctrl, slots, seq, out, gen)
    if verdict != 0:
        return verdict
    return _advance(ctrl, reader, seq + 1)


@njit(cache=True, nogil=True)
def read_block(ctrl, slots, seq, out, gen, reader):  # type: ignore[no-untyped-def]
    """Copy up to ``len(out)`` frames from ``seq``. Returns ``n << 1 | wake`` (n >= 1), NOT_READY or OVERRUN.

    Stops early at the first frame that is not ready or was overrun; the next
    call starting there reports it.
    """
    n = 0
    for i in range(out.shape[0]):
        verdict = _get(ctrl, slots, seq + i, out[i], gen)
        if verdict != 0:
            if n == 0:
                return verdict
            break
        n += 1
    return (n << 1) | _advance(ctrl, reader, seq + n)


@njit(cache=True, nogil=True)
def readable(ctrl, capacity, seq, gen, spins):  # type: ignore[no-untyped-def]
    """Spin up to ``spins`` atomic loads for ``seq``: 0 ready, NOT_READY, OVERRUN."""
    slot = STAMP0 + (seq % capacity) * STAMP_STRIDE
    verdict = NOT_READY
    for _ in range(spins + 1):
        verdict = classify_stamp(np.int64(load_acquire(ctrl, slot)), gen, seq)
        if verdict != NOT_READY:
            break
        cpu_relax()
    return verdict


@njit(cache=True, nogil=True)
def begin_reader_wait(ctrl, capacity, seq, gen):  # type: ignore[no-untyped-def]
    """Announce a sleeping reader; returns the futex word to sleep on, or -1 if ``seq`` is ready now."""
    word = np.int64(load_seq_cst(ctrl, C_WRITE_SEQ)) & 0xFFFFFFFF
    fetch_add(ctrl, C_READERS_WAITING, 1)
    if readable(ctrl, capacity, seq, gen, 0) != NOT_READY or ld(ctrl, C_STATE) != LEASED:
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
    store_relaxed(ctrl, C_WAKE_AT, w - ld(ctrl, C_LOW))
    store_seq_cst(ctrl, C_WRITER_WAITING, 1)
    if w - min_gating_position(ctrl) <= ld(ctrl, C_LOW) or ld(ctrl, C_STATE) != LEASED:
        store_relaxed(ctrl, C_WRITER_WAITING, 0)
        return -1
    return word


@njit(cache=True, nogil=True)
def space_after_spin(ctrl, spins):  # type: ignore[no-untyped-def]
    """Spin up to ``spins`` rounds for the gating readers to bring the fill to the low watermark."""
    target = np.int64(load_relaxed(ctrl, C_WRITE_SEQ)) - ld(ctrl, C_LOW)
    for _ in range(spins + 1):
        if min_gating_position(ctrl) >= target or ld(ctrl, C_STATE) != LEASED:
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
_DISPATCHED = (write_frame, write_block, read_frame, read_block)


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
    reset(ctrl, 1, BLOCK, 3, 1)
    write_frame(ctrl, slots, frame, 1)
    write_block(ctrl, slots, block, 1)
    read_frame(ctrl, slots, 0, frame, 1, 0)
    read_frame(ctrl, slots, 1, frame, 1, -1)
    read_block(ctrl, slots, 0, block, 1, 0)
    readable(ctrl, capacity, 0, 1, 1)
    if begin_reader_wait(ctrl, capacity, 9, 1) >= 0:
        end_reader_wait(ctrl)
    if begin_writer_wait(ctrl) >= 0:
        end_writer_wait(ctrl)
    min_gating_position(ctrl)
    space_after_spin(ctrl, 1)
    claim_gating(ctrl, 0, 1)
    ld(ctrl, 0)
    store(ctrl, C_STATE, LEASED)
    bump(ctrl, C_SPACE_EVENT)
    advance(ctrl, 0, 0)
    for kernel in _DISPATCHED:
        # From now on a call with other argument types raises TypeError instead of compiling a
        # new variant: the Python layer relies on that to skip its own checks on the hot path.
        kernel.disable_compile()
    _warmed.add(key)
