"""Real packet loss, or a real bandwidth cap: a network namespace of our own, a veth pair to it, and
nftables dropping packets inside it (or a token-bucket qdisc on its end of the pair).

netsim (a userspace proxy) can only model loss as a stall: TCP never loses bytes. To see what the
kernel's own recovery does (fast retransmit, RTOs, a shrinking congestion window), the server runs in
a namespace this module creates, reached over a veth pair with addresses private to that pair, and an
nftables table *inside the namespace* drops a share of the packets in each direction. Nothing outside
the namespace is changed but the host end of our own veth; everything is removed on exit. Needs root,
``ip`` (iproute2) and ``nft`` (nftables); :func:`available` says whether they are there.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass


@dataclass(frozen=True)
class Namespace:
    name: str
    host_ip: str  # the host's end of the veth
    ns_ip: str  # the namespace's end: where a server inside it listens

    def command(self, *argv: str) -> list[str]:
        """``argv`` run inside the namespace."""
        return ["ip", "netns", "exec", self.name, *argv]


def _needs(tools: tuple[str, ...], packages: str) -> str | None:
    """None if this process is root and has ``tools``, else why not."""
    if os.geteuid() != 0:
        return "needs root"
    missing = [tool for tool in tools if shutil.which(tool) is None]
    return f"needs {' and '.join(missing)} (apt-get install {packages})" if missing else None


def available() -> str | None:
    """None if a lossy namespace can be made here, else why not."""
    return _needs(("ip", "nft"), "iproute2 nftables")


def _run(*argv: str, stdin: str | None = None) -> None:
    subprocess.run(argv, input=stdin, text=True, check=True, capture_output=True, timeout=10)


def _ruleset(loss_percent: float) -> str:
    # numgen draws per packet; "< n" out of 10 000 gives a loss to 0.01 %
    n = round(loss_percent * 100)
    rule = f"numgen random mod 10000 < {n} drop" if n else "accept"
    return (
        "table inet ringaudio_loss {\n"
        f"  chain i {{ type filter hook input priority 0; {rule}; }}\n"
        f"  chain o {{ type filter hook output priority 0; {rule}; }}\n"
        "}\n"
    )


@contextmanager
def lossy(loss_percent: float) -> Iterator[Namespace]:
    """A namespace whose packets are dropped with ``loss_percent`` probability each way."""
    if not 0 <= loss_percent <= 100:
        raise ValueError(f"loss_percent must be in 0..100, got {loss_percent!r}")
    why = available()
    if why is not None:
        raise RuntimeError(f"no lossy namespace: {why}")
    with _namespace(loss_percent, None) as ns:
        yield ns


def cap_available() -> str | None:
    """None if a bandwidth-capped namespace can be made here, else why not."""
    return _needs(("ip", "tc"), "iproute2")


@contextmanager
def capped(rate_kbit: int) -> Iterator[Namespace]:
    """A namespace whose outbound traffic (a server inside it, sending to the host) is capped at
    ``rate_kbit`` by a token bucket (``tc qdisc ... tbf``) on its end of the veth pair: the server's
    own socket sees the congestion (its send queue fills) while the client reads all that arrives."""
    if not rate_kbit > 0:
        raise ValueError(f"rate_kbit must be > 0, got {rate_kbit!r}")
    why = cap_available()
    if why is not None:
        raise RuntimeError(f"no capped namespace: {why}")
    with _namespace(None, rate_kbit) as ns:
        yield ns


@contextmanager
def _namespace(loss_percent: float | None, rate_kbit: int | None) -> Iterator[Namespace]:
    tag = secrets.token_hex(3)
    name, host_if, ns_if = f"ra-{tag}", f"rah{tag}", f"ran{tag}"  # interface names: at most 15 characters
    octet = 1 + secrets.randbelow(250)
    ns = Namespace(name, f"10.231.{octet}.1", f"10.231.{octet}.2")
    _run("ip", "netns", "add", name)
    try:
        _run("ip", "link", "add", host_if, "type", "veth", "peer", "name", ns_if)
        _run("ip", "link", "set", ns_if, "netns", name)
        _run("ip", "addr", "add", f"{ns.host_ip}/30", "dev", host_if)
        _run("ip", "link", "set", host_if, "up")
        _run(*ns.command("ip", "addr", "add", f"{ns.ns_ip}/30", "dev", ns_if))
        _run(*ns.command("ip", "link", "set", ns_if, "up"))
        _run(*ns.command("ip", "link", "set", "lo", "up"))
        if loss_percent is not None:
            _run(*ns.command("nft", "-f", "-"), stdin=_ruleset(loss_percent))
        if rate_kbit is not None:  # a bucket of 8 KiB, and at most half a second queued in it
            tbf = ("tc", "qdisc", "add", "dev", ns_if, "root", "tbf", "rate", f"{rate_kbit}kbit")
            _run(*ns.command(*tbf, "burst", "8kb", "latency", "500ms"))
        yield ns
    finally:
        # deleting the namespace destroys its end of the pair, and with it ours; its table goes with it
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10)
        subprocess.run(["ip", "link", "del", host_if], capture_output=True, timeout=10)
