"""TTS workers: backends, text splitting, framing, the worker process and its pool."""

from .backends import Backend, BackendError, BackendUnavailable, EspeakBackend, SyntheticBackend
from .framer import Framer
from .pool import PoolError, WorkerPool
from .text import split_text
from .worker import Job, WorkerSpec

__all__ = [
    "Backend",
    "BackendError",
    "BackendUnavailable",
    "EspeakBackend",
    "Framer",
    "Job",
    "PoolError",
    "SyntheticBackend",
    "WorkerPool",
    "WorkerSpec",
    "split_text",
]
