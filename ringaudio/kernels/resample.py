"""numba kernels of the polyphase resampler (the NumPy reference is :mod:`ringaudio.resample.reference`).

``polyphase`` computes ``count`` output samples of one channel starting at output index ``n0``
from its history ``x`` (float32) whose element 0 holds input index ``base``. The
inner loop is a float32 dot product over contiguous memory, compiled with ``fastmath`` so LLVM
vectorises it (AVX2/AVX-512 FMA on x86, NEON on AArch64). Each output is computed the same way
whatever the chunking around it, so streaming output is bit-identical to one-shot output.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, fastmath=True, nogil=True, inline="always")
def _pair(r0, x0, r1, x1):  # type: ignore[no-untyped-def]
    # indices straight from range() over slices: provably in bounds and non-negative, so no
    # wraparound code stands in the way of SIMD; two independent sums keep both FMA pipes busy
    a0 = np.float32(0.0)
    a1 = np.float32(0.0)
    for k in range(r0.shape[0]):
        a0 += r0[k] * x0[k]
        a1 += r1[k] * x1[k]
    return a0, a1


@njit(cache=True, nogil=True, inline="always")
def _step(q, p, step_q, step_p, up):  # type: ignore[no-untyped-def]
    """The next output's input index and phase."""
    q += step_q
    p += step_p
    if p >= up:
        p -= up
        q += 1
    return q, p


@njit(cache=True, fastmath=True, nogil=True)
def polyphase(x, base, table, up, down, half, n0, count, out):  # type: ignore[no-untyped-def]
    """``out[j] = y[n0 + j]`` for ``j < count``, one channel: ``x[0]`` is input index ``base``.

    Outputs are computed two at a time; an odd one out is computed as a pair with itself, so every
    output goes through the very same instructions whatever the chunking - which is what makes
    streaming output bit-identical to one-shot output.
    """
    step_q = down // up
    step_p = down % up
    taps = table.shape[1]
    q = (n0 * down) // up
    p = (n0 * down) % up
    j = 0
    while j + 1 < count:
        s0, r0 = q - half + 1 - base, table[p]
        q, p = _step(q, p, step_q, step_p, up)
        s1, r1 = q - half + 1 - base, table[p]
        q, p = _step(q, p, step_q, step_p, up)
        a0, a1 = _pair(r0, x[s0 : s0 + taps], r1, x[s1 : s1 + taps])
        out[j] = a0
        out[j + 1] = a1
        j += 2
    if j < count:
        s0, r0 = q - half + 1 - base, table[p]
        a0, _ = _pair(r0, x[s0 : s0 + taps], r0, x[s0 : s0 + taps])
        out[j] = a0


@njit(cache=True, nogil=True)
def append(hist, fill, chunk):  # type: ignore[no-untyped-def]
    """Copy ``chunk`` (n, channels) into planar ``hist`` at column ``fill``.

    Returns the index of the first non-finite sample, or -1. (Not fastmath: it must see NaN.)
    """
    for i in range(chunk.shape[0]):
        for c in range(chunk.shape[1]):
            v = chunk[i, c]
            if not np.isfinite(v):
                return i
            hist[c, fill + i] = v
    return -1


@njit(cache=True, nogil=True)
def to_int16(x, out):  # type: ignore[no-untyped-def]
    """float32 in [-1, 1) -> int16: round half to even, clip to [-32768, 32767]. -1 or a bad index.

    Written to vectorise: one branch-free pass converts (``v * 32768`` is exact in float32, so
    rounding it there is rounding the exact product) while an OR of the exponent bits notes any
    NaN or infinity; only then does a second pass look for the first of them (what is in ``out``
    from it on is then undefined)."""
    flat_in = x.reshape(-1)
    flat_out = out.reshape(-1)
    bits = flat_in.view(np.uint32)
    special = np.uint32(0)
    for i in range(flat_in.shape[0]):
        special |= (bits[i] & np.uint32(0x7F800000)) == np.uint32(0x7F800000)
        r = np.rint(flat_in[i] * np.float32(32768.0))
        r = min(max(r, np.float32(-32768.0)), np.float32(32767.0))
        flat_out[i] = np.int16(r)
    if special:
        for i in range(flat_in.shape[0]):
            if not np.isfinite(flat_in[i]):
                return i
    return -1


# state words of a stream, kept in a small int64 array the kernel updates in place
BASE, FILL, NEXT, TOTAL = 0, 1, 2, 3
NEED_ROOM = -1  # the history buffer must grow first (the caller grows it and calls again)
OUT_TOO_SMALL = -2
NON_FINITE = -3  # ... and below: -3 - index of the first bad sample


@njit(cache=True, nogil=True)
def stream_step(hist, state, chunk, table, up, down, half, out):  # type: ignore[no-untyped-def]
    """One ``process()`` call in one kernel: make room, append ``chunk`` (checked), compute what is ready.

    Returns the number of outputs written to ``out`` (count, channels), or NEED_ROOM,
    OUT_TOO_SMALL, or ``NON_FINITE - i``. On any negative result the stream is unchanged.
    """
    base, fill, nxt, total = state[BASE], state[FILL], state[NEXT], state[TOTAL]
    n = chunk.shape[0]
    ready = total + n - half
    end = -((-ready * up) // down) if ready > 0 else 0
    count = end - nxt
    if count > out.shape[0]:
        return OUT_TOO_SMALL
    if fill + n > hist.shape[1]:
        drop = (nxt * down) // up - half + 1 - base  # history no output needs any more
        if drop > 0:
            for c in range(hist.shape[0]):
                for i in range(fill - drop):
                    hist[c, i] = hist[c, i + drop]
            base += drop
            fill -= drop
            state[BASE] = base
            state[FILL] = fill
        if fill + n > hist.shape[1]:
            return NEED_ROOM
    bad = append(hist, fill, chunk)
    if bad >= 0:
        return NON_FINITE - bad
    for c in range(hist.shape[0]):
        polyphase(hist[c], base, table, up, down, half, nxt, count, out[:, c])
    state[FILL] = fill + n
    state[NEXT] = nxt + count
    state[TOTAL] = total + n
    return count
