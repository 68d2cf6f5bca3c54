"""Sleeping on a 32-bit word of shared memory: Linux futexes, or a short sleep elsewhere.

A waiter calls :func:`wait` with the value it last saw; the kernel puts it to
sleep only if the word still holds that value, so a wake that happens between
the check and the sleep is never lost. Wakers change the word, then call
:func:`wake`. The mapping is shared between processes, so these are the
non-private futex operations. Every wait has a timeout: callers loop, and
re-check their condition (and the ring's state) on each return.
"""

from __future__ import annotations

import ctypes
import os
import platform
import sys
import time

_SYSCALL_FUTEX = {"x86_64": 202, "amd64": 202, "aarch64": 98, "arm64": 98, "riscv64": 98, "armv7l": 240, "armv6l": 240}
_FUTEX_WAIT = 0
_FUTEX_WAKE = 1
_WAKE_ALL = 0x7FFFFFFF


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


def _load_futex() -> tuple[ctypes.CDLL, int] | None:
    if not sys.platform.startswith("linux") or os.environ.get("RINGAUDIO_NO_FUTEX"):
        return None
    number = _SYSCALL_FUTEX.get(platform.machine().lower())
    if number is None:
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.syscall  # noqa: B018 - probe that the symbol exists
    except (OSError, AttributeError):
        return None
    return libc, number


_FUTEX = _load_futex()
AVAILABLE = _FUTEX is not None
"""True where sleeps are real futex waits; False means short polling sleeps."""


def wait(address: int, expected: int, timeout: float) -> None:
    """Sleep while the 32-bit word at ``address`` equals ``expected``, at most ``timeout`` seconds.

    Returns on a wake, a change of the word, a signal or the timeout; the caller
    re-checks its condition in every case.
    """
    if _FUTEX is None:
        time.sleep(min(timeout, 0.0005))
        return
    libc, number = _FUTEX
    timeout = max(timeout, 0.0)
    ts = _Timespec(int(timeout), int((timeout % 1.0) * 1e9))
    libc.syscall(
        number,
        ctypes.c_void_p(address),
        ctypes.c_int(_FUTEX_WAIT),
        ctypes.c_uint32(expected & 0xFFFFFFFF),
        ctypes.byref(ts),
        None,
        ctypes.c_int(0),
    )


def wake(address: int, count: int = _WAKE_ALL) -> None:
    """Wake up to ``count`` sleepers on the word at ``address``."""
    if _FUTEX is None:
        return
    libc, number = _FUTEX
    libc.syscall(
        number, ctypes.c_void_p(address), ctypes.c_int(_FUTEX_WAKE), ctypes.c_int(count), None, None, ctypes.c_int(0)
    )
