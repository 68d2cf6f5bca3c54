/* The frame ring's kernels in C: the same functions, arguments, results and memory ordering as the
 * numba kernels of ringaudio/kernels/ring.py and ring_slow.py (their docstrings explain the protocol),
 * for processes that should not load numba and LLVM (~120 MB) only to read a ring: the server. One
 * difference in ordering: a block's rows store write_seq with release and fence once after the
 * last (put_rows), where the numba kernels store it seq_cst per row; the sleeping protocol is the
 * same (a full barrier between each side's store and its look at the other's).
 *
 * Ordering uses the compiler's __atomic builtins on the shared uint64 words, which GCC and Clang
 * lower per target as LLVM does for the numba kernels: on x86-64 an acquire load is a plain mov and
 * a seq_cst store an xchg; on AArch64 ldar/stlr and dmb. The layout constants below are
 * ringaudio/ring/layout.py's; tests/kernels/test_ring_c.py checks each against it and drives both
 * kernel sets through the same operations on twin rings, comparing every result and word.
 *
 * Unlike the numba kernels these check every index against the arrays they were given (a wrong
 * index is BAD_ARGUMENT or IndexError, never a stray write), and never release the GIL: a call is
 * a few hundred nanoseconds, less than taking the GIL back would cost.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#include "buffers.h"
#ifdef __unix__
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <sys/socket.h>
#include <sys/types.h>
#endif
#ifdef __linux__
#include <limits.h>
#include <linux/futex.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <linux/sockios.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>
#undef CTRL /* (termios' control-key macro, from sys/ioctl.h: the name is ours below) */
#endif

#define LINE_WORDS 8
#define MAX_GATING_READERS 4
#define C_WRITE_SEQ 0
#define C_LIMIT 1
#define C_WRITER_WAITING 8
#define C_WAKE_AT 9
#define C_SPACE_EVENT 10
#define C_READERS_WAITING 11
#define C_STATE 16
#define C_GENERATION 17
#define C_POLICY 18
#define C_HIGH 19
#define C_LOW 20
#define C_PAUSED 21
#define C_DROPPED 22
#define C_FULL_COUNT 23
#define READER0 (4 * LINE_WORDS)
#define R_ACTIVE 0
#define R_POS 1
#define R_PID 2
#define R_CLAIMING 2
#define STAMP0 (READER0 + MAX_GATING_READERS * LINE_WORDS)
#define STAMP_STRIDE LINE_WORDS
#define S_UTTERANCE 1
#define S_BYTES 4
#define LABEL_WORDS 4
#define LEASED 1
#define BLOCK 0
#define GEN_SHIFT 40
#define GEN_MASK ((INT64_C(1) << 23) - 1)

/* results: a non-negative one is value << 1 | wake */
#define WAIT (-1)
#define CLOSED (-2)
#define BAD_ARGUMENT (-3)
#define NOT_READY (-4)
#define OVERRUN (-5)

typedef uint64_t u64;
typedef int64_t i64;

#define LD_RLX(c, i) ((i64)__atomic_load_n(&(c)[i], __ATOMIC_RELAXED))
#define LD_ACQ(c, i) ((i64)__atomic_load_n(&(c)[i], __ATOMIC_ACQUIRE))
#define LD_SC(c, i) ((i64)__atomic_load_n(&(c)[i], __ATOMIC_SEQ_CST))
#define ST_RLX(c, i, v) __atomic_store_n(&(c)[i], (u64)(v), __ATOMIC_RELAXED)
#define ST_REL(c, i, v) __atomic_store_n(&(c)[i], (u64)(v), __ATOMIC_RELEASE)
#define ST_SC(c, i, v) __atomic_store_n(&(c)[i], (u64)(v), __ATOMIC_SEQ_CST)
#define ADD_SC(c, i, v) ((i64)__atomic_fetch_add(&(c)[i], (u64)(v), __ATOMIC_SEQ_CST))
#define XCHG_SC(c, i, v) ((i64)__atomic_exchange_n(&(c)[i], (u64)(v), __ATOMIC_SEQ_CST))

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

/* -- the layout's rules (ringaudio/ring/layout.py) ------------------------------------------------ */
static inline i64 stamp_writing(i64 gen, i64 seq) { return ((gen & GEN_MASK) << GEN_SHIFT) | (2 * seq + 1); }
static inline i64 stamp_published(i64 gen, i64 seq) { return ((gen & GEN_MASK) << GEN_SHIFT) | (2 * seq + 2); }

static inline i64 verdict(i64 stamp, i64 gen, i64 seq) {
    i64 want = stamp_published(gen, seq);
    if (stamp == want) return 0;
    if ((stamp >> GEN_SHIFT) != (gen & GEN_MASK)) return NOT_READY;
    return stamp < want ? NOT_READY : OVERRUN;
}

static inline int must_pause(i64 fill, int paused, i64 high, i64 low) { return paused ? fill > low : fill >= high; }

/* -- arguments ----------------------------------------------------------------------------------- */
/* PyObject_GetBuffer, with every refusal a TypeError (numpy says ValueError for a non-contiguous
 * array, BufferError for a read-only one): the Python layer takes TypeError as "re-check and explain" */
static int get_buf(PyObject *o, Py_buffer *v, int flags) {
    if (PyObject_GetBuffer(o, v, flags) == 0) return 0;
    if (PyErr_ExceptionMatches(PyExc_ValueError) || PyErr_ExceptionMatches(PyExc_BufferError)) {
        PyObject *type, *value, *tb;
        PyErr_Fetch(&type, &value, &tb);
        PyErr_Format(PyExc_TypeError, "unusable array: %S", value ? value : Py_None);
        Py_XDECREF(type);
        Py_XDECREF(value);
        Py_XDECREF(tb);
    }
    return -1;
}

static int get_ctrl(PyObject *o, Py_buffer *v) {
    if (get_buf(o, v, PyBUF_WRITABLE | PyBUF_FORMAT | PyBUF_C_CONTIGUOUS) < 0) return -1;
    const char *f = elem_format(v);
    if (v->ndim != 1 || v->itemsize != 8 || !(strcmp(f, "Q") == 0 || strcmp(f, "L") == 0) ||
        v->shape[0] < STAMP0) {
        PyBuffer_Release(v);
        PyErr_SetString(PyExc_TypeError, "ctrl must be a flat, writable uint64 array of a ring's control words");
        return -1;
    }
    return 0;
}

/* slots: (capacity, n) C-contiguous; writable for the writer's kernels */
static int get_slots(PyObject *o, Py_buffer *v, int writable) {
    if (get_buf(o, v, (writable ? PyBUF_WRITABLE : 0) | PyBUF_FORMAT | PyBUF_C_CONTIGUOUS) < 0) return -1;
    if (v->ndim != 2 || v->shape[0] < 1 || *elem_format(v) == '\0') {
        PyBuffer_Release(v);
        PyErr_SetString(PyExc_TypeError, "slots must be a C-contiguous (capacity, samples) array");
        return -1;
    }
    return 0;
}

/* frames of the slots' element type: ndim 1 (one frame) or 2 (a block), C-contiguous */
static int get_frames(PyObject *o, Py_buffer *v, const Py_buffer *slots, int ndim, int writable) {
    if (get_buf(o, v, (writable ? PyBUF_WRITABLE : 0) | PyBUF_FORMAT | PyBUF_C_CONTIGUOUS) < 0) return -1;
    if (v->ndim != ndim || v->itemsize != slots->itemsize || strcmp(elem_format(v), elem_format(slots)) != 0) {
        PyBuffer_Release(v);
        PyErr_SetString(PyExc_TypeError, "frames must be C-contiguous arrays of the ring's sample type");
        return -1;
    }
    return 0;
}

static int get_i64s(PyObject *const *args, Py_ssize_t first, Py_ssize_t n, i64 *out) {
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *a = args[first + i];
        if (!PyLong_Check(a) && !PyIndex_Check(a)) { /* an int, or what has __index__ (numpy's ints) */
            PyErr_Format(PyExc_TypeError, "argument %zd must be an integer", first + i + 1);
            return -1;
        }
        long long x = PyLong_AsLongLong(a);
        if (x == -1 && PyErr_Occurred()) return -1;
        out[i] = (i64)x;
    }
    return 0;
}

static int nargs_ok(const char *name, Py_ssize_t nargs, Py_ssize_t want) {
    if (nargs == want) return 1;
    PyErr_Format(PyExc_TypeError, "%s() takes %zd arguments (%zd given)", name, want, nargs);
    return 0;
}

/* The buffers one call holds, released together on every way out: each take_* acquires the next one,
 * or returns NULL with the exception set, and the caller's one release() frees what was taken. */
typedef struct {
    Py_buffer v[4];
    int n;
} Bufs;

static void release(Bufs *b) {
    while (b->n > 0) PyBuffer_Release(&b->v[--b->n]);
}

static Py_buffer *taken(Bufs *b, int status) {
    if (status < 0) return NULL;
    return &b->v[b->n++];
}

static Py_buffer *take_ctrl(Bufs *b, PyObject *o) { return taken(b, get_ctrl(o, &b->v[b->n])); }

static Py_buffer *take_slots(Bufs *b, PyObject *o, int writable) {
    return taken(b, get_slots(o, &b->v[b->n], writable));
}

static Py_buffer *take_frames(Bufs *b, PyObject *o, const Py_buffer *slots, int ndim, int writable) {
    return taken(b, get_frames(o, &b->v[b->n], slots, ndim, writable));
}

static Py_buffer *take_label(Bufs *b, PyObject *o) {
    Py_buffer *l = &b->v[b->n];
    if (get_buf(o, l, PyBUF_WRITABLE | PyBUF_FORMAT | PyBUF_C_CONTIGUOUS) < 0) return NULL;
    const char *f = elem_format(l);
    if (l->ndim != 1 || l->itemsize != 8 || !(strcmp(f, "q") == 0 || strcmp(f, "l") == 0)) {
        PyBuffer_Release(l);
        PyErr_SetString(PyExc_TypeError, "label must be an int64 array");
        return NULL;
    }
    return taken(b, 0);
}

#define CTRL(v) ((u64 *)(v).buf)
#define CTRL_LEN(v) ((v).shape[0])
/* does ctrl hold the stamp lines of `capacity` slots? */
#define FITS(v, capacity) ((capacity) >= 1 && (capacity) <= ((CTRL_LEN(v) - STAMP0) / STAMP_STRIDE))

/* -- the kernels (names and arguments as in ring.py / ring_slow.py) --------------------------------- */
static i64 min_gating(u64 *ctrl) {
    i64 low = LD_RLX(ctrl, C_WRITE_SEQ);
    for (int g = 0; g < MAX_GATING_READERS; g++) {
        int base = READER0 + g * LINE_WORDS;
        if (LD_ACQ(ctrl, base + R_ACTIVE) == 1) {
            i64 pos = LD_SC(ctrl, base + R_POS);
            if (pos < low) low = pos;
        }
    }
    return low;
}

static i64 admit(u64 *ctrl, i64 capacity, i64 gen) {
    if (LD_ACQ(ctrl, C_GENERATION) != gen || LD_ACQ(ctrl, C_STATE) != LEASED) return CLOSED;
    i64 w = LD_RLX(ctrl, C_WRITE_SEQ);
    int paused = LD_RLX(ctrl, C_PAUSED) != 0;
    if (LD_ACQ(ctrl, C_POLICY) == BLOCK) {
        if (!paused && w < LD_RLX(ctrl, C_LIMIT)) return 0;
        i64 fill = w - min_gating(ctrl);
        i64 high = LD_ACQ(ctrl, C_HIGH);
        if (must_pause(fill, paused, high, LD_ACQ(ctrl, C_LOW))) {
            if (!paused) {
                ST_RLX(ctrl, C_PAUSED, 1);
                ST_RLX(ctrl, C_FULL_COUNT, LD_RLX(ctrl, C_FULL_COUNT) + 1);
            }
            return WAIT;
        }
        if (paused) ST_RLX(ctrl, C_PAUSED, 0);
        ST_RLX(ctrl, C_LIMIT, w + high - fill);
        return 0;
    }
    int dropping = w >= capacity && LD_SC(ctrl, READER0 + R_POS) <= w - capacity;
    if (dropping) {
        ST_RLX(ctrl, C_DROPPED, LD_RLX(ctrl, C_DROPPED) + 1);
        if (!paused) {
            ST_RLX(ctrl, C_PAUSED, 1);
            ST_RLX(ctrl, C_FULL_COUNT, LD_RLX(ctrl, C_FULL_COUNT) + 1);
        }
    } else if (paused) {
        ST_RLX(ctrl, C_PAUSED, 0);
    }
    return 0;
}

static void put(u64 *ctrl, const Py_buffer *slots, const char *frame, i64 gen, i64 w, i64 utterance, i64 flags,
                i64 fmt, i64 nbytes) {
    i64 capacity = slots->shape[0];
    Py_ssize_t row = slots->shape[1] * slots->itemsize;
    i64 line = STAMP0 + (w % capacity) * STAMP_STRIDE;
    ST_RLX(ctrl, line, stamp_writing(gen, w));
    __atomic_thread_fence(__ATOMIC_RELEASE);
    ST_RLX(ctrl, line + S_UTTERANCE, utterance);
    ST_RLX(ctrl, line + S_UTTERANCE + 1, flags);
    ST_RLX(ctrl, line + S_UTTERANCE + 2, fmt);
    ST_RLX(ctrl, line + S_BYTES, nbytes > 0 ? nbytes : (i64)row);
    memcpy((char *)slots->buf + (w % capacity) * row, frame, (size_t)row);
    ST_REL(ctrl, line, stamp_published(gen, w));
    ST_REL(ctrl, C_WRITE_SEQ, w + 1); /* (put_rows fences once after its last row) */
}

/* the writes: admit and put up to `count` rows of `src` (from the write sequence on), labelled
 * alike but for their flags: row 0 gets `first`, the last row `last` (one row: both), the rows
 * between none; how many went in, and in *refusal why the first did not (0 if all did) */
static i64 put_rows(u64 *ctrl, const Py_buffer *slots, const char *src, i64 count, i64 gen, i64 utterance, i64 first,
                    i64 last, i64 fmt, i64 nbytes, i64 *refusal) {
    Py_ssize_t row = slots->shape[1] * slots->itemsize;
    *refusal = 0;
    i64 i = 0;
    for (; i < count; i++) {
        i64 admitted = admit(ctrl, slots->shape[0], gen);
        if (admitted != 0) {
            *refusal = admitted;
            break;
        }
        i64 flags = (i == 0 ? first : 0) | (i == count - 1 ? last : 0);
        put(ctrl, slots, src + i * row, gen, LD_RLX(ctrl, C_WRITE_SEQ), utterance, flags, fmt, nbytes);
    }
    /* Each row's write_seq went out with release; one full fence, before the caller asks whether a
     * reader sleeps (a reader counts itself waiting, fences, then looks at the slot and sleeps on
     * write_seq, which the futex compares: one of the two sees the other's store), instead of a
     * sequentially consistent store per row, which on x86 drains the store buffer behind every
     * row's copy (the numba kernels keep that store per row). */
    if (i > 0) __atomic_thread_fence(__ATOMIC_SEQ_CST);
    return i;
}

static inline i64 readers_waiting(u64 *ctrl) { return LD_SC(ctrl, C_READERS_WAITING) != 0 ? 1 : 0; }

static i64 advance_(u64 *ctrl, i64 reader, i64 new_pos) {
    if (reader < 0) return 0;
    i64 p = READER0 + reader * LINE_WORDS + R_POS;
    if (new_pos > LD_RLX(ctrl, p)) ST_SC(ctrl, p, new_pos);
    if (LD_SC(ctrl, C_WRITER_WAITING) != 0 && new_pos >= LD_ACQ(ctrl, C_WAKE_AT) &&
        XCHG_SC(ctrl, C_WRITER_WAITING, 0) != 0) {
        ADD_SC(ctrl, C_SPACE_EVENT, 1);
        return 1;
    }
    return 0;
}

static i64 open_(u64 *ctrl, i64 capacity, i64 seq, i64 gen) {
    i64 s1 = LD_ACQ(ctrl, STAMP0 + (seq % capacity) * STAMP_STRIDE);
    i64 v = verdict(s1, gen, seq);
    return v == 0 ? s1 : v;
}

static int intact(u64 *ctrl, i64 capacity, i64 seq, i64 s1) {
    __atomic_thread_fence(__ATOMIC_ACQUIRE);
    return LD_RLX(ctrl, STAMP0 + (seq % capacity) * STAMP_STRIDE) == s1;
}

static i64 get(u64 *ctrl, const Py_buffer *slots, i64 seq, char *out, i64 gen) {
    i64 capacity = slots->shape[0];
    Py_ssize_t row = slots->shape[1] * slots->itemsize;
    i64 s1 = open_(ctrl, capacity, seq, gen);
    if (s1 < 0) return s1;
    memcpy(out, (const char *)slots->buf + (seq % capacity) * row, (size_t)row);
    return intact(ctrl, capacity, seq, s1) ? 0 : OVERRUN;
}

static i64 readable_(u64 *ctrl, i64 capacity, i64 seq, i64 gen, i64 spins) {
    i64 slot = STAMP0 + (seq % capacity) * STAMP_STRIDE;
    i64 v = NOT_READY;
    for (i64 i = 0; i < spins + 1; i++) {
        v = verdict(LD_ACQ(ctrl, slot), gen, seq);
        if (v != NOT_READY) break;
        cpu_relax();
    }
    return v;
}

/* a gating reader index is -1 (none) or 0..MAX_GATING_READERS-1 */
#define READER_OK(r) ((r) >= -1 && (r) < MAX_GATING_READERS)

static PyObject *k_ld(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (!nargs_ok("ld", nargs, 2)) return NULL;
    Py_buffer c;
    i64 i;
    if (get_i64s(args, 1, 1, &i) < 0 || get_ctrl(args[0], &c) < 0) return NULL;
    if (i < 0 || i >= CTRL_LEN(c)) {
        PyBuffer_Release(&c);
        PyErr_SetString(PyExc_IndexError, "control word index out of range");
        return NULL;
    }
    i64 r = LD_ACQ(CTRL(c), i);
    PyBuffer_Release(&c);
    return PyLong_FromLongLong(r);
}

static PyObject *k_min_gating_position(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (!nargs_ok("min_gating_position", nargs, 1)) return NULL;
    Py_buffer c;
    if (get_ctrl(args[0], &c) < 0) return NULL;
    i64 r = min_gating(CTRL(c));
    PyBuffer_Release(&c);
    return PyLong_FromLongLong(r);
}

static PyObject *k_write_frame(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    /* (ctrl, slots, frame, gen, utterance, flags, fmt, nbytes) */
    if (!nargs_ok("write_frame", nargs, 8)) return NULL;
    i64 a[5];
    if (get_i64s(args, 3, 5, a) < 0) return NULL;
    i64 gen = a[0], utterance = a[1], flags = a[2], fmt = a[3], nbytes = a[4];
    Bufs b = {.n = 0};
    Py_buffer *c = take_ctrl(&b, args[0]), *s = c ? take_slots(&b, args[1], 1) : NULL;
    Py_buffer *f = s ? take_frames(&b, args[2], s, 1, 0) : NULL;
    if (f == NULL) {
        release(&b);
        return NULL;
    }
    i64 r;
    if (f->shape[0] != s->shape[1] || utterance < 0 || flags < 0 || fmt < 0 || nbytes < 0 ||
        nbytes > s->shape[1] * s->itemsize || !FITS(*c, s->shape[0])) {
        r = BAD_ARGUMENT;
    } else {
        u64 *ctrl = CTRL(*c);
        i64 w = LD_RLX(ctrl, C_WRITE_SEQ);
        i64 refusal;
        r = put_rows(ctrl, s, f->buf, 1, gen, utterance, flags, flags, fmt, nbytes, &refusal) ? (w << 1) | readers_waiting(ctrl)
                                                                                 : refusal;
    }
    release(&b);
    return PyLong_FromLongLong(r);
}

/* write_block (ctrl, slots, block, gen) and write_labelled_block (..., utterance, first, last, fmt):
 * the rows of a block until done or told to wait; n << 1 | wake, or why the first did not go */
static PyObject *write_rows(const char *name, PyObject *const *args, Py_ssize_t nargs, int labelled) {
    if (!nargs_ok(name, nargs, labelled ? 8 : 4)) return NULL;
    i64 a[5] = {0, 0, 0, 0, 0};
    if (get_i64s(args, 3, labelled ? 5 : 1, a) < 0) return NULL;
    i64 gen = a[0], utterance = a[1], first = a[2], last = a[3], fmt = a[4];
    Bufs b = {.n = 0};
    Py_buffer *c = take_ctrl(&b, args[0]), *s = c ? take_slots(&b, args[1], 1) : NULL;
    Py_buffer *f = s ? take_frames(&b, args[2], s, 2, 0) : NULL;
    if (f == NULL) {
        release(&b);
        return NULL;
    }
    i64 r;
    if (f->shape[1] != s->shape[1] || utterance < 0 || first < 0 || last < 0 || fmt < 0 || !FITS(*c, s->shape[0])) {
        r = BAD_ARGUMENT;
    } else {
        u64 *ctrl = CTRL(*c);
        i64 refusal;
        i64 n = put_rows(ctrl, s, f->buf, f->shape[0], gen, utterance, first, last, fmt, 0, &refusal);
        r = n == 0 && refusal != 0 ? refusal : (n << 1) | readers_waiting(ctrl);
    }
    release(&b);
    return PyLong_FromLongLong(r);
}

static PyObject *k_write_block(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    return write_rows("write_block", args, nargs, 0);
}

static PyObject *k_write_labelled_block(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    return write_rows("write_labelled_block", args, nargs, 1);
}

static PyObject *k_advance(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    /* (ctrl, reader, new_pos) */
    if (!nargs_ok("advance", nargs, 3)) return NULL;
    i64 a[2];
    if (get_i64s(args, 1, 2, a) < 0) return NULL;
    if (!READER_OK(a[0])) {
        PyErr_SetString(PyExc_IndexError, "no such gating reader");
        return NULL;
    }
    Py_buffer c;
    if (get_ctrl(args[0], &c) < 0) return NULL;
    i64 r = advance_(CTRL(c), a[0], a[1]);
    PyBuffer_Release(&c);
    return PyLong_FromLongLong(r);
}

/* the reads: (ctrl, slots, seq, out, [label,] gen, reader) */
static PyObject *read_common(const char *name, PyObject *const *args, Py_ssize_t nargs, int labelled, int block) {
    Py_ssize_t want = labelled ? 7 : 6;
    if (!nargs_ok(name, nargs, want)) return NULL;
    i64 seq, ints[2];
    if (get_i64s(args, 2, 1, &seq) < 0 || get_i64s(args, want - 2, 2, ints) < 0) return NULL;
    i64 gen = ints[0], reader = ints[1];
    Bufs b = {.n = 0};
    Py_buffer *c = take_ctrl(&b, args[0]), *s = c ? take_slots(&b, args[1], 0) : NULL;
    Py_buffer *o = s ? take_frames(&b, args[3], s, block ? 2 : 1, 1) : NULL;
    Py_buffer *l = o && labelled ? take_label(&b, args[4]) : NULL;
    if (o == NULL || (labelled && l == NULL)) {
        release(&b);
        return NULL;
    }
    u64 *ctrl = CTRL(*c);
    i64 capacity = s->shape[0];
    Py_ssize_t row = s->shape[1] * s->itemsize;
    i64 r;
    if (o->shape[block ? 1 : 0] != s->shape[1] || seq < 0 || !READER_OK(reader) || !FITS(*c, capacity) ||
        (labelled && l->shape[0] != LABEL_WORDS)) {
        r = BAD_ARGUMENT;
    } else if (block) {
        i64 n = 0;
        r = 0;
        for (Py_ssize_t i = 0; i < o->shape[0]; i++) {
            i64 got = get(ctrl, s, seq + i, (char *)o->buf + i * row, gen);
            if (got != 0) {
                if (n == 0) r = got;
                break;
            }
            n++;
        }
        if (r == 0) r = (n << 1) | advance_(ctrl, reader, seq + n);
    } else if (labelled) {
        i64 s1 = open_(ctrl, capacity, seq, gen);
        if (s1 < 0) {
            r = s1;
        } else {
            i64 line = STAMP0 + (seq % capacity) * STAMP_STRIDE;
            i64 *label = (i64 *)l->buf;
            for (int i = 0; i < LABEL_WORDS; i++) label[i] = LD_RLX(ctrl, line + S_UTTERANCE + i);
            memcpy(o->buf, (const char *)s->buf + (seq % capacity) * row, (size_t)row);
            r = intact(ctrl, capacity, seq, s1) ? advance_(ctrl, reader, seq + 1) : OVERRUN;
        }
    } else {
        r = get(ctrl, s, seq, o->buf, gen);
        if (r == 0) r = advance_(ctrl, reader, seq + 1);
    }
    release(&b);
    return PyLong_FromLongLong(r);
}

static PyObject *k_read_frame(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    return read_common("read_frame", args, nargs, 0, 0);
}

static PyObject *k_read_labelled(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    return read_common("read_labelled", args, nargs, 1, 0);
}

static PyObject *k_read_block(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    return read_common("read_block", args, nargs, 0, 1);
}

static PyObject *k_readable(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    /* (ctrl, capacity, seq, gen, spins) */
    if (!nargs_ok("readable", nargs, 5)) return NULL;
    i64 a[4];
    if (get_i64s(args, 1, 4, a) < 0) return NULL;
    Py_buffer c;
    if (get_ctrl(args[0], &c) < 0) return NULL;
    i64 r = FITS(c, a[0]) && a[1] >= 0 ? readable_(CTRL(c), a[0], a[1], a[2], a[3]) : BAD_ARGUMENT;
    PyBuffer_Release(&c);
    return PyLong_FromLongLong(r);
}

static PyObject *k_begin_reader_wait(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    /* (ctrl, capacity, seq, gen): the futex word to sleep on, or -1 if seq is ready now */
    if (!nargs_ok("begin_reader_wait", nargs, 4)) return NULL;
    i64 a[3];
    if (get_i64s(args, 1, 3, a) < 0) return NULL;
    Py_buffer c;
    if (get_ctrl(args[0], &c) < 0) return NULL;
    if (!FITS(c, a[0]) || a[1] < 0) {
        PyBuffer_Release(&c);
        PyErr_SetString(PyExc_ValueError, "capacity or sequence out of range for this ring");
        return NULL;
    }
    u64 *ctrl = CTRL(c);
    i64 word = LD_SC(ctrl, C_WRITE_SEQ) & 0xFFFFFFFF;
    ADD_SC(ctrl, C_READERS_WAITING, 1);
    __atomic_thread_fence(__ATOMIC_SEQ_CST); /* the count before the look (the writer fences after its rows) */
    if (readable_(ctrl, a[0], a[1], a[2], 0) != NOT_READY || LD_ACQ(ctrl, C_STATE) != LEASED) {
        ADD_SC(ctrl, C_READERS_WAITING, UINT64_MAX);
        word = -1;
    }
    PyBuffer_Release(&c);
    return PyLong_FromLongLong(word);
}

static PyObject *k_end_reader_wait(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (!nargs_ok("end_reader_wait", nargs, 1)) return NULL;
    Py_buffer c;
    if (get_ctrl(args[0], &c) < 0) return NULL;
    ADD_SC(CTRL(c), C_READERS_WAITING, UINT64_MAX);
    PyBuffer_Release(&c);
    Py_RETURN_NONE;
}

static PyObject *k_begin_writer_wait(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    /* (ctrl): the futex word to sleep on, or -1 if there is room now */
    if (!nargs_ok("begin_writer_wait", nargs, 1)) return NULL;
    Py_buffer c;
    if (get_ctrl(args[0], &c) < 0) return NULL;
    u64 *ctrl = CTRL(c);
    i64 word = LD_SC(ctrl, C_SPACE_EVENT) & 0xFFFFFFFF;
    i64 w = LD_RLX(ctrl, C_WRITE_SEQ);
    ST_RLX(ctrl, C_WAKE_AT, w - LD_ACQ(ctrl, C_LOW));
    ST_SC(ctrl, C_WRITER_WAITING, 1);
    if (w - min_gating(ctrl) <= LD_ACQ(ctrl, C_LOW) || LD_ACQ(ctrl, C_STATE) != LEASED) {
        ST_RLX(ctrl, C_WRITER_WAITING, 0);
        word = -1;
    }
    PyBuffer_Release(&c);
    return PyLong_FromLongLong(word);
}

static PyObject *k_space_after_spin(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    /* (ctrl, spins): did the gating readers bring the fill to the low watermark? */
    if (!nargs_ok("space_after_spin", nargs, 2)) return NULL;
    i64 spins;
    if (get_i64s(args, 1, 1, &spins) < 0) return NULL;
    Py_buffer c;
    if (get_ctrl(args[0], &c) < 0) return NULL;
    u64 *ctrl = CTRL(c);
    i64 target = LD_RLX(ctrl, C_WRITE_SEQ) - LD_ACQ(ctrl, C_LOW);
    int room = 0;
    for (i64 i = 0; i < spins + 1; i++) {
        if (min_gating(ctrl) >= target || LD_ACQ(ctrl, C_STATE) != LEASED) {
            room = 1;
            break;
        }
        cpu_relax();
    }
    PyBuffer_Release(&c);
    return PyBool_FromLong(room);
}

static PyObject *k_end_writer_wait(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (!nargs_ok("end_writer_wait", nargs, 1)) return NULL;
    Py_buffer c;
    if (get_ctrl(args[0], &c) < 0) return NULL;
    ST_RLX(CTRL(c), C_WRITER_WAITING, 0);
    PyBuffer_Release(&c);
    Py_RETURN_NONE;
}

static PyObject *k_claim_gating(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    /* (ctrl, start, pid): a free gating-reader slot (1..) for a reader at start, or -1 */
    if (!nargs_ok("claim_gating", nargs, 3)) return NULL;
    i64 a[2];
    if (get_i64s(args, 1, 2, a) < 0) return NULL;
    Py_buffer c;
    if (get_ctrl(args[0], &c) < 0) return NULL;
    u64 *ctrl = CTRL(c);
    i64 slot = -1;
    for (int g = 1; g < MAX_GATING_READERS; g++) {
        int base = READER0 + g * LINE_WORDS;
        u64 expected = 0;
        if (__atomic_compare_exchange_n(&ctrl[base + R_ACTIVE], &expected, (u64)R_CLAIMING, 0, __ATOMIC_SEQ_CST,
                                        __ATOMIC_SEQ_CST)) {
            ST_SC(ctrl, base + R_PID, a[1]);
            ST_SC(ctrl, base + R_POS, a[0]);
            ST_SC(ctrl, base + R_ACTIVE, 1);
            ST_SC(ctrl, C_LIMIT, 0); /* make the writer look at the readers again */
            slot = g;
            break;
        }
    }
    PyBuffer_Release(&c);
    return PyLong_FromLongLong(slot);
}

static PyObject *word_op(const char *name, PyObject *const *args, Py_ssize_t nargs, int bump) {
    if (!nargs_ok(name, nargs, bump ? 2 : 3)) return NULL;
    i64 a[2] = {0, 0};
    if (get_i64s(args, 1, bump ? 1 : 2, a) < 0) return NULL;
    Py_buffer c;
    if (get_ctrl(args[0], &c) < 0) return NULL;
    if (a[0] < 0 || a[0] >= CTRL_LEN(c)) {
        PyBuffer_Release(&c);
        PyErr_SetString(PyExc_IndexError, "control word index out of range");
        return NULL;
    }
    if (bump)
        ADD_SC(CTRL(c), a[0], 1);
    else
        ST_SC(CTRL(c), a[0], a[1]);
    PyBuffer_Release(&c);
    Py_RETURN_NONE;
}

static PyObject *k_store(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    return word_op("store", args, nargs, 0);
}

static PyObject *k_bump(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    return word_op("bump", args, nargs, 1);
}

static PyObject *k_reset(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    /* (ctrl, gen, policy, high, low): prepare a ring for a new lease, new generation first */
    if (!nargs_ok("reset", nargs, 5)) return NULL;
    i64 a[4];
    if (get_i64s(args, 1, 4, a) < 0) return NULL;
    Py_buffer c;
    if (get_ctrl(args[0], &c) < 0) return NULL;
    u64 *ctrl = CTRL(c);
    ST_SC(ctrl, C_GENERATION, a[0]);
    for (Py_ssize_t i = STAMP0; i < CTRL_LEN(c); i++) ST_RLX(ctrl, i, 0);
    for (int g = 0; g < MAX_GATING_READERS; g++) {
        int base = READER0 + g * LINE_WORDS;
        ST_RLX(ctrl, base + R_POS, 0);
        ST_RLX(ctrl, base + R_ACTIVE, g == 0 ? 1 : 0);
    }
    ST_RLX(ctrl, C_WRITE_SEQ, 0);
    ST_RLX(ctrl, C_LIMIT, 0);
    ST_RLX(ctrl, C_WRITER_WAITING, 0);
    ST_RLX(ctrl, C_PAUSED, 0);
    ST_RLX(ctrl, C_DROPPED, 0);
    ST_RLX(ctrl, C_FULL_COUNT, 0);
    ST_RLX(ctrl, C_POLICY, a[1]);
    ST_RLX(ctrl, C_HIGH, a[2]);
    ST_RLX(ctrl, C_LOW, a[3]);
    ST_SC(ctrl, C_STATE, LEASED);
    PyBuffer_Release(&c);
    Py_RETURN_NONE;
}

/* -- the server's read: a frame as the WebSocket message that carries it ---------------------------- */
/* ringaudio/wire.py's audio header: struct "<HBBIQQ" (magic, version, flags, utterance id, sequence,
 * timestamp in µs), behind RFC 6455's header of an unmasked, final binary frame */
#define WIRE_MAGIC 0x5241
#define WIRE_VERSION 1
#define WIRE_HEADER 24

static inline void put_le(char *p, u64 v, int n) {
    for (int i = 0; i < n; i++) p[i] = (char)((v >> (8 * i)) & 0xFF);
}

/* the RFC 6455 header's size for a binary frame of this length */
static inline int ws_prefix(i64 length) { return length < 126 ? 2 : length < 65536 ? 4 : 10; }

/* the whole message at m: RFC 6455 header (prefix bytes), audio header, the payload's
 * length - WIRE_HEADER bytes from the slot */
static void put_message(char *m, int prefix, i64 length, i64 utterance, i64 flags, i64 seq, i64 now_us,
                        const char *payload) {
    m[0] = (char)0x82;
    if (prefix == 2) {
        m[1] = (char)length;
    } else if (prefix == 4) {
        m[1] = 126;
        m[2] = (char)(length >> 8);
        m[3] = (char)length;
    } else {
        m[1] = 127;
        for (int i = 0; i < 8; i++) m[2 + i] = (char)((u64)length >> (8 * (7 - i)));
    }
    char *h = m + prefix;
    put_le(h, WIRE_MAGIC, 2);
    put_le(h + 2, WIRE_VERSION, 1);
    put_le(h + 3, (u64)flags, 1);
    put_le(h + 4, (u64)utterance & 0xFFFFFFFF, 4);
    put_le(h + 8, (u64)seq, 8);
    put_le(h + 16, (u64)now_us, 8);
    memcpy(h + WIRE_HEADER, payload, (size_t)(length - WIRE_HEADER));
}

static PyObject *k_read_message(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    /* (ctrl, slots, seq, gen, reader, now_us) -> (message, utterance, flags, format, wake), or a code:
     * frame seq read as the whole WebSocket message a client gets for it (its payload is the label's
     * byte count of the slot), copied once, straight from the slot into the message */
    if (!nargs_ok("read_message", nargs, 6)) return NULL;
    i64 a[4];
    if (get_i64s(args, 2, 4, a) < 0) return NULL;
    i64 seq = a[0], gen = a[1], reader = a[2], now_us = a[3];
    Bufs b = {.n = 0};
    Py_buffer *c = take_ctrl(&b, args[0]), *s = c ? take_slots(&b, args[1], 0) : NULL;
    if (s == NULL) {
        release(&b);
        return NULL;
    }
    u64 *ctrl = CTRL(*c);
    i64 capacity = s->shape[0];
    Py_ssize_t row = s->shape[1] * s->itemsize;
    PyObject *result = NULL;
    i64 r;
    if (seq < 0 || !READER_OK(reader) || !FITS(*c, capacity)) {
        r = BAD_ARGUMENT;
        goto code;
    }
    i64 s1 = open_(ctrl, capacity, seq, gen);
    if (s1 < 0) {
        r = s1;
        goto code;
    }
    i64 line = STAMP0 + (seq % capacity) * STAMP_STRIDE;
    i64 utterance = LD_RLX(ctrl, line + S_UTTERANCE);
    i64 flags = LD_RLX(ctrl, line + S_UTTERANCE + 1);
    i64 fmt = LD_RLX(ctrl, line + S_UTTERANCE + 2);
    i64 nbytes = LD_RLX(ctrl, line + S_BYTES);
    if (nbytes < 0 || nbytes > row) nbytes = row; /* a torn label: the stamp check below refuses it */
    i64 length = WIRE_HEADER + nbytes;
    int prefix = ws_prefix(length);
    PyObject *msg = PyBytes_FromStringAndSize(NULL, prefix + length);
    if (msg == NULL) goto done;
    put_message(PyBytes_AS_STRING(msg), prefix, length, utterance, flags, seq, now_us,
                (const char *)s->buf + (seq % capacity) * row);
    if (!intact(ctrl, capacity, seq, s1)) {
        Py_DECREF(msg);
        r = OVERRUN;
        goto code;
    }
    i64 wake = advance_(ctrl, reader, seq + 1);
    result = Py_BuildValue("(NLLLL)", msg, (long long)utterance, (long long)flags, (long long)fmt, (long long)wake);
    goto done;
code:
    result = PyLong_FromLongLong(r);
done:
    release(&b);
    return result;
}

#ifdef __unix__
/* send_frames' codes beside NOT_READY and OVERRUN: why it stopped before its budget */
#define LONG_WAY 1 /* the next frame is not like the last (label, flags, size) or would not fit: read it the long way */
#define AT_LIMIT 2 /* the next frame is at the limit (an event is due there) */
#define BLOCKED 3  /* the socket took less than all: the rest comes back to be queued */
#define SEND_CAP 65536

/* frames seq, seq + 1, ... (at most budget, none at or past limit) like the frame read before them
 * (labelled utterance, no flags, format word fmt, nbytes of payload) as their WebSocket messages into
 * out (*used bytes): how many, and in *code why it stopped short (0: the budget) */
static i64 gather(u64 *ctrl, const Py_buffer *s, i64 seq, i64 gen, i64 utterance, i64 fmt, i64 nbytes, i64 limit,
                  i64 budget, i64 now_us, char *out, size_t *used, i64 *code) {
    i64 capacity = s->shape[0];
    Py_ssize_t row = s->shape[1] * s->itemsize;
    i64 length = WIRE_HEADER + nbytes;
    int prefix = ws_prefix(length);
    size_t size = (size_t)(prefix + length);
    i64 n = 0;
    *code = 0;
    *used = 0;
    for (; n < budget; n++) {
        i64 q = seq + n;
        if (q >= limit) {
            *code = AT_LIMIT;
            break;
        }
        if (*used + size > SEND_CAP) {
            *code = LONG_WAY;
            break;
        }
        i64 s1 = open_(ctrl, capacity, q, gen);
        if (s1 < 0) {
            *code = s1;
            break;
        }
        i64 line = STAMP0 + (q % capacity) * STAMP_STRIDE;
        if (LD_RLX(ctrl, line + S_UTTERANCE) != utterance || LD_RLX(ctrl, line + S_UTTERANCE + 1) != 0 ||
            LD_RLX(ctrl, line + S_UTTERANCE + 2) != fmt || LD_RLX(ctrl, line + S_BYTES) != nbytes) {
            *code = LONG_WAY; /* (a torn label too: the long way re-reads it) */
            break;
        }
        put_message(out + *used, prefix, length, utterance, 0, q, now_us, (const char *)s->buf + (q % capacity) * row);
        if (!intact(ctrl, capacity, q, s1)) {
            *code = OVERRUN;
            break;
        }
        *used += size;
    }
    return n;
}

/* the reader moved past seq + n: wake a writer waiting for that space */
static void moved(u64 *ctrl, i64 reader, i64 to) {
    if (advance_(ctrl, reader, to)) {
#ifdef __linux__
        syscall(SYS_futex, &ctrl[C_SPACE_EVENT], FUTEX_WAKE, INT_MAX, NULL, NULL, 0);
#endif
    }
}

/* what the non-blocking socket fd takes of out[0:used] */
static size_t send_out(int fd, const char *out, size_t used) {
    size_t sent = 0;
    while (sent < used) {
        ssize_t w = send(fd, out + sent, used - sent, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (w > 0)
            sent += (size_t)w;
        else if (!(w < 0 && errno == EINTR))
            break; /* EAGAIN, or a broken connection: the transport's own write meets it */
    }
    return sent;
}

static char send_buffer[SEND_CAP];

static PyObject *k_send_frames(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    /* (ctrl, slots, seq, gen, reader, now_us, fd, utterance, format, nbytes, limit, budget)
     *   -> (frames, code, rest), or BAD_ARGUMENT:
     * the server's steady state in one call. Frames seq, seq + 1, ... (at most budget, none at or past
     * limit), each labelled utterance with no flags, the format word and payload size of the frame
     * read before them, are read as their WebSocket messages (headers stamped with now_us) into one
     * buffer and written to the socket fd with one non-blocking send. It stops at the first frame not
     * like that (code LONG_WAY), not written yet (NOT_READY) or overwritten (OVERRUN): that frame is
     * not read, and the caller reads it the long way. frames were read (the gating position moved
     * past them); whatever of them the socket did not take is rest (bytes, code BLOCKED), for the
     * caller to queue before anything else it sends there. A writer waiting for the space they free is
     * woken here (on Linux: the futex wake of ringaudio/ring/futex.py; elsewhere writers poll). */
    if (!nargs_ok("send_frames", nargs, 12)) return NULL;
    i64 a[10];
    if (get_i64s(args, 2, 10, a) < 0) return NULL;
    i64 seq = a[0], gen = a[1], reader = a[2], now_us = a[3], fd = a[4], utterance = a[5], fmt = a[6],
        nbytes = a[7], limit = a[8], budget = a[9];
    Bufs b = {.n = 0};
    Py_buffer *c = take_ctrl(&b, args[0]), *s = c ? take_slots(&b, args[1], 0) : NULL;
    if (s == NULL) {
        release(&b);
        return NULL;
    }
    u64 *ctrl = CTRL(*c);
    PyObject *result = NULL;
    if (seq < 0 || !READER_OK(reader) || !FITS(*c, s->shape[0]) || fd < 0 || fd > INT32_MAX || nbytes < 0 ||
        nbytes > s->shape[1] * s->itemsize) {
        result = PyLong_FromLongLong(BAD_ARGUMENT);
        goto done;
    }
    size_t used;
    i64 code;
    i64 n = gather(ctrl, s, seq, gen, utterance, fmt, nbytes, limit, budget, now_us, send_buffer, &used, &code);
    if (n) moved(ctrl, reader, seq + n);
    size_t sent = send_out((int)fd, send_buffer, used);
    PyObject *rest;
    if (sent < used) {
        rest = PyBytes_FromStringAndSize(send_buffer + sent, (Py_ssize_t)(used - sent));
        if (rest == NULL) goto done;
        code = BLOCKED;
    } else {
        rest = Py_NewRef(Py_None);
    }
    result = Py_BuildValue("(LLN)", (long long)n, (long long)code, rest);
done:
    release(&b);
    return result;
}

/* -- lanes: the steady state of many sessions in one call per pass ---------------------------------- */
/* A lane is one session's steady state held here between passes: its ring (buffers held), its own
 * descriptor of the socket (a dup, so a descriptor number reused after the server closed the socket
 * can never get its frames), where it reads, what its frames are like, and its pacing (the token
 * bucket of ringaudio/server/pacing.py, the same arithmetic). Lanes.run serves every lane that is due:
 * it sends what the bucket allows as send_frames does and stops a lane (for the server to take back,
 * with eject) at whatever needs a look: a frame not like the last, a limit, an overrun, or a socket
 * that did not take everything. Every refresh seconds (from visit_at on) it reads the client's
 * backlog as ringaudio/server/backlog.py does, keeps it as a sample for the server, and stops the
 * lane (VISIT) only when the backlog is over the session's send limit: a client that keeps up never
 * comes back to Python for it. */
#define VISIT 4         /* the client's backlog is over the send limit: the server looks at the session */
#define LANE_TIMES 128  /* send times kept per lane, for the sequence numbers acks name */
#define LANE_SAMPLES 16 /* backlog samples kept per lane: 4 s at the server's 0.25 s refresh */
#define TCP_INFO_SIZE 232  /* up to and including tcpi_snd_wnd (Linux >= 5.4) */
#define SND_WND_OFFSET 228 /* u32 tcpi_snd_wnd: the peer's advertised receive window, after scaling */

typedef struct {
    int fd, stopped;
    Bufs b; /* ctrl, slots */
    i64 seq, gen, reader, uid, fmt, nbytes, limit, first;
    i64 max_window, send_limit, outq, window, probes; /* the backlog's baseline, limit and last reading */
    double tokens, last, period, prebuffer, due, visit_at, last_send, last_interval, refresh;
    double times[LANE_TIMES];
    double samples[LANE_SAMPLES][3]; /* (time, frames taken before it, backlog bytes) */
} Lane;

/* The client's backlog as backlog.probe and backlog.unconsumed read it (nothing is ever queued on the
 * transport of a session in a lane): the kernel's send queue, plus what the client's kernel holds
 * unread, its advertised window below the largest it has advertised. Returns it, and keeps it as a
 * sample. A reading the kernel refuses counts as nothing, as there. */
static i64 lane_probe(Lane *l, double now) {
    i64 outq = 0, window = -1;
#ifdef __linux__
    int q = 0;
    if (ioctl(l->fd, SIOCOUTQ, &q) == 0) outq = q;
    unsigned char info[TCP_INFO_SIZE];
    socklen_t len = sizeof info;
    if (getsockopt(l->fd, IPPROTO_TCP, TCP_INFO, info, &len) == 0 && len >= SND_WND_OFFSET + 4) {
        uint32_t w;
        memcpy(&w, info + SND_WND_OFFSET, sizeof w);
        window = (i64)w;
        if (window > l->max_window) l->max_window = window;
    }
#endif
    i64 backlog = outq + (window >= 0 && l->max_window > window ? l->max_window - window : 0);
    l->outq = outq;
    l->window = window;
    double *s = l->samples[l->probes++ % LANE_SAMPLES];
    s[0] = now;
    s[1] = (double)(l->seq - l->first);
    s[2] = (double)backlog;
    return backlog;
}

typedef struct {
    PyObject_HEAD Lane **v; /* by slot; each Lane allocated on its own (Py_buffers must not move) */
    Py_ssize_t cap, top, count;
} LanesObject;

static void lane_free(LanesObject *self, Py_ssize_t slot) {
    Lane *l = self->v[slot];
    if (l == NULL) return;
    release(&l->b);
    close(l->fd);
    PyMem_Free(l);
    self->v[slot] = NULL;
    self->count--;
    while (self->top > 0 && self->v[self->top - 1] == NULL) self->top--;
}

static void lanes_dealloc(LanesObject *self) {
    for (Py_ssize_t i = 0; i < self->top; i++) lane_free(self, i);
    PyMem_Free(self->v);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int get_f64s(PyObject *const *args, Py_ssize_t first, Py_ssize_t n, double *out) {
    for (Py_ssize_t i = 0; i < n; i++) {
        out[i] = PyFloat_AsDouble(args[first + i]);
        if (out[i] == -1.0 && PyErr_Occurred()) return -1;
    }
    return 0;
}

static PyObject *lanes_admit(LanesObject *self, PyObject *const *args, Py_ssize_t nargs) {
    /* (slot, ctrl, slots, fd, seq, gen, reader, utterance, format, nbytes, limit, max_window, send_limit,
     *  tokens, last, period, prebuffer, due, visit_at, last_send, last_interval, refresh) -> None
     * (max_window: the backlog's baseline window so far; send_limit: the backlog, in bytes, past which
     * the lane stops; visit_at: its first reading of the backlog, then one every refresh seconds) */
    if (!nargs_ok("admit", nargs, 22)) return NULL;
    i64 a[10];
    double f[9];
    Py_ssize_t slot = PyLong_AsSsize_t(args[0]);
    if (slot == -1 && PyErr_Occurred()) return NULL;
    if (get_i64s(args, 3, 10, a) < 0 || get_f64s(args, 13, 9, f) < 0) return NULL;
    i64 fd = a[0], seq = a[1], reader = a[3], nbytes = a[6];
    if (slot < 0 || slot > (1 << 20) || (slot < self->top && self->v[slot] != NULL)) {
        PyErr_Format(PyExc_ValueError, "lane slot %zd is taken or out of range", slot);
        return NULL;
    }
    if (fd < 0 || fd > INT32_MAX || seq < 0 || !READER_OK(reader) || a[8] < 0 || a[9] < 0 || !(f[2] > 0) ||
        !(f[3] >= 1) || !(f[8] > 0)) {
        PyErr_SetString(PyExc_ValueError, "bad lane arguments");
        return NULL;
    }
    if (slot >= self->cap) {
        Py_ssize_t cap = self->cap ? self->cap : 64;
        while (cap <= slot) cap *= 2;
        Lane **v = PyMem_Realloc(self->v, (size_t)cap * sizeof(Lane *));
        if (v == NULL) return PyErr_NoMemory();
        memset(v + self->cap, 0, (size_t)(cap - self->cap) * sizeof(Lane *));
        self->v = v;
        self->cap = cap;
    }
    Lane *l = PyMem_Calloc(1, sizeof(Lane));
    if (l == NULL) return PyErr_NoMemory();
    Py_buffer *c = take_ctrl(&l->b, args[1]), *s = c ? take_slots(&l->b, args[2], 0) : NULL;
    if (s == NULL || !FITS(*c, s->shape[0]) || nbytes < 0 || nbytes > s->shape[1] * s->itemsize ||
        WIRE_HEADER + nbytes + 10 > SEND_CAP) {
        if (s != NULL) PyErr_SetString(PyExc_ValueError, "bad lane ring or payload size");
        release(&l->b);
        PyMem_Free(l);
        return NULL;
    }
    l->fd = fcntl((int)fd, F_DUPFD_CLOEXEC, 0);
    if (l->fd < 0) {
        release(&l->b);
        PyMem_Free(l);
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    l->seq = l->first = seq;
    l->gen = a[2];
    l->reader = reader;
    l->uid = a[4];
    l->fmt = a[5];
    l->nbytes = nbytes;
    l->limit = a[7];
    l->max_window = a[8];
    l->send_limit = a[9];
    l->window = -1; /* (no reading yet) */
    l->tokens = f[0];
    l->last = f[1];
    l->period = f[2];
    l->prebuffer = f[3];
    l->due = f[4];
    l->visit_at = f[5];
    l->last_send = f[6];
    l->last_interval = f[7];
    l->refresh = f[8];
    self->v[slot] = l;
    self->count++;
    if (slot >= self->top) self->top = slot + 1;
    Py_RETURN_NONE;
}

static PyObject *lanes_eject(LanesObject *self, PyObject *const *args, Py_ssize_t nargs) {
    /* (slot) -> (taken, seq, tokens, last, due, last_send, last_interval, times, max_window, outq,
     * window, samples): the lane's state for the server to carry on from (taken: frames sent since
     * admit; times: the send times of the last min(taken, LANE_TIMES) of them, as float64 bytes, the
     * first at seq - len; outq and window (-1: unknown) as the last backlog reading found them;
     * samples: the last min(readings, LANE_SAMPLES) readings, oldest first, as float64 bytes of
     * (time, frames taken before it, backlog bytes); none: no reading since admit) */
    if (!nargs_ok("eject", nargs, 1)) return NULL;
    Py_ssize_t slot = PyLong_AsSsize_t(args[0]);
    if (slot == -1 && PyErr_Occurred()) return NULL;
    if (slot < 0 || slot >= self->top || self->v[slot] == NULL) {
        PyErr_Format(PyExc_KeyError, "no lane in slot %zd", slot);
        return NULL;
    }
    Lane *l = self->v[slot];
    i64 taken = l->seq - l->first, kept = taken < LANE_TIMES ? taken : LANE_TIMES;
    PyObject *times = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)(kept * (i64)sizeof(double)));
    if (times == NULL) return NULL;
    double *t = (double *)PyBytes_AS_STRING(times);
    for (i64 i = 0; i < kept; i++) t[i] = l->times[(l->seq - kept + i) % LANE_TIMES];
    i64 read = l->probes < LANE_SAMPLES ? l->probes : LANE_SAMPLES;
    PyObject *samples = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)(read * 3 * (i64)sizeof(double)));
    if (samples == NULL) {
        Py_DECREF(times);
        return NULL;
    }
    double *u = (double *)PyBytes_AS_STRING(samples);
    for (i64 i = 0; i < read; i++) memcpy(u + 3 * i, l->samples[(l->probes - read + i) % LANE_SAMPLES], 3 * sizeof(double));
    PyObject *r = Py_BuildValue("(LLdddddNLLLN)", (long long)taken, (long long)l->seq, l->tokens, l->last, l->due,
                                l->last_send, l->last_interval, times, (long long)l->max_window, (long long)l->outq,
                                (long long)l->window, samples);
    if (r != NULL) lane_free(self, slot);
    return r;
}

static PyObject *lanes_write(LanesObject *self, PyObject *const *args, Py_ssize_t nargs) {
    /* (slot, data) -> the bytes of data the socket took (all of it, or the first part): a message of
     * the server's own (a ping, a pong, an event) written to a lane's socket between its frames,
     * without taking the lane back. The caller takes the lane back, if the socket did not take it
     * all, and queues the rest before anything else. */
    if (!nargs_ok("write", nargs, 2)) return NULL;
    Py_ssize_t slot = PyLong_AsSsize_t(args[0]);
    if (slot == -1 && PyErr_Occurred()) return NULL;
    if (slot < 0 || slot >= self->top || self->v[slot] == NULL || self->v[slot]->stopped) {
        PyErr_Format(PyExc_KeyError, "no running lane in slot %zd", slot);
        return NULL;
    }
    Py_buffer v;
    if (PyObject_GetBuffer(args[1], &v, PyBUF_SIMPLE) < 0) return NULL;
    size_t sent = send_out(self->v[slot]->fd, v.buf, (size_t)v.len);
    PyBuffer_Release(&v);
    return PyLong_FromSize_t(sent); /* (nothing after the send can fail: what went, went) */
}

/* A histogram as ringaudio/server/metrics.py's BatchHistogram keeps it: float64 bounds[n] and int64
 * counts[n + 1] (the last: +Inf); a value goes to the first bucket whose bound it does not exceed
 * (numpy's searchsorted, side="left"), so the lanes bin their observations where they make them. */
typedef struct {
    const double *bounds;
    i64 *counts;
    Py_ssize_t n;
    double sum;
} Hist;

static int take_hist(Bufs *b, PyObject *bounds, PyObject *counts, Hist *h) {
    Py_buffer *bv = taken(b, get_buf(bounds, &b->v[b->n], PyBUF_FORMAT | PyBUF_C_CONTIGUOUS));
    Py_buffer *cv = bv ? taken(b, get_buf(counts, &b->v[b->n], PyBUF_WRITABLE | PyBUF_FORMAT | PyBUF_C_CONTIGUOUS)) : NULL;
    if (cv == NULL) return -1;
    const char *cf = elem_format(cv);
    if (bv->ndim != 1 || cv->ndim != 1 || bv->itemsize != 8 || cv->itemsize != 8 || strcmp(elem_format(bv), "d") ||
        (strcmp(cf, "q") && strcmp(cf, "l")) || cv->shape[0] != bv->shape[0] + 1) {
        PyErr_SetString(PyExc_TypeError, "a histogram is float64 bounds[n] and int64 counts[n + 1]");
        return -1;
    }
    h->bounds = bv->buf;
    h->counts = cv->buf;
    h->n = bv->shape[0];
    h->sum = 0;
    return 0;
}

static void hist_add(Hist *h, double v) {
    Py_ssize_t i = 0;
    while (i < h->n && h->bounds[i] < v) i++;
    h->counts[i]++;
    h->sum += v;
}

static PyObject *lanes_run(LanesObject *self, PyObject *const *args, Py_ssize_t nargs) {
    /* (now, now_us, early, poll, interval_bounds, interval_counts, jitter_bounds, jitter_counts)
     *   -> (frames, interval_sum, jitter_sum, next_due, stopped):
     * serve every lane due by now + early (seconds, monotonic): what its bucket allows, a frame due
     * within early counting as due, as the server's Pacer.allowance. A lane that sent its allowance
     * is due again when its bucket holds a token; one whose next frame is not written yet, after poll
     * seconds. The ms between a lane's sends and their change, as the server's pump observes them,
     * are counted into the two histograms (Hist), their sums returned. frames: sent in all;
     * next_due: the earliest due time of a lane left (inf: none); stopped: [(slot, code, rest)] of
     * the lanes stopped (VISIT, LONG_WAY, AT_LIMIT, OVERRUN, CLOSED, BLOCKED with the bytes the socket
     * did not take): run skips them until the server ejects them. A lane due for a reading of its
     * client's backlog (lane_probe) is read before it sends, as the server's pump does. */
    if (!nargs_ok("run", nargs, 8)) return NULL;
    double now = PyFloat_AsDouble(args[0]), early = PyFloat_AsDouble(args[2]), poll = PyFloat_AsDouble(args[3]);
    long long now_us = PyLong_AsLongLong(args[1]);
    if (PyErr_Occurred()) return NULL;
    Bufs b = {.n = 0};
    Hist iv, jv;
    if (take_hist(&b, args[4], args[5], &iv) < 0 || take_hist(&b, args[6], args[7], &jv) < 0) {
        release(&b);
        return NULL;
    }
    PyObject *stopped = PyList_New(0);
    if (stopped == NULL) {
        release(&b);
        return NULL;
    }
    i64 frames = 0;
    double next = 1.0 / 0.0;
    for (Py_ssize_t slot = 0; slot < self->top; slot++) {
        Lane *l = self->v[slot];
        if (l == NULL || l->stopped) continue;
        if (l->due > now + early) {
            if (l->due < next) next = l->due;
            continue;
        }
        i64 code = 0;
        PyObject *rest = NULL;
        u64 *ctrl = CTRL(l->b.v[0]);
        if (LD_ACQ(ctrl, C_GENERATION) != l->gen || LD_ACQ(ctrl, C_STATE) != LEASED) {
            code = CLOSED; /* its stream ended and the ring went back (or to another stream) */
        } else if (now >= l->visit_at && (l->visit_at = now + l->refresh, lane_probe(l, now) > l->send_limit)) {
            code = VISIT;
        } else {
            double t = l->tokens + (now - l->last) / l->period;
            l->tokens = t < l->prebuffer ? t : l->prebuffer;
            l->last = now;
            i64 allow = (i64)(l->tokens + early / l->period + 1e-9);
            if (allow > 0) {
                size_t used;
                i64 n = gather(ctrl, &l->b.v[1], l->seq, l->gen, l->uid, l->fmt, l->nbytes, l->limit, allow, now_us,
                               send_buffer, &used, &code);
                if (n) {
                    moved(ctrl, l->reader, l->seq + n);
                    for (i64 i = 0; i < n; i++) l->times[(l->seq + i) % LANE_TIMES] = now;
                    l->seq += n;
                    l->tokens -= (double)n;
                    frames += n;
                    if (l->last_send != 0) {
                        double interval = (now - l->last_send) * 1000;
                        hist_add(&iv, interval);
                        if (l->last_interval != 0) hist_add(&jv, fabs(interval - l->last_interval));
                        l->last_interval = interval;
                    }
                    l->last_send = now;
                }
                size_t sent = send_out(l->fd, send_buffer, used);
                if (sent < used) {
                    rest = PyBytes_FromStringAndSize(send_buffer + sent, (Py_ssize_t)(used - sent));
                    if (rest == NULL) goto fail;
                    code = BLOCKED;
                } else if (n == allow) {
                    code = 0;
                } else if (code == NOT_READY) {
                    code = 0;
                    l->due = now + poll;
                    if (l->due < next) next = l->due;
                    continue;
                }
            }
            if (code == 0) {
                double wait = 1.0 - l->tokens;
                l->due = now + (wait > 0 ? wait : 0) * l->period;
                if (l->due < next) next = l->due;
                continue;
            }
        }
        PyObject *item = Py_BuildValue("(nLN)", slot, (long long)code, rest ? rest : Py_NewRef(Py_None));
        if (item == NULL || PyList_Append(stopped, item) < 0) {
            Py_XDECREF(item);
            goto fail;
        }
        Py_DECREF(item);
        l->stopped = 1; /* (only once the server is sure to hear of it) */
    }
    release(&b);
    return Py_BuildValue("(LdddN)", (long long)frames, iv.sum, jv.sum, next, stopped);
fail: /* (the server, told of no stop, takes every lane back) */
    release(&b);
    Py_DECREF(stopped);
    return NULL;
}

static PyObject *lanes_len_get(LanesObject *self, void *closure) { return PyLong_FromSsize_t(self->count); }

static PyObject *lanes_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    if (PyTuple_GET_SIZE(args) || (kwds && PyDict_GET_SIZE(kwds))) {
        PyErr_SetString(PyExc_TypeError, "Lanes() takes no arguments");
        return NULL;
    }
    return type->tp_alloc(type, 0);
}

#define LANE_METHOD(name) {#name, (PyCFunction)(void (*)(void))lanes_##name, METH_FASTCALL, NULL}
static PyMethodDef lanes_methods[] = {
    LANE_METHOD(admit),
    LANE_METHOD(eject),
    LANE_METHOD(run),
    LANE_METHOD(write),
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef lanes_getset[] = {
    {"count", (getter)lanes_len_get, NULL, "lanes held", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject LanesType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "ringaudio.kernels._ring.Lanes",
    .tp_basicsize = sizeof(LanesObject),
    .tp_dealloc = (destructor)lanes_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "The steady state of many sessions, served in one call per pass (see _ring.c).",
    .tp_methods = lanes_methods,
    .tp_getset = lanes_getset,
    .tp_new = lanes_new,
};
#endif

static PyObject *k_warm(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    /* (dtype): nothing to compile here; the numba kernels' warm() takes the same argument */
    if (!nargs_ok("warm", nargs, 1)) return NULL;
    Py_RETURN_NONE;
}

#define FAST(name) {#name, (PyCFunction)(void (*)(void))k_##name, METH_FASTCALL, NULL}
static PyMethodDef methods[] = {
    FAST(ld),
    FAST(min_gating_position),
    FAST(write_frame),
    FAST(write_block),
    FAST(write_labelled_block),
    FAST(advance),
    FAST(read_frame),
    FAST(read_labelled),
    FAST(read_block),
    FAST(read_message),
#ifdef __unix__
    FAST(send_frames),
#endif
    FAST(readable),
    FAST(begin_reader_wait),
    FAST(end_reader_wait),
    FAST(begin_writer_wait),
    FAST(space_after_spin),
    FAST(end_writer_wait),
    FAST(claim_gating),
    FAST(store),
    FAST(bump),
    FAST(reset),
    FAST(warm),
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_ring",
                                    "The frame ring's kernels in C (see ringaudio/kernels/ring.py).", -1, methods,
                                    NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__ring(void) {
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
#ifdef __unix__
    if (PyType_Ready(&LanesType) < 0 || PyModule_AddObjectRef(m, "Lanes", (PyObject *)&LanesType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
#endif
    struct {
        const char *name;
        long long value;
    } constants[] = {
        {"WAIT", WAIT},
        {"CLOSED", CLOSED},
        {"BAD_ARGUMENT", BAD_ARGUMENT},
        {"NOT_READY", NOT_READY},
        {"OVERRUN", OVERRUN},
#ifdef __unix__
        {"LONG_WAY", LONG_WAY},
        {"AT_LIMIT", AT_LIMIT},
        {"BLOCKED", BLOCKED},
        {"VISIT", VISIT},
#endif
        /* the layout this was built for, checked against ringaudio.ring.layout by the tests */
        {"LINE_WORDS", LINE_WORDS},
        {"MAX_GATING_READERS", MAX_GATING_READERS},
        {"C_WRITE_SEQ", C_WRITE_SEQ},
        {"C_LIMIT", C_LIMIT},
        {"C_WRITER_WAITING", C_WRITER_WAITING},
        {"C_WAKE_AT", C_WAKE_AT},
        {"C_SPACE_EVENT", C_SPACE_EVENT},
        {"C_READERS_WAITING", C_READERS_WAITING},
        {"C_STATE", C_STATE},
        {"C_GENERATION", C_GENERATION},
        {"C_POLICY", C_POLICY},
        {"C_HIGH", C_HIGH},
        {"C_LOW", C_LOW},
        {"C_PAUSED", C_PAUSED},
        {"C_DROPPED", C_DROPPED},
        {"C_FULL_COUNT", C_FULL_COUNT},
        {"READER0", READER0},
        {"R_ACTIVE", R_ACTIVE},
        {"R_POS", R_POS},
        {"R_PID", R_PID},
        {"R_CLAIMING", R_CLAIMING},
        {"STAMP0", STAMP0},
        {"STAMP_STRIDE", STAMP_STRIDE},
        {"S_UTTERANCE", S_UTTERANCE},
        {"S_BYTES", S_BYTES},
        {"LABEL_WORDS", LABEL_WORDS},
        {"LEASED", LEASED},
        {"BLOCK", BLOCK},
        {"GEN_SHIFT", GEN_SHIFT},
        {"GEN_MASK", GEN_MASK},
        {"WIRE_MAGIC", WIRE_MAGIC},
        {"WIRE_VERSION", WIRE_VERSION},
        {"WIRE_HEADER", WIRE_HEADER},
    };
    for (size_t i = 0; i < sizeof constants / sizeof constants[0]; i++) {
        if (PyModule_AddObject(m, constants[i].name, PyLong_FromLongLong(constants[i].value)) < 0) {
            Py_DECREF(m);
            return NULL;
        }
    }
    return m;
}
