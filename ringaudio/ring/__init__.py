"""The lock-free shared-memory frame ring (segments and leases in :mod:`ringaudio.ring.arena`).

The names below are imported on first use, so the kernels can import :mod:`ringaudio.ring.layout`
(pure) without loading the ring classes built on those kernels.
"""

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .arena import FrameRing, RingArena
    from .reader import RingReader
    from .segment import reclaim_stale
    from .view import RingHandle

_WHERE = {
    "FrameRing": "arena",
    "RingArena": "arena",
    "RingReader": "reader",
    "reclaim_stale": "segment",
    "RingHandle": "view",
}


def __getattr__(name: str) -> object:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'ringaudio.ring' has no attribute {name!r}")
    from importlib import import_module

    return getattr(import_module(f"{__name__}.{module}"), name)


__all__ = ["FrameRing", "RingArena", "RingHandle", "RingReader", "reclaim_stale"]
