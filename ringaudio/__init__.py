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
from .ring import FrameRing, RingArena, RingHandle, RingReader

if TYPE_CHECKING:
    from .engine import Engine, Event, Frame, Listener, Stream

__version__ = "0.1.0"

_ENGINE_NAMES = ("Engine", "Event", "Frame", "Listener", "Stream")


def __getattr__(name: str) -> object:
    """``ringaudio.Engine`` and its types, imported on first use (a worker process never needs them)."""
    if name in _ENGINE_NAMES:
        from . import engine

        return getattr(engine, name)
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
