"""The lock-free shared-memory frame ring (see :mod:`ringaudio.ring.core`)."""

from .core import FrameRing, RingArena, RingHandle, RingReader
from .segment import reclaim_stale

__all__ = ["FrameRing", "RingArena", "RingHandle", "RingReader", "reclaim_stale"]
