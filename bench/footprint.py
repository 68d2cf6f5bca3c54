"""Footprint: ``python -m bench.footprint [--idle-seconds 10] [--runs 3] [--cold-runs 1] [--session-seconds 3]``.

What an appliance pays for ringaudio when nobody is listening, and what one stream adds; the same for
the bare websockets + uvloop peer (``bench/bare_server.py``), so every figure has a ratio:

- **start to ready**: wall time from launching ``python -m ringaudio.server --port 0 --workers 1
  --backend synthetic`` to its ``"server listening"`` log line (logged only once the worker pool is
  warm). With numba's on-disk cache warm (one start first to make sure it is, then the median of
  ``--runs`` starts), and for the first start after install: ``NUMBA_CACHE_DIR`` pointed at a fresh
  empty folder, which numba's cache locators consult before the in-tree ``__pycache__`` (every kernel
  is ``@njit(cache=True)``), so nothing is found and every kernel is compiled: the server compiles the
  ring's, the worker loads those from the same folder and compiles the resampler's, as on a fresh
  install with one cache. The folder's ``.nbi``/``.nbc`` files afterwards show it was used.
- **idle CPU**: CPU seconds (user + system, psutil) of the server and every child (the worker, and
  multiprocessing's resource tracker) over ``--idle-seconds`` with no client, as % of one core, and
  of the server process alone. psutil reads 10 ms clock ticks: over 10 s the resolution is 0.1 %.
- **idle memory**: RSS, PSS and USS (``memory_full_info()``) of the server and the worker. RSS counts
  shared pages (libraries, the shared-memory arena) once per process; PSS splits them fairly, so the
  sum of PSS is what the pair really costs; USS is what would be freed by ending each process.
- **one session**: a ``websockets`` client in this process asks for a long text and receives for
  ``--session-seconds``; CPU % of the server tree meanwhile, and RSS at the end, still connected.

Prints a markdown table; writes ``bench/results/footprint-<date>.json``. Every process it starts is
terminated (then killed) even on errors, and no ``/dev/shm/ringaudio*`` segment is left behind.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from .common import HERE, machine

KINDS = ("ringaudio", "bare")
READY_TIMEOUT = 300.0  # s: a cold numba compile on a slow, busy machine takes a while
SETTLE = 1.0  # s between ready and the idle measurement (the start-up's last log lines and GC)
TEXT = "The quick brown fox jumps over the lazy dog, and then it runs away across the wide green field. " * 8
SHM = Path("/dev/shm")
MB = 2**20


# -- one server process ---------------------------------------------------------------------------------


def command(kind: str) -> list[str]:
    """The command line of a server of this kind, on a free port."""
    if kind == "ringaudio":
        return [sys.executable, "-m", "ringaudio.server", "--port", "0", "--workers", "1", "--backend", "synthetic"]
    if kind == "bare":
        return [sys.executable, "-m", "bench.bare_server", "--port", "0"]
    raise ValueError(f"unknown server kind {kind!r}")


@dataclass
class Launched:
    """A server subprocess, the time it took to say it was listening, and its port."""

    kind: str
    proc: subprocess.Popen[str]
    ready_s: float = 0.0
    port: int = 0
    seen: dict[int, psutil.Process] = field(default_factory=dict)  # every descendant ever looked at
    log: list[str] = field(default_factory=list)  # the last lines of its output
    ps: psutil.Process = field(init=False)

    def __post_init__(self) -> None:
        self.ps = psutil.Process(self.proc.pid)  # now, while the pid is surely ours (alive or a zombie)

    def tree(self) -> list[psutil.Process]:
        """The server and all its live descendants (remembered, so that stop() can reap them)."""
        procs = [self.ps]
        with contextlib.suppress(psutil.Error):
            procs += self.ps.children(recursive=True)
        for p in procs:
            self.seen.setdefault(p.pid, p)
        return procs

    def worker(self) -> psutil.Process | None:
        """The TTS worker: a spawned multiprocessing child that is not the resource tracker."""
        for p in self.tree()[1:]:
            with contextlib.suppress(psutil.Error):
                line = " ".join(p.cmdline())
                if "spawn_main" in line and "resource_tracker" not in line:
                    return p
        return None

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM, then SIGKILL; then kill any descendant still alive and reap stale segments."""
        self.tree()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for p in self.seen.values():
            with contextlib.suppress(psutil.Error):
                if p.pid != self.proc.pid and p.is_running():
                    p.kill()
                    p.wait(5)
        reclaim_segments()


def reclaim_segments() -> list[str]:
    """Unlink ringaudio segments whose owner is dead (a server that had to be killed leaves its arena)."""
    from ringaudio.ring import reclaim_stale

    return reclaim_stale()


def launch(kind: str, env: dict[str, str] | None = None, timeout: float = READY_TIMEOUT) -> Launched:
    """Start a server; return when it has logged "server listening" (it is stopped if that never comes)."""
    full_env = {**os.environ, "LOG_LEVEL": "INFO", **(env or {})}
    ready = threading.Event()
    t0 = time.monotonic()
    proc = subprocess.Popen(
        command(kind), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=full_env, cwd=HERE.parent
    )
    server = Launched(kind, proc)
    tail = server.log

    def read() -> None:  # drains its output for the server's whole life, so it never blocks on a log line
        assert proc.stdout is not None
        for line in proc.stdout:
            tail[:] = [*tail[-49:], line]
            if ready.is_set():
                continue
            with contextlib.suppress(json.JSONDecodeError, AttributeError):
                entry = json.loads(line)
                if entry.get("message") == "server listening":
                    server.ready_s = time.monotonic() - t0
                    server.port = int(entry["port"])
                    ready.set()

    threading.Thread(target=read, name=f"{kind}-output", daemon=True).start()
    deadline = t0 + timeout
    while not ready.wait(0.1):
        if proc.poll() is not None or time.monotonic() > deadline:
            server.stop()
            raise RuntimeError(f"{kind} server did not start (exit {proc.returncode}): {''.join(tail)[-2000:]}")
    return server


@contextlib.contextmanager
def running(kind: str, env: dict[str, str] | None = None) -> Iterator[Launched]:
    server = launch(kind, env)
    try:
        yield server
    finally:
        server.stop()


# -- measurements ---------------------------------------------------------------------------------------


def cpu_seconds(procs: list[psutil.Process]) -> float:
    """User + system CPU seconds of these processes so far (a process that is gone counts 0)."""
    total = 0.0
    for p in procs:
        with contextlib.suppress(psutil.Error):
            times = p.cpu_times()
            total += times.user + times.system
    return total


def cpu_sample(procs: list[psutil.Process]) -> tuple[float, float, float]:
    """(monotonic time, CPU seconds of procs[0] (the server), CPU seconds of all of them)."""
    return time.monotonic(), cpu_seconds(procs[:1]), cpu_seconds(procs)


def cpu_percents(before: tuple[float, float, float], after: tuple[float, float, float]) -> dict[str, float]:
    """% of one core between two samples: the whole tree (``cpu_pct``) and the server process alone."""
    wall = after[0] - before[0]
    return {
        "cpu_pct": round(100 * (after[2] - before[2]) / wall, 3),
        "server_cpu_pct": round(100 * (after[1] - before[1]) / wall, 3),
    }


def cpu_percent_over(server: Launched, seconds: float) -> dict[str, float]:
    """CPU of the server and all its descendants over ``seconds``, as % of one core."""
    procs = server.tree()
    before = cpu_sample(procs)
    time.sleep(seconds)
    return cpu_percents(before, cpu_sample(procs))


def memory(proc: psutil.Process | None) -> dict[str, float]:
    """RSS, and PSS/USS where the platform has them, in MB (zeros for no process)."""
    if proc is None:
        return {"rss_mb": 0.0, "pss_mb": 0.0, "uss_mb": 0.0}
    info: Any
    try:
        info = proc.memory_full_info()
    except psutil.AccessDenied:
        info = proc.memory_info()
    return {
        "rss_mb": round(info.rss / MB, 1),
        "pss_mb": round(getattr(info, "pss", 0) / MB, 1),
        "uss_mb": round(getattr(info, "uss", 0) / MB, 1),
    }


def footprint(server: Launched) -> dict[str, Any]:
    """Memory of the server, its worker and the rest of its tree (the resource tracker)."""
    worker = server.worker()
    others = [p for p in server.tree()[1:] if worker is None or p.pid != worker.pid]
    own, work = memory(server.ps), memory(worker)
    rest = sum(memory(p)["rss_mb"] for p in others)
    pair = {k: round(own[k] + work[k], 1) for k in own}
    return {"server": own, "worker": work if worker is not None else None, "pair": pair, "others_rss_mb": rest}


async def _listen(port: int, seconds: float, at_end: Callable[[], None]) -> dict[str, Any]:
    """Ask for a long text and receive for ``seconds``; ``at_end()`` runs while still connected."""
    from websockets.asyncio.client import connect

    frames = 0
    first_ms = None
    async with connect(f"ws://127.0.0.1:{port}/ws", compression=None, max_size=2**20, open_timeout=30) as ws:
        await ws.recv()  # the session event
        t0 = time.monotonic()
        await ws.send(json.dumps({"type": "synthesize", "text": TEXT}))
        while (left := t0 + seconds - time.monotonic()) > 0:
            try:
                msg = await asyncio.wait_for(ws.recv(), left)
            except TimeoutError:
                break
            if isinstance(msg, bytes):
                frames += 1
                if first_ms is None:
                    first_ms = (time.monotonic() - t0) * 1000
        at_end()
    return {"frames": frames, "first_audio_ms": None if first_ms is None else round(first_ms, 1)}


def one_session(server: Launched, seconds: float) -> dict[str, Any]:
    """One client streaming for ``seconds``: CPU % of the server tree meanwhile, memory at the end."""
    procs = server.tree()
    before = cpu_sample(procs)
    marks: dict[str, Any] = {}

    def at_end() -> None:  # the window closes before the client does: closing is not streaming
        marks["cpu"] = cpu_percents(before, cpu_sample(procs))
        marks["memory"] = footprint(server)

    result = asyncio.run(_listen(server.port, seconds, at_end))
    return {**result, **marks["cpu"], "memory": marks["memory"]}


def cold_start(kind: str) -> dict[str, Any]:
    """Start to ready with an empty numba cache (a fresh NUMBA_CACHE_DIR): the first start after install."""
    with tempfile.TemporaryDirectory(prefix="ringaudio-numba-") as cache:
        with running(kind, {"NUMBA_CACHE_DIR": cache}) as server:
            ready = server.ready_s
        files = [p for p in Path(cache).rglob("*") if p.suffix in (".nbi", ".nbc")]
    return {"ready_s": round(ready, 3), "compiled_cache_files": len(files)}


def measure(
    kind: str,
    *,
    idle_seconds: float = 10.0,
    runs: int = 3,
    cold_runs: int = 1,
    session_seconds: float = 3.0,
    prime: bool = True,
) -> dict[str, Any]:
    """Every figure for one kind of server. The last timed start stays up for the idle and session parts."""
    if prime:  # make sure numba's cache (and the OS's file cache) is warm: the normal case
        with running(kind):
            pass
    starts: list[float] = []
    for _ in range(runs - 1):
        with running(kind) as server:
            starts.append(server.ready_s)
    with running(kind) as server:
        starts.append(server.ready_s)
        time.sleep(SETTLE)
        idle_cpu = cpu_percent_over(server, idle_seconds)
        idle_memory = footprint(server)
        session = one_session(server, session_seconds)
    cold = [cold_start(kind) for _ in range(cold_runs)] if kind == "ringaudio" else []
    return {
        "server": kind,
        "ready_warm_s": round(statistics.median(starts), 3),
        "ready_warm_runs_s": [round(s, 3) for s in starts],
        "ready_cold_s": round(statistics.median(c["ready_s"] for c in cold), 3) if cold else None,
        "ready_cold_runs": cold,
        "idle_seconds": idle_seconds,
        "idle_cpu_pct": idle_cpu["cpu_pct"],
        "idle_server_cpu_pct": idle_cpu["server_cpu_pct"],
        "idle_memory": idle_memory,
        "session": session,
    }


# -- report ---------------------------------------------------------------------------------------------


def _ratio(ours: float | None, peer: float | None) -> str:
    if ours is None or peer is None or peer <= 0:
        return "—"
    return f"{ours / peer:.2f}×"


def _cell(value: float | None, digits: int = 1) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


def _get(row: dict[str, Any], path: str) -> float | None:
    """``row["a"]["b"]`` for ``"a.b"``; None where a part is missing or None."""
    value: Any = row
    for key in path.split("."):
        if value is None:
            return None
        value = value.get(key)
    return None if value is None else float(value)


TABLE: list[tuple[str, str, int, str]] = [  # label, path in a row, decimals, target
    ("start to ready, numba cache warm (s, median)", "ready_warm_s", 2, ""),
    ("start to ready, empty numba cache (s, median)", "ready_cold_s", 2, ""),
    ("idle CPU, server + children (% of one core)", "idle_cpu_pct", 2, "< 1 %"),
    ("idle CPU, server process alone (% of one core)", "idle_server_cpu_pct", 2, ""),
    ("idle RSS, server (MB)", "idle_memory.server.rss_mb", 1, ""),
    ("idle RSS, worker (MB)", "idle_memory.worker.rss_mb", 1, ""),
    ("idle RSS, server + worker (MB)", "idle_memory.pair.rss_mb", 1, "≤ 250 MB"),
    ("idle PSS, server + worker (MB)", "idle_memory.pair.pss_mb", 1, ""),
    ("idle USS, server + worker (MB)", "idle_memory.pair.uss_mb", 1, ""),
    ("idle RSS, other children: resource tracker (MB)", "idle_memory.others_rss_mb", 1, ""),
    ("one session: CPU, server + children (% of one core)", "session.cpu_pct", 2, ""),
    ("one session: CPU, server process alone (% of one core)", "session.server_cpu_pct", 2, ""),
    ("one session: RSS, server + worker (MB)", "session.memory.pair.rss_mb", 1, ""),
    ("one session: frames received", "session.frames", 0, ""),
]


def table(rows: dict[str, dict[str, Any]]) -> str:
    """A markdown table: one line per figure, ringaudio beside the bare peer."""
    out = ["| measure | ringaudio | bare peer | ringaudio ÷ bare | target |", "|---|---|---|---|---|"]
    for label, path, digits, target in TABLE:
        ours, peer = _get(rows["ringaudio"], path), _get(rows["bare"], path)
        out.append(f"| {label} | {_cell(ours, digits)} | {_cell(peer, digits)} | {_ratio(ours, peer)} | {target} |")
    return "\n".join(out)


def segments() -> set[str]:
    return {p.name for p in SHM.glob("ringaudio*")} if SHM.is_dir() else set()


def check_clean(before: set[str]) -> list[str]:
    """Segments this run left in /dev/shm (reclaimed if their owner is dead); should be none."""
    reclaim_segments()
    return sorted(segments() - before)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.footprint", description=__doc__.splitlines()[0])
    parser.add_argument("--idle-seconds", type=float, default=10.0, help="idle CPU window (s)")
    parser.add_argument("--runs", type=int, default=3, help="timed starts with the numba cache warm (median)")
    parser.add_argument("--cold-runs", type=int, default=1, help="starts with an empty numba cache (median)")
    parser.add_argument("--session-seconds", type=float, default=3.0, help="how long the one client receives (s)")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.cold_runs < 0 or args.idle_seconds <= 0 or args.session_seconds <= 0:
        parser.error("--runs ≥ 1, --cold-runs ≥ 0, --idle-seconds and --session-seconds > 0")
    before = segments()
    rows: dict[str, dict[str, Any]] = {}
    for kind in KINDS:
        print(f"measuring {kind} ...", file=sys.stderr, flush=True)
        rows[kind] = measure(
            kind,
            idle_seconds=args.idle_seconds,
            runs=args.runs,
            cold_runs=args.cold_runs,
            session_seconds=args.session_seconds,
        )
        print(json.dumps(rows[kind]), file=sys.stderr, flush=True)
    left = check_clean(before)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d")
    out = HERE / "results" / f"footprint-{stamp}.json"
    out.parent.mkdir(exist_ok=True)
    settings = {k: getattr(args, k) for k in ("idle_seconds", "runs", "cold_runs", "session_seconds")}
    report = {"machine": machine(), "date": stamp, **settings, "settle_s": SETTLE, "rows": rows, "left_segments": left}
    out.write_text(json.dumps(report, indent=1))
    print(table(rows))
    print(f"\n{machine()}; JSON: {out.relative_to(HERE.parent)}")
    if left:
        print(f"WARNING: shared-memory segments left behind: {left}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
