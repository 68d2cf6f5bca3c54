"""How much of what the server sent a client has not consumed yet, seen from the server's side.

A client that reads too slowly is invisible to the sender for a long time if one only watches the
sender's own buffer: the kernel's send queue, the client's receive buffer (128 KiB and up on
loopback) and the client library's message queue absorb tens of seconds of audio first. TCP itself
knows more. For each audio socket the server adds up:

- ``transport``: bytes still in the event loop's transport buffer (not yet given to the kernel);
- ``outq``: bytes in the kernel's send queue, sent and unacknowledged or not sent yet
  (``SIOCOUTQ``);
- ``held``: bytes the peer's kernel has acknowledged but its application has not read: the peer's
  advertised receive window shrinks by exactly that (``tcp_info.tcpi_snd_wnd``, Linux ≥ 5.4),
  measured against a baseline, the largest window the client has advertised since the server last
  re-based it (on the pong to the ping a held-back client is sent: a receive buffer can shrink after
  connect, so a window advertised once is no proof it still can hold that much).

A client that reads as fast as the audio comes keeps ``held`` near zero and ``outq`` at about one
round trip of audio; one that reads slower than real time shows a backlog that grows by the
difference, seconds before any buffer is full. Where ``TCP_INFO`` or ``SIOCOUTQ`` are missing (not
Linux), only what is visible counts. :func:`unconsumed` is the pure part; :func:`probe` the syscalls
(the C kernels' lanes read the same two, in ``lane_probe``).
"""

from __future__ import annotations

import fcntl
import socket
import struct
import termios
from dataclasses import dataclass

REFRESH = 0.25  # s: how often a streaming session's backlog is read (by its pump, or by its lane in C)
TCP_INFO_SIZE = 232  # up to and including tcpi_snd_wnd
SND_WND_OFFSET = 228  # u32 tcpi_snd_wnd: the peer's advertised receive window, after scaling (bytes)
_U32 = struct.Struct("<I")
_SIOCOUTQ = getattr(termios, "TIOCOUTQ", 0x5411)  # the same ioctl number serves TCP sockets on Linux


@dataclass(frozen=True, slots=True)
class Probe:
    outq: int  # bytes in the kernel's send queue
    window: int | None  # the peer's advertised window, None where the kernel does not say


def snd_wnd(info: bytes) -> int | None:
    """``tcpi_snd_wnd`` from a ``TCP_INFO`` answer, or None if the kernel's struct is older."""
    if len(info) < SND_WND_OFFSET + 4:
        return None
    return int(_U32.unpack_from(info, SND_WND_OFFSET)[0])


def probe(sock: socket.socket) -> Probe:
    """Two syscalls: the send queue and the peer's window (0/None where they are not available)."""
    try:
        outq = int(struct.unpack("i", fcntl.ioctl(sock.fileno(), _SIOCOUTQ, b"\0\0\0\0"))[0])
    except OSError:
        outq = 0
    try:
        window = snd_wnd(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, TCP_INFO_SIZE))
    except (OSError, AttributeError):
        window = None
    return Probe(outq, window)


def unconsumed(transport: int, p: Probe, max_window: int) -> int:
    """Bytes sent to the client and not read by it yet (``max_window``: the baseline window, the
    largest seen since it was last re-based)."""
    held = max(0, max_window - p.window) if p.window is not None else 0
    return transport + p.outq + held
