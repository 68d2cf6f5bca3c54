"""Our own polyphase resampler: numba kernels, filters designed per rate pair (see design.py)."""

from .core import RATES, Resampler, float32_to_int16, int16_to_float32, resample, warm
from .design import QUALITIES, Design, design

__all__ = [
    "QUALITIES",
    "RATES",
    "Design",
    "Resampler",
    "design",
    "float32_to_int16",
    "int16_to_float32",
    "resample",
    "warm",
]
