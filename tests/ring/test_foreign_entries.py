"""Entries in /dev/shm that ringaudio did not create: start-up steps around them, never follows or reuses them.

Any local user can put a directory, a symlink, a FIFO, a socket or a file of
their own under a ``ringaudio-*`` name. ``reclaim_stale()`` must leave each of
them alone without raising, a new arena must find a name of its own, and
attaching must refuse them with a typed error instead of following or hanging.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import stat
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from ringaudio.errors import ForeignSegment, SegmentExists
from ringaudio.ring import RingArena, layout, reclaim_stale, segment
from ringaudio.ring.segment import process_start_ms

from ..server.conftest import ServerProcess

SHM = Path("/dev/shm")
DEAD_PID = 2**22 + 12345  # beyond pid_max: nobody
OTHER_UID = 65534  # nobody

pytestmark = pytest.mark.skipif(not SHM.is_dir(), reason="needs /dev/shm")


def header_bytes(pid: int) -> bytes:
    """A complete ringaudio segment whose header names ``pid`` as its owner."""
    fmt = layout.RingFormat(4, 960, 1, "int16", n_rings=1)
    start = process_start_ms(pid) if pid == os.getpid() else 1
    words = layout.encode_header(fmt, owner_pid=pid, owner_start_ms=start, policy=layout.BLOCK, high=3, low=2)
    words[layout.H_READY] = 1
    raw = words.tobytes()
    return raw + bytes(fmt.segment_bytes - len(raw))


def snapshot(path: Path) -> tuple[object, ...] | None:
    """What an entry is, without following it or opening anything but a regular file."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    body: object = None
    if stat.S_ISLNK(st.st_mode):
        body = os.readlink(path)
    elif stat.S_ISREG(st.st_mode):
        body = path.read_bytes()
    return (stat.S_IFMT(st.st_mode), st.st_mode, st.st_ino, st.st_uid, st.st_size, st.st_mtime_ns, st.st_ctime_ns, body)


class Entry:
    """One planted entry (and, for a symlink, the file or the nothing it points at)."""

    def __init__(self, kind: str, tmp_path: Path, name: str | None = None) -> None:
        self.kind = kind
        self.name = name or f"ringaudio-foreign-{secrets.token_hex(4)}"
        self.path = SHM / self.name
        self.target = tmp_path / f"{self.name}.target"
        self._sock: socket.socket | None = None
        if kind == "directory":
            os.mkdir(self.path)
        elif kind == "symlink":
            self.target.write_bytes(header_bytes(DEAD_PID))  # the most tempting thing to "reclaim" through it
            os.symlink(self.target, self.path)
        elif kind == "dangling_symlink":
            os.symlink(self.target, self.path)  # following it with O_CREAT would create the target
        elif kind == "fifo":
            os.mkfifo(self.path)
        elif kind == "socket":
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self._sock.bind(str(self.path))
            self._sock.listen()
        elif kind == "garbage":
            self.path.write_bytes(os.urandom(4096))
        elif kind == "live_header":
            self.path.write_bytes(header_bytes(os.getpid()))
        elif kind == "other_uid":
            self.path.write_bytes(header_bytes(DEAD_PID))  # stale-looking, but not ours to remove
            os.chmod(self.path, 0o600)
            os.chown(self.path, OTHER_UID, OTHER_UID)
        else:
            raise AssertionError(kind)
        self.before = snapshot(self.path)
        self.target_before = snapshot(self.target)
        assert self.before is not None

    def assert_untouched(self) -> None:
        assert snapshot(self.path) == self.before, f"the planted {self.kind} was changed"
        assert snapshot(self.target) == self.target_before, f"what the planted {self.kind} points at was changed"

    def remove(self) -> None:
        if self._sock is not None:
            self._sock.close()
        with contextlib.suppress(FileNotFoundError):
            if stat.S_ISDIR(os.lstat(self.path).st_mode):
                os.rmdir(self.path)
            else:
                os.unlink(self.path)


@contextlib.contextmanager
def planted(kind: str, tmp_path: Path, name: str | None = None) -> Iterator[Entry]:
    entry = Entry(kind, tmp_path, name)
    try:
        yield entry
    finally:
        entry.remove()


def root_only(kind: str) -> object:
    return pytest.param(kind, marks=pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root"))


KINDS = [
    "directory",
    "symlink",
    "dangling_symlink",
    "fifo",
    "socket",
    "garbage",
    "live_header",
    root_only("other_uid"),
]
UNATTACHABLE = ["directory", "symlink", "dangling_symlink", "fifo", "socket", "garbage"]


def exercise(arena: RingArena) -> None:
    """The arena works: lease a ring, write a frame, read it back."""
    ring = arena.lease()
    try:
        sent = np.arange(960, dtype=np.int16)
        seq = ring.write(sent)
        out = np.empty(960, np.int16)
        ring.read(seq, out)
        assert np.array_equal(out, sent)
    finally:
        ring.close()


def new_arena() -> RingArena:
    return RingArena.create(rings=2, capacity=50, frame_samples=960)


def arena_beside(entry: Entry) -> None:
    """A new arena works beside the foreign entry, under another name, and leaves it untouched."""
    arena = new_arena()
    try:
        assert arena.name != entry.name
        exercise(arena)
    finally:
        arena.unlink()
        arena.close()
    entry.assert_untouched()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", KINDS)
def test_start_up_steps_around_a_foreign_entry(kind: str, tmp_path: Path) -> None:
    with planted(kind, tmp_path) as entry:
        assert entry.name not in reclaim_stale()
        entry.assert_untouched()
        arena_beside(entry)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", KINDS)
def test_a_taken_generated_name_is_replaced_not_reused(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with planted(kind, tmp_path, name=segment.new_name()) as entry:
        real = segment.new_name
        names = iter([entry.name])  # the next generated name is the planted one
        monkeypatch.setattr(segment, "new_name", lambda: next(names, None) or real())
        arena_beside(entry)


@pytest.mark.timeout(60)
def test_every_generated_name_taken_is_a_typed_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with planted("dangling_symlink", tmp_path) as entry:
        monkeypatch.setattr(segment, "new_name", lambda: entry.name)
        with pytest.raises(SegmentExists):
            new_arena()
        entry.assert_untouched()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", KINDS)
def test_an_explicit_name_that_is_taken_is_refused(kind: str, tmp_path: Path) -> None:
    with planted(kind, tmp_path) as entry:
        with pytest.raises(SegmentExists):
            RingArena.create(rings=2, capacity=50, frame_samples=960, name=entry.name)
        entry.assert_untouched()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", UNATTACHABLE)
def test_attach_refuses_a_foreign_entry(kind: str, tmp_path: Path) -> None:
    with planted(kind, tmp_path) as entry:
        with pytest.raises(ForeignSegment):
            RingArena.attach(entry.name)
        entry.assert_untouched()


def test_reclaim_of_a_vanished_entry_is_a_no() -> None:
    assert segment.reclaim(f"ringaudio-foreign-{secrets.token_hex(4)}") is False


@pytest.mark.timeout(200)
def test_server_starts_with_foreign_entries_in_dev_shm(tmp_path: Path) -> None:
    with planted("directory", tmp_path) as directory, planted("symlink", tmp_path) as link:
        srv = ServerProcess()
        try:
            assert srv.logged("server listening"), f"server did not start: {srv.lines[-5:]}"
            with urllib.request.urlopen(f"{srv.http}/healthz", timeout=10) as response:
                assert response.status == 200
        finally:
            code = srv.stop(timeout=15)
        assert code == 0, srv.lines[-5:]
        directory.assert_untouched()
        link.assert_untouched()
