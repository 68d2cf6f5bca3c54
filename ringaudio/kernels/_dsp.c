/* The two-stage resampler's kernel in C: a half-band interpolator (x2) and then a short polyphase
 * filter, streamed in one call per chunk (ringaudio/resample/design.py explains the design, and
 * ringaudio/resample/reference.py is its float64 NumPy reference).
 *
 * Both stages are computed eight outputs at a time, one output per SIMD lane, so there is no
 * horizontal sum and each tap costs one multiply-add per eight outputs:
 *   - stage 1: the odd samples of the interpolated signal, y[2m+1] = sum_k g[k] x[m-K1+1+k] (the even
 *     ones are x[m] itself: a half-band filter's other phase is a delay), with g symmetric, so each
 *     coefficient multiplies the sum of its two taps' samples;
 *   - stage 2: output lane l of block b is sum_t C[r][t][l] h[s+t], where C holds, for the block's
 *     place r in the stage's period, each lane's polyphase row shifted to where its window starts.
 * Blocks are aligned to absolute sample indices and every output goes through the same instructions
 * whichever call computes it (a block cut off by the end of a chunk is computed again, whole, by the
 * next call), so streaming output is bit-identical to one-shot output for any chunking.
 *
 * Vectors are GCC/Clang vector extensions: AVX2 and FMA where the CPU has them (a clone of each
 * kernel is chosen at load time on x86-64), SSE2 otherwise, NEON on AArch64.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "buffers.h"

/* the helpers below pass vectors by value; they are always inlined, so no ABI is at stake */
#pragma GCC diagnostic ignored "-Wpsabi"

typedef int64_t i64;
typedef float v8 __attribute__((vector_size(32)));

#define LANES 8
#define PIECE 256 /* blocks computed per scratch buffer */

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 11
#define KERNEL __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define KERNEL
#endif

/* results (as the numba kernel's): a count >= 0, or */
#define OUT_TOO_SMALL (-2)
#define NON_FINITE (-3) /* ... and below: NON_FINITE - index of the first bad sample */
#define NO_MEMORY INT64_MIN /* (not returned to Python: MemoryError) */
#define NOGIL_SAMPLES 16384 /* a chunk this long is computed without the GIL */

/* state words */
enum { BASE1, FILL1, BASE2, FILL2, NEXT, TOTAL, STATE_WORDS };
/* shape words of a design */
enum { UP, DOWN, HALF, K1, K2, UP2, DOWN2, PERIOD, ADVANCE, SPAN, SHAPE_WORDS };

static inline v8 load8(const float *p) {
    v8 v;
    memcpy(&v, p, sizeof v);
    return v;
}
static inline void store8(float *p, v8 v) { memcpy(p, &v, sizeof v); }
static inline i64 floor_div(i64 a, i64 b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }
static inline i64 floor8(i64 a) { return floor_div(a, LANES) * LANES; }

/* y[8i + l] = sum_k g[k] x[8i + l + k] for i < nblocks, g symmetric (g[k] == g[taps-1-k], taps even):
 * each coefficient weighs the sum of its two taps' samples, and four blocks at a time share it */
KERNEL static void fir_blocks(const float *x, const float *g, i64 taps, i64 nblocks, float *y) {
    const i64 half = taps / 2;
    i64 i = 0;
    for (; i + 4 <= nblocks; i += 4) {
        const float *p = x + LANES * i, *q = p + taps - 1;
        v8 a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};
        for (i64 k = 0; k < half; k++) {
            const float gk = g[k]; /* a scalar operand is broadcast to every lane */
            a0 += gk * (load8(p + k) + load8(q - k));
            a1 += gk * (load8(p + k + 8) + load8(q - k + 8));
            a2 += gk * (load8(p + k + 16) + load8(q - k + 16));
            a3 += gk * (load8(p + k + 24) + load8(q - k + 24));
        }
        store8(y + LANES * i, a0);
        store8(y + LANES * i + 8, a1);
        store8(y + LANES * i + 16, a2);
        store8(y + LANES * i + 24, a3);
    }
    for (; i < nblocks; i++) {
        const float *p = x + LANES * i, *q = p + taps - 1;
        v8 a = {0};
        for (i64 k = 0; k < half; k++) a += g[k] * (load8(p + k) + load8(q - k));
        store8(y + LANES * i, a);
    }
}

/* Stage 2, blocks b0 .. b0+nblocks-1 into y: h[j] is intermediate sample h_base + j */
KERNEL static void poly_blocks(const float *h, i64 h_base, const float *C, const i64 *off, const i64 *shape, i64 b0,
                               i64 nblocks, float *y) {
    const i64 bpp = shape[PERIOD] / LANES, span = shape[SPAN], adv = shape[ADVANCE], k2 = shape[K2];
    i64 i = 0;
#define WHERE(j, hp, cp)                                                        \
    do {                                                                        \
        i64 B = b0 + i + (j), c = floor_div(B, bpp), r = B - c * bpp;           \
        hp = h + (c * adv + off[r] - k2 + 1 - h_base);                          \
        cp = C + r * span * LANES;                                              \
    } while (0)
    for (; i + 4 <= nblocks; i += 4) {
        const float *h0, *h1, *h2, *h3, *c0, *c1, *c2, *c3;
        WHERE(0, h0, c0);
        WHERE(1, h1, c1);
        WHERE(2, h2, c2);
        WHERE(3, h3, c3);
        v8 a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};
        for (i64 t = 0; t < span; t++) {
            a0 += load8(c0 + LANES * t) * h0[t];
            a1 += load8(c1 + LANES * t) * h1[t];
            a2 += load8(c2 + LANES * t) * h2[t];
            a3 += load8(c3 + LANES * t) * h3[t];
        }
        store8(y + LANES * i, a0);
        store8(y + LANES * i + 8, a1);
        store8(y + LANES * i + 16, a2);
        store8(y + LANES * i + 24, a3);
    }
    for (; i < nblocks; i++) {
        const float *h0, *c0;
        WHERE(0, h0, c0);
        v8 a = {0};
        for (i64 t = 0; t < span; t++) a += load8(c0 + LANES * t) * h0[t];
        store8(y + LANES * i, a);
    }
#undef WHERE
}

/* float32 in [-1, 1) -> int16: round half to even, clip to [-32768, 32767] (the numba kernel's
 * to_int16, bit for bit). One branch-free pass, eight samples per vector, while an OR of the
 * exponent bits notes a NaN or infinity; only then a second pass finds the first (out is then
 * undefined from it). x * 32768 is exact in float32, so rounding it is rounding the exact product;
 * after the clip |v| <= 2^15, and adding and taking away 1.5 * 2^23 leaves v rounded half to even
 * (the default rounding mode). */
typedef int32_t v8i __attribute__((vector_size(32)));
typedef int16_t v8s __attribute__((vector_size(16)));

static inline float to_int16_one(float v, uint32_t *special) {
    uint32_t bits;
    memcpy(&bits, &v, 4);
    *special |= (bits & 0x7F800000u) == 0x7F800000u;
    v *= 32768.0f;
    v = v < -32768.0f ? -32768.0f : v;
    v = v > 32767.0f ? 32767.0f : v;
    return (v + 12582912.0f) - 12582912.0f;
}

KERNEL static i64 to_int16_run(const float *x, int16_t *out, i64 n) {
    const v8 lo = {-32768.0f, -32768.0f, -32768.0f, -32768.0f, -32768.0f, -32768.0f, -32768.0f, -32768.0f};
    const v8 hi = {32767.0f, 32767.0f, 32767.0f, 32767.0f, 32767.0f, 32767.0f, 32767.0f, 32767.0f};
    v8i any = {0};
    i64 i = 0;
    for (; i + LANES <= n; i += LANES) {
        v8 v = load8(x + i);
        v8i bits = (v8i)v;
        any |= (bits & 0x7F800000) == 0x7F800000;
        v *= 32768.0f;
        v8i below = v < lo, above = v > hi;
        v = (v8)((below & (v8i)lo) | (~below & (v8i)v));
        v = (v8)((above & (v8i)hi) | (~above & (v8i)v));
        v = (v + 12582912.0f) - 12582912.0f;
        v8s r = __builtin_convertvector(__builtin_convertvector(v, v8i), v8s);
        memcpy(out + i, &r, sizeof r);
    }
    uint32_t special = 0;
    for (int l = 0; l < LANES; l++) special |= any[l] != 0;
    for (; i < n; i++) out[i] = (int16_t)(int32_t)to_int16_one(x[i], &special);
    if (special)
        for (i = 0; i < n; i++)
            if (!isfinite(x[i])) return i;
    return -1;
}

static PyObject *k_to_int16(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    /* to_int16(x, out) -> -1 or the index of the first non-finite sample */
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "to_int16(x, out) takes 2 arguments");
        return NULL;
    }
    Py_buffer vx, vo;
    if (PyObject_GetBuffer(args[0], &vx, PyBUF_FORMAT | PyBUF_C_CONTIGUOUS) < 0) return NULL;
    if (PyObject_GetBuffer(args[1], &vo, PyBUF_FORMAT | PyBUF_C_CONTIGUOUS | PyBUF_WRITABLE) < 0) {
        PyBuffer_Release(&vx);
        return NULL;
    }
    i64 r = 0;
    if (strcmp(elem_format(&vx), "f") || vx.itemsize != 4 || strcmp(elem_format(&vo), "h") || vo.itemsize != 2 ||
        vx.len / 4 != vo.len / 2) {
        PyErr_SetString(PyExc_TypeError, "to_int16 takes C-contiguous float32 samples and an int16 array as long");
        r = INT64_MIN;
    } else {
        r = to_int16_run(vx.buf, vo.buf, (i64)(vx.len / 4));
    }
    PyBuffer_Release(&vx);
    PyBuffer_Release(&vo);
    return r == INT64_MIN ? NULL : PyLong_FromLongLong(r);
}

/* The framer's push in one call: cut(x, pending, have, out, row0) completes the frame begun in
 * `pending` (its first `have` samples) from x, converts it and then x's whole frames to int16 into
 * `out` from row `row0` on, and leaves the rest of x in `pending`. fs = len(pending); the frames it
 * completes, (have + len(x)) // fs, must fit in out. None, or at a non-finite sample (good, index):
 * how many rows from row0 are whole frames before it, and its index (in the begun frame, if it is
 * there; else from the first sample after that frame). The Python framer's cut, step for step. */
static PyObject *k_cut(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "cut(x, pending, have, out, row0) takes 5 arguments");
        return NULL;
    }
    const i64 have = PyLong_AsLongLong(args[2]), row0 = PyLong_AsLongLong(args[4]);
    if ((have == -1 || row0 == -1) && PyErr_Occurred()) return NULL;
    Py_buffer vx, vp, vo;
    if (PyObject_GetBuffer(args[0], &vx, PyBUF_FORMAT | PyBUF_C_CONTIGUOUS) < 0) return NULL;
    if (PyObject_GetBuffer(args[1], &vp, PyBUF_FORMAT | PyBUF_C_CONTIGUOUS | PyBUF_WRITABLE) < 0) {
        PyBuffer_Release(&vx);
        return NULL;
    }
    if (PyObject_GetBuffer(args[3], &vo, PyBUF_FORMAT | PyBUF_C_CONTIGUOUS | PyBUF_WRITABLE) < 0) {
        PyBuffer_Release(&vx);
        PyBuffer_Release(&vp);
        return NULL;
    }
    PyObject *result = NULL;
    const i64 n = (i64)(vx.len / 4), fs = (i64)(vp.len / 4), out_rows = fs ? (i64)(vo.len / 2) / fs : 0;
    if (strcmp(elem_format(&vx), "f") || vx.itemsize != 4 || strcmp(elem_format(&vp), "f") || vp.itemsize != 4 ||
        strcmp(elem_format(&vo), "h") || vo.itemsize != 2) {
        PyErr_SetString(PyExc_TypeError, "cut takes C-contiguous float32 samples and pending, and an int16 out");
    } else if (fs == 0 || have < 0 || have >= fs || row0 < 0 || (vo.len / 2) % fs || row0 > out_rows ||
               (have + n) / fs > out_rows - row0 || vx.buf == vp.buf) {
        PyErr_SetString(PyExc_ValueError,
                        "cut: have must be in 0..len(pending)-1, the frames must fit in out from row0, and x is not pending");
    } else {
        float *x = vx.buf, *pending = vp.buf;
        int16_t *out = (int16_t *)vo.buf + row0 * fs;
        const i64 rows = (have + n) / fs;
        i64 at = 0, r = 0, bad = -1;
        if (rows == 0) {
            memcpy(pending + have, x, (size_t)n * 4);
        } else {
            if (have) { /* the frame begun by earlier samples */
                at = fs - have;
                memcpy(pending + have, x, (size_t)at * 4);
                bad = to_int16_run(pending, out, fs);
                r = bad < 0;
            }
            if (bad < 0) {
                bad = to_int16_run(x + at, out + r * fs, (rows - r) * fs);
                if (bad >= 0) {
                    r += bad / fs;
                } else {
                    at += (rows - r) * fs;
                    memcpy(pending, x + at, (size_t)(n - at) * 4);
                }
            }
        }
        result = bad < 0 ? Py_NewRef(Py_None) : Py_BuildValue("(LL)", (long long)r, (long long)bad);
    }
    PyBuffer_Release(&vx);
    PyBuffer_Release(&vp);
    PyBuffer_Release(&vo);
    return result;
}

/* One stream: the filters (copied from the design), its history at both rates, its counters. */
typedef struct {
    PyObject_HEAD i64 ch, sh[SHAPE_WORDS], st[STATE_WORDS];
    i64 cap1, cap2; /* columns per channel of h1 and h2 */
    int busy;       /* a call is in step() without the GIL */
    float *g, *C, *h1, *h2;
    i64 *off;
} Stream2;

static void stream_reset(Stream2 *o) {
    const i64 k1 = o->sh[K1], k2 = o->sh[K2];
    memset(o->h1, 0, (size_t)(o->ch * o->cap1) * sizeof(float));
    memset(o->h2, 0, (size_t)(o->ch * o->cap2) * sizeof(float));
    /* column 0 of each is the sample before the stream's window of zeros */
    o->st[BASE1] = -(k1 - 1), o->st[FILL1] = k1 - 1, o->st[BASE2] = -(k2 - 1), o->st[FILL2] = k2 - 1;
    o->st[NEXT] = 0, o->st[TOTAL] = 0;
}

/* planar history of ch rows, grown to `cap` columns (the first `keep` of each row kept); 0 or -1 */
static int grow(float **h, i64 ch, i64 *cap, i64 keep, i64 want) {
    if (want <= *cap) return 0;
    i64 cap_new = 2 * *cap > want ? 2 * *cap : want;
    float *n = calloc((size_t)(ch * cap_new), sizeof(float));
    if (!n) return -1;
    for (i64 c = 0; c < ch; c++) memcpy(n + c * cap_new, *h + c * *cap, (size_t)keep * sizeof(float));
    free(*h);
    *h = n, *cap = cap_new;
    return 0;
}

/* One chunk of n frames of ch channels (interleaved) through both stages; outputs into out (rows of
 * ch). Returns the count, OUT_TOO_SMALL or NON_FINITE - i (the stream then unchanged), or NO_MEMORY
 * (the stream consistent, the chunk not taken). Touches no Python object: it may run without the GIL. */
static i64 step(Stream2 *o, const float *x, i64 n, float *out, i64 out_rows) {
    const i64 ch = o->ch, *sh = o->sh, up = sh[UP], down = sh[DOWN], k1 = sh[K1], k2 = sh[K2], up2 = sh[UP2],
              down2 = sh[DOWN2], span = sh[SPAN];
    i64 *st = o->st, base1 = st[BASE1], fill1 = st[FILL1], base2 = st[BASE2], fill2 = st[FILL2];
    const i64 nxt = st[NEXT], total = st[TOTAL];
    const i64 ready = total + n - sh[HALF];
    const i64 end = ready > 0 ? (ready * up + down - 1) / down : 0;
    const i64 count = end > nxt ? end - nxt : 0;
    if (count > out_rows) return OUT_TOO_SMALL;
    for (i64 i = 0; i < n * ch; i++) /* refused whole, before anything changes */
        if (!isfinite(x[i])) return NON_FINITE - i / ch;
    const i64 m_done = (base2 + fill2) / 2; /* intermediate pairs made so far */
    i64 m_end = total + n - k1;             /* ... and after this chunk */
    if (m_end < m_done) m_end = m_done;
    const i64 mb = floor8(m_done), nb = floor8(nxt);
    /* room: stage 1 reads up to 8 inputs past what is written; stage 2 up to a block's span past it */
    if (fill1 + n + LANES > o->cap1 || 2 * m_end - base2 + span + 2 * LANES > o->cap2) {
        /* first drop what no block to come reads */
        i64 drop1 = mb - k1 + 1 - base1, drop2 = floor_div(nb * down2, up2) - k2 + 1 - base2;
        if (drop1 > fill1) drop1 = fill1;
        if (drop2 > fill2) drop2 = fill2;
        for (i64 c = 0; c < ch && drop1 > 0; c++)
            memmove(o->h1 + c * o->cap1, o->h1 + c * o->cap1 + drop1, (size_t)(fill1 - drop1) * sizeof(float));
        if (drop1 > 0) base1 += drop1, fill1 -= drop1;
        for (i64 c = 0; c < ch && drop2 > 0; c++)
            memmove(o->h2 + c * o->cap2, o->h2 + c * o->cap2 + drop2, (size_t)(fill2 - drop2) * sizeof(float));
        if (drop2 > 0) base2 += drop2, fill2 -= drop2;
        st[BASE1] = base1, st[FILL1] = fill1, st[BASE2] = base2, st[FILL2] = fill2;
        if (grow(&o->h1, ch, &o->cap1, fill1, fill1 + n + LANES) < 0 ||
            grow(&o->h2, ch, &o->cap2, fill2, 2 * m_end - base2 + span + 2 * LANES) < 0)
            return NO_MEMORY;
    }
    const i64 cap1 = o->cap1, cap2 = o->cap2;
    if (ch == 1)
        memcpy(o->h1 + fill1, x, (size_t)n * sizeof(float));
    else
        for (i64 i = 0; i < n; i++)
            for (i64 c = 0; c < ch; c++) o->h1[c * cap1 + fill1 + i] = x[i * ch + c];
    float scratch[PIECE * LANES];
    for (i64 c = 0; c < ch; c++) {
        const float *hc = o->h1 + c * cap1;
        float *zc = o->h2 + c * cap2;
        /* stage 1: pairs m_done .. m_end-1, in blocks from mb */
        for (i64 m0 = mb; m0 < m_end; m0 += PIECE * LANES) {
            i64 blocks = (m_end - m0 + LANES - 1) / LANES;
            if (blocks > PIECE) blocks = PIECE;
            fir_blocks(hc + (m0 - k1 + 1 - base1), o->g, 2 * k1, blocks, scratch);
            const i64 lo = m0 < m_done ? m_done : m0, hi = m0 + blocks * LANES < m_end ? m0 + blocks * LANES : m_end;
            float *z = zc + 2 * lo - base2;
            const float *even = hc + lo - base1, *odd = scratch + (lo - m0);
            for (i64 i = 0; i < hi - lo; i++) z[2 * i] = even[i], z[2 * i + 1] = odd[i];
        }
        /* stage 2: outputs nxt .. end-1, in blocks from nb */
        for (i64 n0 = nb; n0 < end; n0 += PIECE * LANES) {
            i64 blocks = (end - n0 + LANES - 1) / LANES;
            if (blocks > PIECE) blocks = PIECE;
            poly_blocks(zc, base2, o->C, o->off, sh, n0 / LANES, blocks, scratch);
            const i64 lo = n0 < nxt ? nxt : n0, hi = n0 + blocks * LANES < end ? n0 + blocks * LANES : end;
            if (ch == 1)
                memcpy(out + (lo - nxt), scratch + (lo - n0), (size_t)(hi - lo) * sizeof(float));
            else
                for (i64 j = lo; j < hi; j++) out[(j - nxt) * ch + c] = scratch[j - n0];
        }
    }
    st[FILL1] = fill1 + n;
    st[FILL2] = 2 * m_end - base2;
    st[NEXT] = nxt + count;
    st[TOTAL] = total + n;
    return count;
}

/* a C-contiguous float32 buffer; ndim 1 is one channel's frames; its rows or -1 (TypeError set) */
static i64 frames_of(PyObject *obj, Py_buffer *v, i64 ch, int writable, const char *what) {
    if (PyObject_GetBuffer(obj, v, PyBUF_FORMAT | PyBUF_C_CONTIGUOUS | (writable ? PyBUF_WRITABLE : 0)) < 0) return -1;
    if (!strcmp(elem_format(v), "f") && v->itemsize == 4) {
        if (v->ndim == 1 && ch == 1) return v->shape[0];
        if (v->ndim == 2 && v->shape[1] == ch) return v->shape[0];
    }
    PyBuffer_Release(v);
    PyErr_Format(PyExc_TypeError, "%s must be a C-contiguous float32 array of %lld channel(s)", what, (long long)ch);
    return -1;
}

static PyObject *stream_process(Stream2 *o, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "process(chunk, out) takes 2 arguments");
        return NULL;
    }
    Py_buffer vx, vo;
    i64 n = frames_of(args[0], &vx, o->ch, 0, "chunk");
    if (n < 0) return NULL;
    i64 rows = frames_of(args[1], &vo, o->ch, 1, "out");
    if (rows < 0) {
        PyBuffer_Release(&vx);
        return NULL;
    }
    i64 r;
    if (o->busy) {
        PyErr_SetString(PyExc_RuntimeError, "this stream is in use by another thread");
        r = NO_MEMORY;
    } else if (n * o->ch >= NOGIL_SAMPLES) { /* long: other threads run meanwhile (busy keeps them off o) */
        o->busy = 1;
        Py_BEGIN_ALLOW_THREADS r = step(o, vx.buf, n, vo.buf, rows);
        Py_END_ALLOW_THREADS o->busy = 0;
        if (r == NO_MEMORY) PyErr_NoMemory();
    } else {
        r = step(o, vx.buf, n, vo.buf, rows);
        if (r == NO_MEMORY) PyErr_NoMemory();
    }
    PyBuffer_Release(&vx);
    PyBuffer_Release(&vo);
    return r == NO_MEMORY ? NULL : PyLong_FromLongLong(r);
}

static PyObject *stream_reset_m(Stream2 *o, PyObject *unused) {
    if (o->busy) {
        PyErr_SetString(PyExc_RuntimeError, "this stream is in use by another thread");
        return NULL;
    }
    stream_reset(o);
    Py_RETURN_NONE;
}

/* float32 or int64 contents of a 1-d or 3-d C-contiguous array, copied; its element count or -1 */
static i64 copy_of(PyObject *obj, char kind, void **dst, const char *what) {
    Py_buffer v;
    if (PyObject_GetBuffer(obj, &v, PyBUF_FORMAT | PyBUF_C_CONTIGUOUS) < 0) return -1;
    const char *f = elem_format(&v);
    int ok = kind == 'f' ? (!strcmp(f, "f") && v.itemsize == 4)
                         : ((!strcmp(f, "q") || !strcmp(f, "l")) && v.itemsize == 8);
    i64 count = v.itemsize ? (i64)(v.len / v.itemsize) : 0;
    if (!ok || count < 1) {
        PyBuffer_Release(&v);
        PyErr_Format(PyExc_TypeError, "Stream2: %s must be a non-empty C-contiguous %s array", what,
                     kind == 'f' ? "float32" : "int64");
        return -1;
    }
    *dst = malloc((size_t)v.len);
    if (!*dst) {
        PyBuffer_Release(&v);
        PyErr_NoMemory();
        return -1;
    }
    memcpy(*dst, v.buf, (size_t)v.len);
    PyBuffer_Release(&v);
    return count;
}

static void stream_dealloc(Stream2 *o) {
    free(o->g), free(o->C), free(o->off), free(o->h1), free(o->h2);
    Py_TYPE(o)->tp_free((PyObject *)o);
}

static PyObject *stream_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    /* Stream2(g, blocks, offsets, shape, channels) */
    PyObject *g, *blocks, *offsets, *shape;
    long long ch;
    if (kwds && PyDict_GET_SIZE(kwds)) {
        PyErr_SetString(PyExc_TypeError, "Stream2 takes no keyword arguments");
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "OOOOL:Stream2", &g, &blocks, &offsets, &shape, &ch)) return NULL;
    Stream2 *o = (Stream2 *)type->tp_alloc(type, 0);
    if (!o) return NULL;
    i64 *sh = NULL;
    i64 ng = copy_of(g, 'f', (void **)&o->g, "g");
    i64 nc = ng < 0 ? -1 : copy_of(blocks, 'f', (void **)&o->C, "blocks");
    i64 no = nc < 0 ? -1 : copy_of(offsets, 'q', (void **)&o->off, "offsets");
    i64 ns = no < 0 ? -1 : copy_of(shape, 'q', (void **)&sh, "shape");
    if (ns < 0) goto fail;
    if (ns != SHAPE_WORDS) goto bad;
    memcpy(o->sh, sh, sizeof o->sh);
    const i64 k1 = sh[K1], k2 = sh[K2], span = sh[SPAN], period = sh[PERIOD];
    /* every index the kernels form stays inside these arrays when the shape is self-consistent */
    if (ch < 1 || ch > 64 || sh[UP] < 1 || sh[DOWN] < 1 || k1 < 1 || k2 < 1 || sh[UP2] < 1 || sh[DOWN2] < 1 ||
        span < 2 * k2 || period < LANES || period % LANES || ng != 2 * k1 || no != period / LANES ||
        nc != no * span * LANES || sh[ADVANCE] * sh[UP2] != period * sh[DOWN2] || k2 % 2 || sh[HALF] != k1 + k2 / 2 ||
        sh[UP] * sh[DOWN2] != 2 * sh[DOWN] * sh[UP2]) /* stage 2 takes twice the input rate to the output's */
        goto bad;
    for (i64 k = 0; k < k1; k++) /* the half-band's coefficients are symmetric (the kernel folds them) */
        if (o->g[k] != o->g[2 * k1 - 1 - k]) goto bad;
    for (i64 r = 0; r < no; r++) /* block r's lanes' windows lie inside its span */
        if (o->off[r] != floor_div(r * LANES * sh[DOWN2], sh[UP2]) ||
            floor_div((r * LANES + LANES - 1) * sh[DOWN2], sh[UP2]) - o->off[r] + 2 * k2 > span)
            goto bad;
    free(sh);
    sh = NULL;
    o->ch = ch;
    o->cap1 = 4096 > 4 * k1 ? 4096 : 4 * k1;
    o->cap2 = 8192 > 8 * k1 ? 8192 : 8 * k1;
    if (o->cap2 < 4 * (k2 + span)) o->cap2 = 4 * (k2 + span); /* room for the window of zeros it starts with */
    o->h1 = malloc((size_t)(ch * o->cap1) * sizeof(float));
    o->h2 = malloc((size_t)(ch * o->cap2) * sizeof(float));
    if (!o->h1 || !o->h2) {
        PyErr_NoMemory();
        goto fail;
    }
    stream_reset(o);
    return (PyObject *)o;
bad:
    PyErr_SetString(PyExc_ValueError, "Stream2: the design's arrays do not fit together");
fail:
    free(sh);
    Py_DECREF(o);
    return NULL;
}

static PyObject *get_next(Stream2 *o, void *c) { return PyLong_FromLongLong(o->st[NEXT]); }
static PyObject *get_total(Stream2 *o, void *c) { return PyLong_FromLongLong(o->st[TOTAL]); }

static PyMethodDef stream_methods[] = {
    {"process", (PyCFunction)(void (*)(void))stream_process, METH_FASTCALL,
     "process(chunk, out) -> the outputs written to out, OUT_TOO_SMALL or NON_FINITE - index"},
    {"reset", (PyCFunction)stream_reset_m, METH_NOARGS, "start a new stream"},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef stream_getset[] = {
    {"next", (getter)get_next, NULL, "outputs so far", NULL},
    {"total", (getter)get_total, NULL, "inputs so far", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject Stream2Type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "ringaudio.kernels._dsp.Stream2",
    .tp_basicsize = sizeof(Stream2),
    .tp_dealloc = (destructor)stream_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "One stream through the two-stage resampler (see _dsp.c).",
    .tp_methods = stream_methods,
    .tp_getset = stream_getset,
    .tp_new = stream_new,
};

static PyMethodDef module_methods[] = {
    {"to_int16", (PyCFunction)(void (*)(void))k_to_int16, METH_FASTCALL,
     "to_int16(x, out): float32 to int16, rounded half to even and clipped; -1 or the first non-finite index"},
    {"cut", (PyCFunction)(void (*)(void))k_cut, METH_FASTCALL,
     "cut(x, pending, have, out, row0): the framer's push; None, or (good rows, index) at a non-finite sample"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_dsp", "The two-stage resampler's kernel, and float32 to int16.",
                                    -1, module_methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__dsp(void) {
    PyObject *m = PyModule_Create(&module);
    if (!m) return NULL;
    if (PyType_Ready(&Stream2Type) < 0 || PyModule_AddObjectRef(m, "Stream2", (PyObject *)&Stream2Type) < 0 ||
        PyModule_AddIntConstant(m, "OUT_TOO_SMALL", OUT_TOO_SMALL) < 0 ||
        PyModule_AddIntConstant(m, "NON_FINITE", NON_FINITE) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
