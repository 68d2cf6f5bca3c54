"""Byte layout of a ring segment, and the pure arithmetic of stamps, cursors and labels.

Nothing here touches shared memory, a clock or a process, and nothing imports numba: the
numba kernels (:mod:`ringaudio.kernels.ring`) compile these same functions for their own use,
so the stamp and watermark rules exist once in Python; the C kernels (``_ring.c``) restate
them, and the tests check the two kernel sets against each other.

A segment (one ``/dev/shm`` object) holds a header and ``n_rings`` rings of the
same format. All words are little-endian ``uint64``; every word written by a
different party sits on its own 64-byte cache line::

    segment:  header (256 B) | ring 0 | ring 1 | ... | ring n-1
    ring:     control lines | reader lines | stamps (one line each) | slots

Sequence numbers count frames from 0 for each lease of a ring. Frame ``seq``
lives in slot ``seq % capacity``. Each slot has a seqlock *stamp* that also
carries the lease generation, so a frame left behind by an earlier lease, or by
a writer that still holds a stale handle, never matches a current sequence.

The stamp's cache line also holds the frame's *label* (layout version 2): its
utterance id, its flags (first/last frame of the utterance) and its format
(sample rate, frame duration, encoding), written between the odd and the even
stamp like the samples, so a reader gets a frame and its label from one
consistent copy, and every reader (the session's and any listener) sees the
same label::

    stamp line:  stamp | utterance id | flags | format | payload bytes | (3 spare)
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Final, NamedTuple

import numpy as np

from ..errors import ConfigError, HeaderProblem, WatermarkError

if sys.byteorder != "little":  # pragma: no cover - every target we know is little-endian
    raise ImportError("ringaudio's shared-memory layout is little-endian only")

MAGIC: Final = int.from_bytes(b"RINGAUDI", "little")
LAYOUT_VERSION: Final = 2  # 2: a label (utterance, flags, format) beside each stamp
LINE_WORDS: Final = 8  # 64-byte cache line
HEADER_BYTES: Final = 256
MAX_GATING_READERS: Final = 4

# Segment header words.
H_MAGIC: Final = 0
H_VERSION: Final = 1
H_HEADER_BYTES: Final = 2
H_N_RINGS: Final = 3
H_RING_BYTES: Final = 4
H_CAPACITY: Final = 5
H_FRAME_SAMPLES: Final = 6
H_CHANNELS: Final = 7
H_DTYPE: Final = 8
H_FRAME_BYTES: Final = 9
H_CTRL_WORDS: Final = 10
H_SEGMENT_BYTES: Final = 11
H_OWNER_PID: Final = 12
H_OWNER_START: Final = 13  # owner's process start time, ms since the epoch
H_POLICY: Final = 14
H_HIGH: Final = 15
H_LOW: Final = 16
H_READY: Final = 17  # written last, with release: the header is complete

# Ring control words (offsets from the ring's first word).
C_WRITE_SEQ: Final = 0  # next sequence to write; low 32 bits are the readers' futex word
C_LIMIT: Final = 1  # writer's cache: it may write below this without looking at the readers (block)
C_WRITER_WAITING: Final = 8  # writer sleeps for space
C_WAKE_AT: Final = 9  # ... until a gating reader reaches this position
C_SPACE_EVENT: Final = 10  # counter; low 32 bits are the writer's futex word
C_READERS_WAITING: Final = 11  # number of readers asleep on C_WRITE_SEQ
C_STATE: Final = 16
C_GENERATION: Final = 17
C_POLICY: Final = 18
C_HIGH: Final = 19  # high watermark, frames
C_LOW: Final = 20  # low watermark, frames
C_PAUSED: Final = 21  # block: writer is between high and low; drop: writer is dropping
C_DROPPED: Final = 22  # frames overwritten before the default reader read them
C_FULL_COUNT: Final = 23  # times the ring reached its high watermark (block) or started dropping
READER0: Final = 4 * LINE_WORDS  # first reader line
R_ACTIVE: Final = 0  # 0 free, R_CLAIMING being set up, 1 gating
R_CLAIMING: Final = 2
R_POS: Final = 1  # next sequence this reader will read
R_PID: Final = 2
STAMP0: Final = READER0 + MAX_GATING_READERS * LINE_WORDS
STAMP_STRIDE: Final = LINE_WORDS  # one stamp per cache line: a reader right behind the writer shares none
# Words of a stamp line after the stamp: the frame's label, published under the same stamp as its samples.
S_UTTERANCE: Final = 1
S_FLAGS: Final = 2
S_FORMAT: Final = 3
S_BYTES: Final = 4  # payload bytes (the slot's size for PCM; less for a compressed packet)
LABEL_WORDS: Final = 4  # S_UTTERANCE .. S_BYTES, in this order: what a labelled read copies out

# Frame flags are the wire's (ringaudio.wire.FLAG_FIRST, FLAG_LAST): the flags word carries them unchanged.

# Ring states.
FREE: Final = 0
LEASED: Final = 1
CLOSED: Final = 2

# Overflow policies.
BLOCK: Final = 0
DROP_OLDEST: Final = 1
POLICIES: Final = {"block": BLOCK, "drop_oldest": DROP_OLDEST}
POLICY_NAMES: Final = {v: k for k, v in POLICIES.items()}

DTYPES: Final = {"int16": 1, "int32": 2, "float32": 3, "float64": 4}
DTYPE_NAMES: Final = {v: k for k, v in DTYPES.items()}

# Stamps: generation in the top bits (23), 2*seq+1 (being written) or 2*seq+2
# (published) below. 0 means "never written in this lease".
GEN_SHIFT: Final = 40
GEN_MASK: Final = (1 << 23) - 1  # stamps stay below 2**63
SEQ_LIMIT: Final = 1 << (GEN_SHIFT - 1)  # 2**39 frames: 348 years at 50 frames/s

MAX_CAPACITY: Final = 1 << 20
MAX_FRAME_BYTES: Final = 1 << 22
MAX_CHANNELS: Final = 64


def round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


# The numba kernels call the functions below (registered there with ``register_jitable``); the
# tests and the Python layer call them as they are.


def stamp_writing(generation: int, seq: int) -> int:
    return ((generation & GEN_MASK) << GEN_SHIFT) | (2 * seq + 1)


def stamp_published(generation: int, seq: int) -> int:
    return ((generation & GEN_MASK) << GEN_SHIFT) | (2 * seq + 2)


READY: Final = 0
NOT_READY: Final = 1
OVERRUN: Final = 2


def classify(stamp: int, generation: int, seq: int) -> int:
    """What a reader of ``seq`` concludes from a slot's stamp: READY, NOT_READY or OVERRUN."""
    want = stamp_published(generation, seq)
    if stamp == want:
        return READY
    if stamp >> GEN_SHIFT != generation & GEN_MASK:
        return NOT_READY  # left by another lease: the current writer has not reached it
    return NOT_READY if stamp < want else OVERRUN


def oldest_readable(write_seq: int, capacity: int, expected: int) -> int:
    """Where a reader lapped at ``expected`` resumes, given the writer's cursor.

    The slot of ``write_seq - capacity`` may be under rewrite right now, so the
    oldest frame safe to resume at is one later.
    """
    return max(expected + 1, write_seq - capacity + 1)


# -- frame formats (the label's format word) ------------------------------------------------------
ENCODINGS: Final = {"s16le": 1, "f32le": 2, "opus": 3}
ENCODING_NAMES: Final = {v: k for k, v in ENCODINGS.items()}
MAX_RATE: Final = (1 << 24) - 1


class FrameFormat(NamedTuple):
    """What a frame's samples are: rate (Hz), duration (µs) and encoding. Format word 0 means "the
    stream's own format" (a writer that does not label its frames)."""

    sample_rate: int
    frame_us: int
    encoding: str


def encode_format(sample_rate: int, frame_us: int, encoding: str = "s16le") -> int:
    """The format word: rate in bits 0-23, encoding in 24-31, frame duration (µs) in 32-63."""
    code = ENCODINGS.get(encoding)
    if code is None:
        raise ConfigError(f"encoding must be one of {sorted(ENCODINGS)}, got {encoding!r}")
    if not 0 < sample_rate <= MAX_RATE or not 0 < frame_us < 1 << 31:
        raise ConfigError(f"no frame format of {sample_rate} Hz and {frame_us} µs")
    return sample_rate | code << 24 | frame_us << 32


def decode_format(word: int) -> FrameFormat | None:
    """The format a word names (None for 0 or a word no writer of this layout produces)."""
    encoding = ENCODING_NAMES.get((word >> 24) & 0xFF)
    rate, frame_us = word & MAX_RATE, word >> 32
    if encoding is None or not rate or not frame_us:
        return None
    return FrameFormat(rate, frame_us, encoding)


def watermark_frames(capacity: int, high: float, low: float) -> tuple[int, int]:
    """Watermarks in frames: the writer pauses at ``fill >= high`` and resumes at ``fill <= low``."""
    if not (0.0 <= low < high <= 1.0):
        raise WatermarkError(high, low)
    hi = max(1, int(high * capacity))
    lo = min(int(low * capacity), hi - 1)
    return hi, lo


def must_pause(fill: int, paused: bool, high: int, low: int) -> bool:
    """Block-policy hysteresis: is the writer paused after seeing ``fill``?"""
    return fill > low if paused else fill >= high


@dataclass(frozen=True, slots=True)
class RingFormat:
    """The shape of a segment: how many rings, how many slots, what a frame is."""

    capacity: int
    frame_samples: int
    channels: int
    dtype: str
    n_rings: int = 1

    def __post_init__(self) -> None:
        if not isinstance(self.capacity, int) or not 2 <= self.capacity <= MAX_CAPACITY:
            raise ConfigError(f"capacity must be an int in 2..{MAX_CAPACITY}, got {self.capacity!r}")
        if not isinstance(self.frame_samples, int) or self.frame_samples < 1:
            raise ConfigError(f"frame_samples must be a positive int, got {self.frame_samples!r}")
        if not isinstance(self.channels, int) or not 1 <= self.channels <= MAX_CHANNELS:
            raise ConfigError(f"channels must be an int in 1..{MAX_CHANNELS}, got {self.channels!r}")
        if self.dtype not in DTYPES:
            raise ConfigError(f"dtype must be one of {sorted(DTYPES)}, got {self.dtype!r}")
        if not isinstance(self.n_rings, int) or self.n_rings < 1:
            raise ConfigError(f"n_rings must be a positive int, got {self.n_rings!r}")
        if self.frame_bytes > MAX_FRAME_BYTES:
            raise ConfigError(f"a frame of {self.frame_bytes} bytes exceeds {MAX_FRAME_BYTES}")

    @property
    def np_dtype(self) -> np.dtype:
        return np.dtype(self.dtype)  # native order, which is little-endian (checked at import)

    @property
    def frame_shape(self) -> tuple[int, ...]:
        """Shape of one frame: ``(samples,)`` for mono, ``(samples, channels)`` otherwise."""
        if self.channels == 1:
            return (self.frame_samples,)
        return (self.frame_samples, self.channels)

    @property
    def frame_bytes(self) -> int:
        return self.frame_samples * self.channels * self.np_dtype.itemsize

    @property
    def ctrl_words(self) -> int:
        """Control lines, reader lines and stamps, padded to a cache line."""
        return STAMP0 + self.capacity * STAMP_STRIDE

    @property
    def data_offset(self) -> int:
        """Byte offset of slot 0 from the ring's start (64-byte aligned)."""
        return self.ctrl_words * 8

    @property
    def ring_bytes(self) -> int:
        return round_up(self.data_offset + self.capacity * self.frame_bytes, 64)

    @property
    def segment_bytes(self) -> int:
        return HEADER_BYTES + self.n_rings * self.ring_bytes

    def ring_offset(self, index: int) -> int:
        if not 0 <= index < self.n_rings:
            raise ConfigError(f"ring index {index} out of range 0..{self.n_rings - 1}")
        return HEADER_BYTES + index * self.ring_bytes


def encode_header(
    fmt: RingFormat, *, owner_pid: int, owner_start_ms: int, policy: int, high: int, low: int
) -> np.ndarray:
    """The header words for a new segment (``H_READY`` left 0: the creator sets it last)."""
    h = np.zeros(HEADER_BYTES // 8, dtype=np.uint64)
    h[H_MAGIC] = MAGIC
    h[H_VERSION] = LAYOUT_VERSION
    h[H_HEADER_BYTES] = HEADER_BYTES
    h[H_N_RINGS] = fmt.n_rings
    h[H_RING_BYTES] = fmt.ring_bytes
    h[H_CAPACITY] = fmt.capacity
    h[H_FRAME_SAMPLES] = fmt.frame_samples
    h[H_CHANNELS] = fmt.channels
    h[H_DTYPE] = DTYPES[fmt.dtype]
    h[H_FRAME_BYTES] = fmt.frame_bytes
    h[H_CTRL_WORDS] = fmt.ctrl_words
    h[H_SEGMENT_BYTES] = fmt.segment_bytes
    h[H_OWNER_PID] = owner_pid
    h[H_OWNER_START] = owner_start_ms
    h[H_POLICY] = policy
    h[H_HIGH] = high
    h[H_LOW] = low
    return h


def decode_header(words: np.ndarray, size: int) -> RingFormat:
    """Check a header against the segment's size and return its format.

    Raises :class:`HeaderProblem` (``foreign=True`` when the segment is not one
    of ours at all, ``False`` when it is ours but of another layout or corrupt).
    """
    if size < HEADER_BYTES or len(words) < HEADER_BYTES // 8:
        raise HeaderProblem(f"{size} bytes is smaller than a ringaudio header", foreign=True)
    if int(words[H_MAGIC]) != MAGIC:
        raise HeaderProblem("bad magic: not a ringaudio segment", foreign=True)
    if int(words[H_VERSION]) != LAYOUT_VERSION:
        raise HeaderProblem(f"layout version {int(words[H_VERSION])}, this build reads {LAYOUT_VERSION}", foreign=False)
    if int(words[H_READY]) != 1:
        raise HeaderProblem("header is not initialised (creator died or is still starting)", foreign=False)
    dtype = DTYPE_NAMES.get(int(words[H_DTYPE]))
    if dtype is None:
        raise HeaderProblem(f"unknown dtype code {int(words[H_DTYPE])}", foreign=False)
    try:
        fmt = RingFormat(
            capacity=int(words[H_CAPACITY]),
            frame_samples=int(words[H_FRAME_SAMPLES]),
            channels=int(words[H_CHANNELS]),
            dtype=dtype,
            n_rings=int(words[H_N_RINGS]),
        )
    except ConfigError as exc:
        raise HeaderProblem(f"corrupt header: {exc}", foreign=False) from exc
    expect = {
        H_HEADER_BYTES: HEADER_BYTES,
        H_RING_BYTES: fmt.ring_bytes,
        H_FRAME_BYTES: fmt.frame_bytes,
        H_CTRL_WORDS: fmt.ctrl_words,
        H_SEGMENT_BYTES: fmt.segment_bytes,
    }
    for word, value in expect.items():
        if int(words[word]) != value:
            raise HeaderProblem(f"header word {word} is {int(words[word])}, layout says {value}", foreign=False)
    if size < fmt.segment_bytes:
        raise HeaderProblem(f"segment is {size} bytes, its header needs {fmt.segment_bytes}", foreign=False)
    return fmt
