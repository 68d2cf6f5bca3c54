"""``python -m ringaudio.server --processes N``: N server processes on one port, supervised together.

Each process is a whole server (its own arena, workers and scheduler) bound to the same address
with ``SO_REUSEPORT``, so the kernel spreads new connections across them; they are named ``p0`` …
``pN-1`` and their session ids say which holds a stream (see :mod:`.instances`). This process serves
nothing: it picks the port (and holds it, so a restarted process binds the same one), starts the
processes, says "server listening" once all of them are, restarts one that dies (the sessions it held
end; "server process died"), gives up after :data:`MAX_DEATHS` deaths within :data:`DEATH_WINDOW_S`,
and on SIGTERM or SIGINT stops them all (one SIGTERM each; a second signal is passed on too, so a
second Ctrl-C is as forceful as it is for one server). It waits on signals, never polls.
"""

from __future__ import annotations

import ctypes
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence

from .. import __version__, logs
from .instances import FAMILY_ENV, peer_pid, private_address, process_names

log = logging.getLogger("ringaudio.server")
READY_TIMEOUT_S = 180.0  # a first start compiles the kernels
STOP_TIMEOUT_S = 30.0
MAX_DEATHS = 5
DEATH_WINDOW_S = 60.0
RESTART_DELAY_S = 0.5
PR_SET_PDEATHSIG = 1


def _child_setup() -> None:
    """In the child, before exec: SIGTERM when the supervisor goes (no orphans, even after a
    SIGKILL), and the signals the supervisor waits on unblocked again (a mask survives exec)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM, signal.SIGINT, signal.SIGCHLD})


def child_argv(argv: Sequence[str], instance: str, siblings: Sequence[str], port: int) -> list[str]:
    """A process's command line: the supervisor's arguments without ``--processes`` and ``--port``,
    with its name, its siblings' names and the port they share. (Their sockets' token goes in the
    environment, FAMILY_ENV: a command line is readable by every local user, an environment only
    by the process's own.)"""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        name = arg.split("=", 1)[0]
        if name in ("--processes", "--port", "--instance", "--siblings"):
            skip = "=" not in arg
            continue
        out.append(arg)
    others = ",".join(s for s in siblings if s != instance)
    return [*out, "--port", str(port), "--instance", instance, "--siblings", others]


def reserve_port(host: str, port: int) -> socket.socket:
    """A socket bound (not listening) to ``host:port`` with SO_REUSEPORT: it fixes the port (0
    picks one) for every process, and keeps it while a dead one is restarted."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


def _listening(port: int, instance: str, family: str, pid: int) -> bool:
    """Is the process ``pid`` listening on its private socket (it, not whoever took the name)?"""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(private_address(port, instance, family))
        return peer_pid(probe) == pid
    except OSError:
        return False
    finally:
        probe.close()


class Supervisor:
    def __init__(self, argv: Sequence[str], host: str, port: int, processes: int, instance: str = "") -> None:
        self.argv = list(argv)
        self.host = host
        self.names = process_names(processes, instance)
        self.reservation = reserve_port(host, port)
        self.port: int = self.reservation.getsockname()[1]
        self.family = secrets.token_hex(8)
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.deaths: deque[float] = deque(maxlen=MAX_DEATHS)
        self.stopping = False
        self.exit_code = 0

    def spawn(self, name: str) -> None:
        argv = child_argv(self.argv, name, self.names, self.port)
        cmd = [sys.executable, "-m", "ringaudio.server", *argv]
        env = {**os.environ, FAMILY_ENV: self.family}
        self.procs[name] = subprocess.Popen(cmd, preexec_fn=_child_setup, process_group=0, env=env)

    def wait_ready(self, name: str, deadline: float) -> bool:
        proc = self.procs[name]
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                return False
            if _listening(self.port, name, self.family, proc.pid):
                return True
            if signal.sigtimedwait([signal.SIGTERM, signal.SIGINT], 0.05) is not None:
                self.stopping = True
                return False
        return False

    def run(self) -> int:
        signals = {signal.SIGTERM, signal.SIGINT, signal.SIGCHLD}
        signal.pthread_sigmask(signal.SIG_BLOCK, signals)  # taken with sigtimedwait, nothing async
        try:
            for name in self.names:
                self.spawn(name)
            deadline = time.monotonic() + READY_TIMEOUT_S
            for name in self.names:
                if not self.wait_ready(name, deadline):
                    if not self.stopping:
                        logs.event(log, logging.ERROR, "server process did not start", None, instance=name)
                        self.exit_code = 1
                    return self.stop()
            logs.event(
                log,
                logging.INFO,
                "server listening",
                None,
                host=self.host,
                port=self.port,
                version=__version__,
                processes=len(self.names),
                pids={name: proc.pid for name, proc in self.procs.items()},
            )
            while not self.stopping:
                info = signal.sigtimedwait(signals, 60.0)
                if info is None or info.si_signo == signal.SIGCHLD:
                    self.reap(restart=self.spawn)
                else:
                    self.stopping = True
            return self.stop()
        finally:
            self.reservation.close()

    def reap(self, restart: Callable[[str], None]) -> None:
        """Restart every process that has died; after too many deaths, stop them all."""
        for name, proc in list(self.procs.items()):
            code = proc.poll()
            if code is None:
                continue
            now = time.monotonic()
            self.deaths.append(now)
            logs.event(log, logging.WARNING, "server process died", None, instance=name, pid=proc.pid, code=code)
            if len(self.deaths) == MAX_DEATHS and now - self.deaths[0] < DEATH_WINDOW_S:
                logs.event(log, logging.CRITICAL, "server processes keep dying, giving up", None, deaths=MAX_DEATHS)
                self.exit_code = 1
                self.stopping = True
                return
            time.sleep(RESTART_DELAY_S)
            restart(name)

    def stop(self) -> int:
        """SIGTERM to each process (another on a second signal), SIGKILL after STOP_TIMEOUT_S."""
        logs.event(log, logging.INFO, "server stopping", None, processes=len(self.procs))
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for proc in self.procs.values():
            while proc.poll() is None and time.monotonic() < deadline:
                info = signal.sigtimedwait([signal.SIGTERM, signal.SIGINT, signal.SIGCHLD], 0.1)
                if info is not None and info.si_signo != signal.SIGCHLD:  # a second signal: passed on
                    for other in self.procs.values():
                        if other.poll() is None:
                            other.send_signal(signal.SIGTERM)
            if proc.poll() is None:
                proc.kill()
            code = proc.wait()
            if code != 0 and not self.exit_code:
                self.exit_code = 1
        logs.event(log, logging.INFO, "server stopped", None)
        return self.exit_code
