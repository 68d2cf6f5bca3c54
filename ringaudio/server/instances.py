"""Several servers behind one address: the names that route between them, and one /metrics for all.

A server may have an instance name (``--instance a``; ``--processes N`` names its processes ``p0`` …
``pN-1``). Its session ids then start with that name and a dash (``a-3f9c…``), so whatever stands in
front — the kernel's ``SO_REUSEPORT`` balancing, HAProxy — can tell from a ``listen`` which server
holds the stream: HAProxy routes ``/?listen=a-…`` to instance ``a``; a process of one
``--processes`` server relays it to its sibling over the sibling's private socket (an abstract Unix
socket named after the port, a random token of the supervisor's and the instance: nothing in the
file system, gone with the process).

Pure functions, but for reading a Unix socket peer's credentials.
"""

from __future__ import annotations

import re
import socket
import struct

from ..errors import ConfigError

NAME = re.compile(r"[a-z0-9]{1,16}")
# a sample line: name, label set (quoted values may hold any character, escaped quotes included), rest
SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?:[^"}]|"(?:[^"\\]|\\.)*")*\})?(\s.*)$')


def check_instance(name: str) -> str:
    """``name`` if it is a valid instance name (1 to 16 of a-z and 0-9), else ConfigError."""
    if not NAME.fullmatch(name):
        raise ConfigError(f"instance: {name!r} is not 1 to 16 lowercase letters and digits")
    return name


def process_names(n: int, base: str = "") -> list[str]:
    """The instance names of the processes of one ``--processes n [--instance base]`` server."""
    return [check_instance(f"{base}p{i}") for i in range(n)]


FAMILY_ENV = "RINGAUDIO_FAMILY"  # the supervisor's token, in its processes' environment


def private_address(port: int, instance: str, family: str) -> str:
    """The abstract Unix socket a process of a ``--processes`` server also listens on. ``family`` is
    a random token the supervisor gives its processes: another local user cannot take the name
    first (abstract names have no permissions) and make a process crash-loop on its bind."""
    return f"\0ringaudio-{port}-{family}-{instance}"


def peer_uid(sock: socket.socket) -> int:
    """The user id of the process at the other end of a Unix socket (SO_PEERCRED)."""
    _, uid, _ = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
    return int(uid)


def peer_pid(sock: socket.socket) -> int:
    pid, _, _ = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
    return int(pid)


def instance_of(session_id: str) -> str | None:
    """The instance a session id names (``a-3f9c…`` → ``a``), None for an id without one."""
    head, dash, _ = session_id.partition("-")
    return head if dash and NAME.fullmatch(head) else None


def label(line: str, instance: str) -> str:
    """One exposition sample line with ``process="<instance>"`` added to its labels."""
    m = SAMPLE.match(line)
    if m is None:
        return line
    name, labels, rest = m.groups()
    tag = f'process="{instance}"'
    if labels is None or labels == "{}":
        return f"{name}{{{tag}}}{rest}"
    return f"{name}{{{labels[1:-1]},{tag}}}{rest}"


UP = "tts_process_up"


def merge_expositions(texts: dict[str, str], missing: tuple[str, ...] = ()) -> str:
    """One Prometheus text exposition from several processes' (instance → text): each family's
    ``# HELP``/``# TYPE`` once, then every process's samples of it, each labelled with its process;
    and ``tts_process_up`` saying which answered (1) and which (``missing``) did not (0), so a
    sibling that did not answer is seen, not just absent."""
    families: dict[str, list[str]] = {}  # family -> its header lines, then samples
    headers: dict[str, int] = {}  # family -> how many header lines it has
    for instance, text in texts.items():
        family = ""
        for line in text.splitlines():
            if not line:
                continue
            if line.startswith("#"):
                parts = line.split(None, 3)
                if len(parts) >= 3 and parts[1] in ("HELP", "TYPE"):
                    family = parts[2]
                    lines = families.setdefault(family, [])
                    if headers.get(family, 0) < 2 and not any(h.startswith(f"# {parts[1]} ") for h in lines):
                        lines.insert(headers.get(family, 0), line)
                        headers[family] = headers.get(family, 0) + 1
                continue
            families.setdefault(family, []).append(label(line, instance))
    families[UP] = [
        f"# HELP {UP} Whether this process of a --processes server answered the merged scrape (1) or not (0).",
        f"# TYPE {UP} gauge",
        *(f'{UP}{{process="{n}"}} 1' for n in texts),
        *(f'{UP}{{process="{n}"}} 0' for n in missing),
    ]
    return "".join(line + "\n" for lines in families.values() for line in lines)
