"""Shared-memory segments: create (owner), attach (anyone), close, unlink, reclaim.

The owner's segment is registered with multiprocessing's resource tracker, so
if the owner dies without unlinking, the tracker removes it. Attaching never
registers (on Python < 3.13 ``SharedMemory`` always did, and the tracker of a
separately started process would then unlink a segment it does not own), and a
segment whose recorded owner is dead can be reclaimed by the next creator.

Any local user can put anything under a ``ringaudio-*`` name in ``/dev/shm``: a
directory, a symlink, a FIFO, a socket, a file of their own. Nothing here follows
or reuses such an entry: a generated name that is taken is replaced by another,
reclaiming looks only at this user's regular files, and attaching refuses
anything but a regular file.
"""

from __future__ import annotations

import contextlib
import gc
import mmap
import os
import secrets
import stat
import warnings
from multiprocessing import shared_memory
from pathlib import Path

import numpy as np
import psutil

from ..errors import ForeignSegment, HeaderProblem, LayoutMismatch, SegmentError, SegmentExists, SegmentNotFound
from . import layout

PREFIX = "ringaudio"
_SHM_DIR = Path("/dev/shm")
_NAME_ATTEMPTS = 8  # generated names tried before giving up (one taken by chance is already unlikely)
# Opening a name we did not necessarily create: never through a symlink, never waiting on a FIFO.
_OPEN_FOREIGN = os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


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
        """Create and map a new segment of ``size`` bytes (a generated name if ``name`` is None).

        An explicit name that is taken is reclaimed only if it is our own stale
        segment (else :class:`SegmentExists`); a generated name that is taken
        is simply replaced by a fresh one, whatever is there is left alone.
        """
        if name is not None:
            _check_name(name)
            try:
                return cls._create(name, size)
            except FileExistsError:
                if not reclaim(name):
                    raise SegmentExists(name, "already exists and is not a stale segment of ours") from None
            try:
                return cls._create(name, size)
            except FileExistsError:
                raise SegmentExists(name, "was taken again right after it was reclaimed") from None
        for _ in range(_NAME_ATTEMPTS):
            name = new_name()
            _check_name(name)
            with contextlib.suppress(FileExistsError):
                return cls._create(name, size)
        raise SegmentExists(str(name), f"is taken, and so were the {_NAME_ATTEMPTS - 1} generated names before it")

    @classmethod
    def _create(cls, name: str, size: int) -> Segment:
        seg = cls(name, owner=True)
        # O_CREAT | O_EXCL: FileExistsError for any entry already there, a symlink (even a dangling
        # one) included: it is never followed, so nothing is created or truncated anywhere else.
        seg._shm = shared_memory.SharedMemory(name=name, create=True, size=size)
        with contextlib.suppress(AttributeError, OSError):  # non-POSIX
            os.fchmod(seg._shm._fd, 0o600)  # type: ignore[attr-defined]
        seg._map(seg._shm.buf, size)
        return seg

    @classmethod
    def attach(cls, name: str) -> Segment:
        _check_name(name)
        seg = cls(name, owner=False)
        # Not SharedMemory(track=False) on 3.13+ either: it maps whatever it opened before we can
        # look (a FIFO is a ValueError), and unlinks the name if mapping fails, though it only attached.
        try:
            size = seg._open_untracked(name)
        except FileNotFoundError:
            raise SegmentNotFound(name) from None
        except PermissionError as exc:
            raise SegmentError(name, f"permission denied ({exc.strerror})") from None
        except OSError as exc:  # ELOOP a symlink, EINVAL/EISDIR a directory, ENXIO a socket, ...
            raise ForeignSegment(name, f"not a shared-memory segment ({exc.strerror})") from None
        if size < layout.HEADER_BYTES:
            seg.close()
            raise ForeignSegment(name, f"{size} bytes is smaller than a ringaudio header")
        seg._map(seg._mmap, size)
        return seg

    def _open_untracked(self, name: str) -> int:
        import _posixshmem  # the module SharedMemory itself uses

        fd = _posixshmem.shm_open("/" + name, os.O_RDWR | _OPEN_FOREIGN, mode=0o600)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):  # a FIFO opens (O_NONBLOCK), but it is no segment
                raise ForeignSegment(name, "not a regular file")
            size = st.st_size
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
        except HeaderProblem as exc:
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
    """Unlink ``name`` if it is a ringaudio segment of ours whose owner is dead. Returns True if removed.

    Only a regular file of this user's is looked at. A live owner's segment, and
    anything else under the name (a directory, a symlink, a FIFO, a socket,
    another user's file, garbage, an entry that vanishes meanwhile), is left
    alone and never raises.
    """
    path = _SHM_DIR / name
    try:
        _check_name(name)
        if not _ours(os.lstat(path)):  # look before opening: a socket or device is not even opened
            return False
        fd = os.open(path, os.O_RDONLY | _OPEN_FOREIGN)
    except (OSError, SegmentError):
        return False
    try:
        st = os.fstat(fd)
        if not _ours(st):  # swapped for something else between the lstat and the open
            return False
        header = os.pread(fd, layout.HEADER_BYTES, 0)  # a read, not a mapping: nothing to leak
        if len(header) < layout.HEADER_BYTES:
            return False
        words = np.frombuffer(header, dtype="<u8")
        magic, pid, start = (int(words[i]) for i in (layout.H_MAGIC, layout.H_OWNER_PID, layout.H_OWNER_START))
        if magic != layout.MAGIC or owner_alive(pid, start):
            return False
        now = os.lstat(path)
        if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):  # the name no longer is what we read
            return False
        _unlink_name(name)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def _ours(st: os.stat_result) -> bool:
    return stat.S_ISREG(st.st_mode) and st.st_uid == os.geteuid()  # the uid our segments are created with


def _unlink_name(name: str) -> None:
    import _posixshmem

    with contextlib.suppress(FileNotFoundError):
        _posixshmem.shm_unlink("/" + name)


def reclaim_stale() -> list[str]:
    """Remove every ringaudio segment of ours in ``/dev/shm`` whose owner is dead; return their names."""
    try:
        names = sorted(n for n in os.listdir(_SHM_DIR) if n.startswith(PREFIX))
    except OSError:  # no /dev/shm (or not readable): nothing to reclaim
        return []
    return [n for n in names if reclaim(n)]
