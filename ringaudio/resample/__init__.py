"""Our own polyphase resampler: numba kernels, filters designed per rate pair (see design.py).

The filter design (numpy only) loads with the package; the kernels (numba) on first use of a
name from :mod:`.core`, so a process that only checks configuration never loads numba.
"""

from typing import Any

from .design import QUALITIES, RATES, Design, design

_CORE = ("Resampler", "float32_to_int16", "int16_to_float32", "resample", "warm")

__all__ = ["QUALITIES", "RATES", "Design", "design", *_CORE]


def __getattr__(name: str) -> Any:
    if name in _CORE:
        from . import core

        return getattr(core, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
