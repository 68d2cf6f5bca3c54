"""Which kernels the ring runs on: the C ones (``_ring``, built at install) or the numba ones.

Both sets have the same functions, arguments, results and memory ordering (tests drive them
side by side on twin rings and across processes). The C set is preferred: a process that only
reads and writes rings (the server) then never loads numba and LLVM, about 120 MB of memory,
and each call costs less. Without a C compiler at install time the numba set is used.
``RINGAUDIO_RING_KERNELS=numba`` (or ``c``) picks one explicitly.
"""

from __future__ import annotations

import os
from types import ModuleType

from ..errors import ConfigError

ENV = "RINGAUDIO_RING_KERNELS"


def _choose(wanted: str) -> tuple[str, ModuleType, ModuleType]:
    if wanted not in ("", "c", "numba"):
        raise ConfigError(f"{ENV} must be 'c' or 'numba', got {wanted!r}")
    if wanted != "numba":
        try:
            from . import _ring  # type: ignore[attr-defined]
        except ImportError:
            if wanted == "c":
                raise ConfigError(f"{ENV}=c, but the C kernels were not built (no C compiler at install?)") from None
        else:
            return "c", _ring, _ring
    from . import ring, ring_slow

    return "numba", ring, ring_slow


NAME, hot, slow = _choose(os.environ.get(ENV, "").strip().lower())
