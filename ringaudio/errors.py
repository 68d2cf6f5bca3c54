"""The exceptions ringaudio raises.

Every error is a :class:`RingAudioError`; where a builtin fits, the subclass
inherits it too, so ``except ValueError`` keeps working for callers who do not
know ringaudio::

    RingAudioError
     ├── ConfigError (ValueError)            bad ring/arena/resampler parameters
     │    ├── WatermarkError                 watermarks out of order or range
     │    └── UnsupportedRate                a sample rate or quality preset we do not design for
     ├── FrameFormatError (ValueError)       frame of the wrong shape, dtype or size
     ├── InvalidSequence (ValueError)        a sequence number that cannot exist
     ├── SampleFormatError (ValueError)      audio of the wrong dtype or shape for the resampler
     │    └── NonFiniteSamples               NaN or infinity in the audio
     ├── StreamFinished                      a resampler was fed after flush()
     ├── TextError (ValueError)              text a worker cannot speak (empty, too long, control characters)
     ├── ProtocolError                       a client message (or a received frame) outside the wire contract
     ├── SegmentError                        shared-memory segment problems
     │    ├── SegmentNotFound (FileNotFoundError)
     │    ├── SegmentExists (FileExistsError)
     │    ├── ForeignSegment                 not a ringaudio segment (bad magic, too small)
     │    └── LayoutMismatch                 ringaudio segment of another layout version
 ├── HeaderProblem                       why a header is unusable (internal: becomes a SegmentError)
     ├── FrameNotReady (LookupError)         sequence not written yet
     ├── FrameOverrun (LookupError)          sequence overwritten before it was read
     ├── RingClosed                          ring released, closed, or its lease moved on
     ├── RingTimeout (TimeoutError)          a bounded wait ran out
     ├── CodecError                          libopus missing, or a frame or packet it refused
     ├── FramingError                        a Wyoming message outside the framing
     ├── ArenaFull                           no free ring to lease
     └── ReaderSlotsFull                     no free gating-reader slot

An error the wire has an error code for carries it as ``code`` (a class attribute, or one per
instance where a class has several: ``TextError``, ``ProtocolError``, ``StreamError``), so the server
picks the ``error`` event's code from the exception in one place
(:func:`ringaudio.wire.error_code`) instead of at every ``except``. The codes are
plain strings here: this module imports nothing, and the wire's ``ErrorCode``
enum is built on it, not the other way round.

Each process role translates these once, at its edge (an error event, a close
code, an exit status); the core only raises.
"""

from __future__ import annotations


class RingAudioError(Exception):
    """Root of every error raised by ringaudio."""


class ConfigError(RingAudioError, ValueError):
    """A ring or arena parameter is out of range."""


class WatermarkError(ConfigError):
    """Watermarks must satisfy ``0 <= low < high <= 1``."""

    def __init__(self, high: float, low: float) -> None:
        self.high = high
        self.low = low
        super().__init__(f"watermarks must satisfy 0 <= low < high <= 1, got high={high!r} low={low!r}")


class UnsupportedRate(ConfigError):
    """A sample rate (or quality preset) the resampler does not design filters for."""


class FrameFormatError(RingAudioError, ValueError):
    """A frame (or block of frames) does not match the ring's format."""


class InvalidSequence(RingAudioError, ValueError):
    """Sequence numbers are integers in ``0 .. 2**39 - 1``."""

    def __init__(self, seq: object) -> None:
        self.seq = seq
        super().__init__(f"sequence numbers are integers from 0 to 2**39 - 1, got {seq!r}")


class SampleFormatError(RingAudioError, ValueError):
    """Audio handed to the resampler has the wrong dtype, dimensions or channel count."""


class NonFiniteSamples(SampleFormatError):
    """NaN or infinity in the audio: refused rather than spread through the filter."""

    def __init__(self, index: int) -> None:
        self.index = index
        super().__init__(f"sample {index} of the chunk is NaN or infinite")


class StreamFinished(RingAudioError):
    """The resampler was flushed; a new stream needs a new (or reset) resampler."""


class TextError(RingAudioError, ValueError):
    """Text refused before synthesis: empty, over the configured length, with control characters or
    lone surrogates. ``code`` is the wire's error code (``invalid_text`` or ``text_too_long``)."""

    code = "invalid_text"

    def __init__(self, message: str, code: str = "invalid_text") -> None:
        self.code = code
        super().__init__(message)


class ProtocolError(RingAudioError):
    """A client message the server answers with an ``error`` event (``code`` is stable), or a
    binary message a client received that is not a ringaudio frame."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        self.message = message
        super().__init__(f"{code}: {message}")


class SegmentError(RingAudioError):
    """A shared-memory segment cannot be used. On the wire an utterance fails with ``ring_unavailable``:
    its worker could not attach the session's ring (e.g. the segment was removed by hand)."""

    code = "ring_unavailable"

    def __init__(self, name: str, reason: str) -> None:
        self.name = name
        self.reason = reason
        super().__init__(f"shared-memory segment {name!r}: {reason}")


class SegmentNotFound(SegmentError, FileNotFoundError):
    """No segment of that name exists."""

    def __init__(self, name: str) -> None:
        super().__init__(name, "does not exist")


class SegmentExists(SegmentError, FileExistsError):
    """A live segment of that name already exists."""

    def __init__(self, name: str, reason: str = "already exists and its owner is alive") -> None:
        super().__init__(name, reason)


class ForeignSegment(SegmentError):
    """The segment is not a ringaudio ring (wrong magic, or too small)."""


class LayoutMismatch(SegmentError):
    """The segment is a ringaudio ring written by another layout version."""


class HeaderProblem(RingAudioError):
    """Why a segment's header cannot be used (``foreign``: not one of ours at all); the segment
    layer turns it into :class:`ForeignSegment`, :class:`LayoutMismatch` or :class:`SegmentError`."""

    def __init__(self, reason: str, *, foreign: bool) -> None:
        self.reason = reason
        self.foreign = foreign
        super().__init__(reason)


class FrameNotReady(RingAudioError, LookupError):
    """The requested sequence number has not been written yet."""

    def __init__(self, seq: int) -> None:
        self.seq = seq
        super().__init__(f"frame {seq} is not written yet")


class FrameOverrun(RingAudioError, LookupError):
    """The requested frame was overwritten before it could be read.

    ``expected`` is the sequence that was asked for, ``oldest`` the oldest
    sequence still readable when the overrun was seen, and ``lost`` the number of
    frames skipped (``oldest - expected``): a reader that resumes at ``oldest``
    has lost exactly ``lost`` frames.
    """

    def __init__(self, expected: int, oldest: int) -> None:
        self.expected = expected
        self.oldest = oldest
        self.lost = oldest - expected
        super().__init__(f"frame {expected} was overwritten; oldest readable is {oldest} ({self.lost} lost)")


class RingClosed(RingAudioError):
    """The ring was closed or released, or the lease this handle refers to has ended."""

    code = "ring_closed"


class RingTimeout(RingAudioError, TimeoutError):
    """A bounded wait on the ring ran out."""


class ArenaFull(RingAudioError):
    """Every ring of the arena is leased. A ring is a session, so the client is told
    ``too_many_sessions``, as it is when the server is at ``server.max_sessions``."""

    code = "too_many_sessions"


class ReaderSlotsFull(RingAudioError):
    """Every gating-reader slot of the ring is taken."""


class PoolError(RingAudioError):
    """The worker pool could not start, is not running, or gave up (its workers died again and again)."""

    code = "unavailable"


class BackendError(RingAudioError):
    """The engine could not speak this text (the job fails; the worker goes on)."""

    code = "backend_error"


class BackendUnavailable(BackendError):
    """The engine is not installed or cannot start on this machine."""


class CodecError(RingAudioError):
    """An audio codec (Opus) is missing, or refused a frame or a packet."""

    code = "format_unavailable"


class FramingError(RingAudioError):
    """A Wyoming message outside the framing (a bad header, a length over the limit, a body that
    never comes); ``code`` is the ``error`` event's."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        super().__init__(message)


class NoAudioDevice(RingAudioError):
    """There is no usable sound output (no PortAudio library, no device, or a bad device index)."""


class StreamError(RingAudioError):
    """A stream operation that does not fit the stream's state (``code`` is the wire's error code)."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        self.message = message
        super().__init__(message)


class EngineError(RingAudioError):
    """The engine is not started, or is closed."""

    code = "unavailable"
