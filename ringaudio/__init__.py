"""ringaudio: stream synthesized speech to listeners without losing or mangling a frame."""

from typing import TYPE_CHECKING

from .errors import (
    ArenaFull,
    ConfigError,
    FrameFormatError,
    FrameNotReady,
    FrameOverrun,
    InvalidSequence,
    ReaderSlotsFull,
    RingAudioError,
    RingClosed,
    RingTimeout,
    SegmentError,
    WatermarkError,
)

if TYPE_CHECKING:
    from .engine import Engine, Event, Frame, Listener, Stream
    from .ring import FrameRing, RingArena, RingHandle, RingReader

__version__ = "0.1.0"

_ENGINE_NAMES = ("Engine", "Event", "Frame", "Listener", "Stream")
_RING_NAMES = ("FrameRing", "RingArena", "RingHandle", "RingReader")


def __getattr__(name: str) -> object:
    """``ringaudio.Engine``, ``ringaudio.FrameRing`` and their types, imported on first use: a worker
    process never needs the engine, and a client that only decodes frames (``ringaudio.client``,
    ``ringaudio.wire``) needs neither, nor the numba the ring's kernels load."""
    if name in _ENGINE_NAMES:
        from . import engine

        return getattr(engine, name)
    if name in _RING_NAMES:
        from . import ring

        return getattr(ring, name)
    raise AttributeError(f"module 'ringaudio' has no attribute {name!r}")


__all__ = [
    "ArenaFull",
    "ConfigError",
    "Engine",
    "Event",
    "Frame",
    "FrameFormatError",
    "FrameNotReady",
    "FrameOverrun",
    "FrameRing",
    "InvalidSequence",
    "Listener",
    "ReaderSlotsFull",
    "RingArena",
    "RingAudioError",
    "RingClosed",
    "RingHandle",
    "RingReader",
    "RingTimeout",
    "SegmentError",
    "Stream",
    "WatermarkError",
    "__version__",
]
