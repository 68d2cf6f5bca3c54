"""The lock-free shared-memory frame ring (segments and leases in :mod:`ringaudio.ring.arena`)."""

from .arena import FrameRing, RingArena
from .reader import RingReader
from .segment import reclaim_stale
from .view import RingHandle

__all__ = ["FrameRing", "RingArena", "RingHandle", "RingReader", "reclaim_stale"]
