"""The exceptions ringaudio raises.

Every error is a :class:`RingAudioError`; where a builtin fits, the subclass
inherits it too, so ``except ValueError`` keeps working for callers who do not
know ringaudio::

    RingAudioError
     ├── ConfigError (ValueError)            a bad configuration value or constructor parameter (ring,
     │    │                                  arena, resampler, framer, synthetic voice, jitter buffer)
     │    ├── WatermarkError                 watermarks out of order or range
     │    └── UnsupportedRate                a sample rate or quality preset we do not design for
     ├── FrameFormatError (ValueError)       frame of the wrong shape, dtype or size
     ├── InvalidSequence (ValueError)        a sequence number that cannot exist
     ├── SampleFormatError (ValueError)      audio of the wrong dtype or shape for the resampler
     │    └── NonFiniteSamples               NaN or infinity in the audio
     ├── StreamFinished                      a resampler was fed after flush()
     ├── TextError (ValueError)              text a worker cannot speak (empty, too long, control characters)
     ├── SegmentError                        shared-memory segment problems
     │    ├── SegmentNotFound (FileNotFoundError)
     │    ├── SegmentExists (FileExistsError)
     │    ├── ForeignSegment                 not a ringaudio segment (bad magic, too small)
     │    └── LayoutMismatch                 ringaudio segment of another layout version
     ├── FrameNotReady (LookupError)         sequence not written yet
     ├── FrameOverrun (LookupError)          sequence overwritten before it was read
     ├── RingClosed                          ring released, closed, or its lease moved on
     ├── RingTimeout (TimeoutError)          a bounded wait ran out
     ├── ArenaFull                           no free ring to lease
     ├── ReaderSlotsFull                     no free gating-reader slot
     ├── PoolError                           the worker pool could not start, is stopped, or gave up
     ├── BackendError                        a speech engine could not speak a text (that job fails)
     │    └── BackendUnavailable             the engine is not installed or cannot start here
     └── NoAudioDevice                       no usable sound output for local playback

Three more RingAudioErrors are still defined in their own modules: ``StreamError``
(:mod:`ringaudio.stream`), ``EngineError`` (:mod:`ringaudio.engine`) and ``ProtocolError``
(:mod:`ringaudio.server.protocol`).

An error the wire protocol reports carries its code (``docs/protocol.md``, "Errors") as ``code``: a
class attribute, or one per instance where a class has several (``TextError``). Whoever reports an
error can then name it from the exception, not from the ``except`` clause that happened to catch
it. Errors no client ever sees have none.

Each process role translates these once, at its edge (an error event, a close
code, an exit status); the core only raises.
"""

from __future__ import annotations


class RingAudioError(Exception):
    """Root of every error raised by ringaudio."""


class ConfigError(RingAudioError, ValueError):
    """A configuration value or a constructor parameter is out of range."""


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


class SegmentError(RingAudioError):
    """A shared-memory segment cannot be used."""

    code = "ring_unavailable"  # what a worker reports when it cannot attach a session's ring

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
    """Every ring of the arena is leased."""

    code = "too_many_sessions"  # the arena has one ring per session: server.max_sessions


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


class NoAudioDevice(RingAudioError):
    """There is no usable sound output (no PortAudio library, no device, or a bad device index)."""
