/* What both C extensions (_ring.c, _dsp.c) ask of a buffer they are handed. */
#ifndef RINGAUDIO_BUFFERS_H
#define RINGAUDIO_BUFFERS_H

#include <Python.h>

/* A buffer's element type, without a native/little-endian prefix ("" for a big-endian one). */
static inline const char *elem_format(const Py_buffer *v) {
    const char *f = v->format ? v->format : "B";
    if (*f == '@' || *f == '=' || *f == '<') f++;
    if (*f == '>' || *f == '!') return "";
    return f;
}

#endif
