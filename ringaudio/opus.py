"""Opus through libopus itself (``libopus.so.0``: Debian's ``libopus0``, on every Raspberry Pi OS),
by ctypes: one packet per frame, in the calling thread, nothing between us and the codec.

Why not PyAV (FFmpeg): 104 MB installed, a cold import of about a second, and ~40 % more time per
frame (a frame object and its timestamps per call), for four C calls; the worker needs only "this
frame in, this packet out", so that each ring slot holds the packet of exactly one labelled frame.
The tests decode with PyAV: FFmpeg's own Opus decoder, an implementation independent of libopus.

:class:`Encoder` is a worker's; :class:`Decoder` is for clients (``ringaudio.client``) and tests.
Both raise :class:`~ringaudio.errors.CodecError`; :func:`available` says whether libopus loads.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

import numpy as np

from .errors import CodecError

RATES = (8_000, 12_000, 16_000, 24_000, 48_000)
FRAME_MS = (10, 20, 40, 60)  # the durations a ringaudio frame may have that Opus codes in one packet
MAX_PACKET = 1275  # bytes: the largest Opus packet of one frame
_APPLICATION_AUDIO = 2049  # CELT/hybrid: closer to the waveform than VOIP (SILK) at 32 kbit/s, and faster here
_SET_BITRATE = 4002
_SET_COMPLEXITY = 4010
_GET_LOOKAHEAD = 4027


@functools.cache
def _lib() -> ctypes.CDLL:
    name = ctypes.util.find_library("opus") or "libopus.so.0"
    try:
        lib = ctypes.CDLL(name)
    except OSError as exc:
        raise CodecError(f"libopus is not installed ({exc}): apt-get install libopus0") from exc
    lib.opus_encoder_create.restype = ctypes.c_void_p
    lib.opus_encoder_create.argtypes = [ctypes.c_int32, ctypes.c_int, ctypes.c_int, ctypes.POINTER(ctypes.c_int)]
    lib.opus_encode.restype = ctypes.c_int32
    lib.opus_encode.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p, ctypes.c_int32]
    lib.opus_encoder_destroy.argtypes = [ctypes.c_void_p]
    lib.opus_decoder_create.restype = ctypes.c_void_p
    lib.opus_decoder_create.argtypes = [ctypes.c_int32, ctypes.c_int, ctypes.POINTER(ctypes.c_int)]
    lib.opus_decode.restype = ctypes.c_int
    lib.opus_decode.argtypes = [
        ctypes.c_void_p,
        ctypes.c_char_p,
        ctypes.c_int32,
        ctypes.c_void_p,
        ctypes.c_int,
        ctypes.c_int,
    ]
    lib.opus_decoder_destroy.argtypes = [ctypes.c_void_p]
    lib.opus_strerror.restype = ctypes.c_char_p
    lib.opus_strerror.argtypes = [ctypes.c_int]
    return lib


def available() -> str | None:
    """None if libopus loads here, else why not."""
    try:
        _lib()
    except CodecError as exc:
        return str(exc)
    return None


def _check(code: int, what: str) -> int:
    if code < 0:
        raise CodecError(f"{what}: {_lib().opus_strerror(code).decode()}")
    return code


def _frame_samples(rate: int, frame_ms: int) -> int:
    if rate not in RATES:
        raise CodecError(f"Opus codes {', '.join(map(str, RATES))} Hz, not {rate}")
    if frame_ms not in FRAME_MS:
        raise CodecError(f"Opus packets last {', '.join(map(str, FRAME_MS))} ms, not {frame_ms}")
    return rate * frame_ms // 1000


class _Handle:
    """A libopus object: destroyed by ``close`` (twice is harmless) or when collected."""

    _destroy = ""  # the libopus function that frees it
    _handle: int | None = None

    def close(self) -> None:
        if self._handle is not None:
            getattr(_lib(), self._destroy)(self._handle)
            self._handle = None

    def __del__(self) -> None:
        self.close()


class Encoder(_Handle):
    """Mono int16 frames of ``frame_ms`` at ``rate`` in, one Opus packet each out."""

    _destroy = "opus_encoder_destroy"

    def __init__(self, rate: int, frame_ms: int, bitrate: int = 32_000, complexity: int = 5) -> None:
        self._handle = None
        self.frame_samples = _frame_samples(rate, frame_ms)
        lib = _lib()
        error = ctypes.c_int(0)
        handle = lib.opus_encoder_create(rate, 1, _APPLICATION_AUDIO, ctypes.byref(error))
        _check(error.value, "opus_encoder_create")
        if not handle:
            raise CodecError("opus_encoder_create returned nothing")
        self._handle = handle
        _check(lib.opus_encoder_ctl(ctypes.c_void_p(handle), _SET_BITRATE, ctypes.c_int32(bitrate)), "bitrate")
        _check(lib.opus_encoder_ctl(ctypes.c_void_p(handle), _SET_COMPLEXITY, ctypes.c_int32(complexity)), "complexity")
        lookahead = ctypes.c_int32(0)
        _check(lib.opus_encoder_ctl(ctypes.c_void_p(handle), _GET_LOOKAHEAD, ctypes.byref(lookahead)), "lookahead")
        self.lookahead = lookahead.value  # samples the decoded audio lags the input by

    def encode_into(self, pcm: np.ndarray, out: np.ndarray) -> int:
        """Encode one frame into the bytes of ``out`` (any C-contiguous array; a packet never
        exceeds its size, nor MAX_PACKET); the packet's length."""
        if self._handle is None:
            raise CodecError("the encoder is closed")
        if pcm.dtype != np.int16 or pcm.shape != (self.frame_samples,) or not pcm.flags.c_contiguous:
            raise CodecError(f"need {self.frame_samples} contiguous int16 samples, got {pcm.dtype} {pcm.shape}")
        if not out.flags.c_contiguous or not out.flags.writeable or out.nbytes < 8:
            raise CodecError("the packet buffer must be writable, contiguous and at least 8 bytes")
        room = min(MAX_PACKET, out.nbytes)
        n = _lib().opus_encode(self._handle, pcm.ctypes.data, self.frame_samples, out.ctypes.data, room)
        return _check(n, "opus_encode")

    def encode(self, pcm: np.ndarray) -> bytes:
        out = np.empty(MAX_PACKET, np.uint8)
        return out[: self.encode_into(pcm, out)].tobytes()


class Decoder(_Handle):
    """Opus packets in, mono int16 frames out (at ``rate``, up to 120 ms each)."""

    _destroy = "opus_decoder_destroy"

    def __init__(self, rate: int) -> None:
        self._handle = None
        if rate not in RATES:
            raise CodecError(f"Opus decodes to {', '.join(map(str, RATES))} Hz, not {rate}")
        lib = _lib()
        error = ctypes.c_int(0)
        handle = lib.opus_decoder_create(rate, 1, ctypes.byref(error))
        _check(error.value, "opus_decoder_create")
        self._handle = handle
        self._pcm = np.empty(rate * 120 // 1000, np.int16)

    def decode(self, packet: bytes) -> np.ndarray:
        if self._handle is None:
            raise CodecError("the decoder is closed")
        n = _lib().opus_decode(self._handle, packet, len(packet), self._pcm.ctypes.data, len(self._pcm), 0)
        return self._pcm[: _check(n, "opus_decode")].copy()
