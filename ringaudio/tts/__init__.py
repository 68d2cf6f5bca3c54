"""TTS workers: backends, text splitting, framing, the worker process and its pool.

Names load from their modules on first use, so the server (which needs the pool, not the DSP)
never loads numba through this package.
"""

from importlib import import_module
from typing import Any

_WHERE = {
    "Backend": "backends",
    "BackendError": "backends",
    "BackendUnavailable": "backends",
    "EspeakBackend": "backends",
    "SyntheticBackend": "backends",
    "Framer": "framer",
    "PoolError": "pool",
    "WorkerPool": "pool",
    "split_text": "text",
    "Job": "spec",
    "WorkerSpec": "spec",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f".{module}", __name__), name)
