"""ringaudio: stream synthesized speech to listeners without losing or mangling a frame."""

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

__version__ = "0.1.0"

__all__ = [
    "ArenaFull",
    "ConfigError",
    "FrameFormatError",
    "FrameNotReady",
    "FrameOverrun",
    "FrameRing",
    "InvalidSequence",
    "ReaderSlotsFull",
    "RingArena",
    "RingAudioError",
    "RingClosed",
    "RingHandle",
    "RingReader",
    "RingTimeout",
    "SegmentError",
    "WatermarkError",
    "__version__",
]
