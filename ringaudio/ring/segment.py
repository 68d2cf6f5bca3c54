"""Shared-memory segments: create (owner), attach (anyone), close, unlink, reclaim.

The owner's segment is registered with multiprocessing's resource tracker, so
if the owner dies without unlinking, the tracker removes it. Attaching never
registers (on Python < 3.13 ``SharedMemory`` always did, and the tracker of a
separately started process would then unlink a segment it does not own), and a
segment whose recorded owner is dead can be reclaimed by the next creator.
"""

from __future__ import annotations

import contextlib
import gc
import mmap
import os
import secrets
import sys
import warnings
from multiprocessing import shared_memory
from pathlib import Path

import numpy as np
import psutil

from ..errors import ForeignSegment, LayoutMismatch, SegmentError, SegmentExists, SegmentNotFound
from . import layout

PREFIX = "ringaudio"
_SHM_DIR = Path("/dev/shm")


def new_name() -> str:
    return f"{PREFIX}-{os.getpid()}-{secrets.token_hex(4)}"


def process_start_ms(pid: int) -> int:
    try:
        return int(psutil.Process(pid).create_time() * 1000)
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return 0


def owner_alive(pid: int, start_ms: int) -> bool:
    """Is the process that created a segment still running (same pid *and* start time)?"""
    if pid <= 0:
        return False
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        return abs(int(proc.create_time() * 1000) - start_ms) <= 10
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return False
    except psutil.AccessDenied:
        return True


class Segment:
    """One mapped segment. ``words`` is a ``uint64`` view of the whole of it."""

    # class-level defaults keep a half-built object safe to close
    _shm: shared_memory.SharedMemory | None = None
    _mmap: mmap.mmap | None = None
    words: np.ndarray | None = None
    mem: np.ndarray | None = None

    def __init__(self, name: str, *, owner: bool) -> None:
        self.name = name
        self.owner = owner
        self.size = 0

    @classmethod
    def create(cls, name: str | None, size: int) -> Segment:
        explicit = name is not None
        name = name or new_name()
        _check_name(name)
        seg = cls(name, owner=True)
        try:
            seg._shm = shared_memory.SharedMemory(name=name, create=True, size=size)
        except FileExistsError:
            if not explicit or not reclaim(name):
                raise SegmentExists(name) from None
            seg._shm = shared_memory.SharedMemory(name=name, create=True, size=size)
        with contextlib.suppress(AttributeError, OSError):  # non-POSIX
            os.fchmod(seg._shm._fd, 0o600)  # type: ignore[attr-defined]
        seg._map(seg._shm.buf, size)
        return seg

    @classmethod
    def attach(cls, name: str) -> Segment:
        _check_name(name)
        seg = cls(name, owner=False)
        try:
            if sys.version_info >= (3, 13):
                seg._shm = shared_memory.SharedMemory(name=name, track=False)  # type: ignore[call-arg]
                size = seg._shm.size
            else:
                size = seg._open_untracked(name)
        except FileNotFoundError:
            raise SegmentNotFound(name) from None
        except PermissionError as exc:
            raise SegmentError(name, f"permission denied ({exc.strerror})") from None
        if size < layout.HEADER_BYTES:
            seg.close()
            raise ForeignSegment(name, f"{size} bytes is smaller than a ringaudio header")
        seg._map(seg._shm.buf if seg._shm is not None else seg._mmap, size)
        return seg

    def _open_untracked(self, name: str) -> int:
        import _posixshmem  # the module SharedMemory itself uses

        fd = _posixshmem.shm_open("/" + name, os.O_RDWR, mode=0o600)
        try:
            size = os.fstat(fd).st_size
            if size >= layout.HEADER_BYTES:
                self._mmap = mmap.mmap(fd, size)
        finally:
            os.close(fd)
        return int(size)

    def _map(self, buf: memoryview | mmap.mmap | None, size: int) -> None:
        assert buf is not None
        self.size = size
        self.mem = np.frombuffer(buf, dtype=np.uint8, count=size)
        self.words = self.mem[: size - size % 8].view(np.uint64)

    def header_format(self) -> layout.RingFormat:
        assert self.words is not None
        header = self.words[: layout.HEADER_BYTES // 8].copy()  # no view of the segment in a traceback
        try:
            return layout.decode_header(header, self.size)
        except layout.HeaderProblem as exc:
            error = ForeignSegment if exc.foreign else LayoutMismatch
            raise error(self.name, exc.reason) from None

    def close(self) -> None:
        """Unmap. Idempotent. Every numpy view of the segment must be gone first."""
        self.words = None
        self.mem = None
        if self._shm is not None:
            _close_mapping(self._shm)  # the object stays: the owner may still unlink through it
        if self._mmap is not None:
            mm, self._mmap = self._mmap, None
            _close_mapping(mm)

    _unlinked = False

    def unlink(self) -> None:
        """Remove the name (owner only; idempotent). Mappings stay valid until closed."""
        if self._unlinked:
            return
        if not self.owner:
            raise SegmentError(self.name, "only the owner unlinks a segment")
        self._unlinked = True
        assert self._shm is not None
        with contextlib.suppress(FileNotFoundError):
            self._shm.unlink()  # also drops the resource tracker's registration


def _close_mapping(mapping: shared_memory.SharedMemory | mmap.mmap) -> None:
    """Close a mapping; views kept alive only by garbage cycles are collected first.

    A view that is still really in use keeps the mapping alive until it dies
    (closing under it would crash the process), and that is reported.
    """
    try:
        mapping.close()
    except BufferError:
        gc.collect()
        try:
            mapping.close()
        except BufferError:
            warnings.warn("a numpy view of a ringaudio segment outlived close(); unmapped when it dies", stacklevel=3)


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not name or "/" in name or len(name) > 200:
        raise SegmentError(str(name), "segment names are non-empty, without '/', at most 200 characters")


def reclaim(name: str) -> bool:
    """Unlink ``name`` if it is a ringaudio segment whose owner is dead. Returns True if removed.

    A live owner's segment, or anything that is not ours, is left alone.
    """
    try:
        seg = Segment.attach(name)
    except SegmentError:
        return False
    assert seg.words is not None
    magic, pid, start = (int(seg.words[i]) for i in (layout.H_MAGIC, layout.H_OWNER_PID, layout.H_OWNER_START))
    seg.close()
    if magic != layout.MAGIC or owner_alive(pid, start):
        return False
    _unlink_name(name)
    return True


def _unlink_name(name: str) -> None:
    import _posixshmem

    with contextlib.suppress(FileNotFoundError):
        _posixshmem.shm_unlink("/" + name)


def reclaim_stale() -> list[str]:
    """Remove every ringaudio segment in ``/dev/shm`` whose owner is dead; return their names."""
    if not _SHM_DIR.is_dir():
        return []
    return [p.name for p in sorted(_SHM_DIR.glob(PREFIX + "*")) if reclaim(p.name)]
