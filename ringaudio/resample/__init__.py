"""Our own polyphase resampler: filters designed per rate pair (see design.py), numba kernels for one
stage and a C kernel for the two-stage form of up-conversion by 2× or more.

The filter design (numpy only) loads with the package; the kernels (numba) on first use of a
name from :mod:`.core`, so a process that only checks configuration never loads numba.
"""

from typing import Any

from .design import QUALITIES, RATES, Design, design, two_stage_available

_CORE = ("Resampler", "float32_to_int16", "int16_to_float32", "resample", "warm")

__all__ = ["QUALITIES", "RATES", "Design", "design", "two_stage_available", *_CORE]


def __getattr__(name: str) -> Any:
    if name in _CORE:
        from . import core

        return getattr(core, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
