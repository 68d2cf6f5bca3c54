"""Load benchmark: ``python -m bench.load --sessions 100,400 --seconds 10 [--scenario independent|fanout]``.

For each N it starts the real server as a separate process (synthetic backend at its fastest: RTF 0,
the same text for every session, so synthesis is a cached copy and the server path is what is
measured), opens N sessions from separate client processes on loopback for a bounded time, and
reports: delivered frames %, gaps, lost, p50/p99/max inter-frame jitter, stalls (100 ms windows in
which at least 5 % of all sessions' intervals were off by more than 15 ms), first-audio latency
p50/p95/p99, server and worker CPU (psutil) and RSS. The same clients then run against a bare
websockets + uvloop server sending canned frames on the same schedule (``bench/bare_server.py``),
so the engine's overhead is a ratio. Results go to ``bench/results/load-<date>.json``.

``fanout``: one session speaks; N-1 connections ``listen`` to it (non-gating readers of one ring).

``--client raw`` (the default) generates the load with ``bench/rawclient.py``, a hand-rolled client on
raw asyncio protocols that costs a fraction of the CPU per message of ``--client websockets`` (the
``websockets`` library client below), so that the instrument does not starve the server it measures
on a shared machine. Both report the same per-session stats; each row says which one ran, and its CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import multiprocessing as mp
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from . import rawclient
from .common import HERE, LoggedProcess, machine

TEXT = "The quick brown fox jumps over the lazy dog, and then it runs away. "


# -- the load generator (client processes) --------------------------------------------------------


async def _session(url: str, seconds: float, role: dict[str, Any], out: list[dict[str, Any]], text: str) -> None:
    from websockets.asyncio.client import connect

    from ringaudio import wire as P

    stats: dict[str, Any] = {"frames": 0, "gaps": 0, "lost": 0, "first_ms": None, "intervals": []}
    stats["slow"] = bool(role.get("slow"))
    try:
        async with connect(url, compression=None, max_size=2**20, open_timeout=60) as ws:
            session = json.loads(await ws.recv())
            if role.get("speak"):
                await ws.send(json.dumps({"type": "synthesize", "text": text}))
                role["session"] = session
            elif role.get("listen"):
                owner = role["listen"]
                while "session" not in owner:
                    await asyncio.sleep(0.01)
                s = owner["session"]
                await ws.send(json.dumps({"type": "listen", "session_id": s["session_id"], "key": s["listen_key"]}))
            t0 = time.monotonic()
            # a fanned-out stream's owner stays a little longer than its listeners, who joined after it
            end = t0 + seconds + (3.0 if role.get("owner") else 0.0)
            last = None
            expected = None
            intervals = stats["intervals"]
            while (left := end - time.monotonic()) > 0:
                try:
                    msg = await asyncio.wait_for(ws.recv(), left)
                except TimeoutError:
                    break
                if isinstance(msg, str):
                    continue
                now = time.monotonic()
                seq = P.HEADER.unpack_from(msg)[4]
                if stats["first_ms"] is None:
                    stats["first_ms"] = (now - t0) * 1000
                if expected is not None and seq != expected:
                    stats["gaps"] += 1
                    stats["lost"] += max(0, seq - expected)
                expected = seq + 1
                if last is not None and stats["frames"] > 10:  # after the 200 ms burst: real-time pacing
                    intervals.append((now - last) * 1000)
                elif stats["frames"] == 10:  # (the intervals' times are counted from here)
                    stats["paced_from"] = now
                last = now
                stats["frames"] += 1
                if stats["slow"]:
                    await asyncio.sleep(0.025)  # the runbook's slow client: 25 ms per 20 ms frame
    except Exception as exc:  # a refused or dropped connection is a result, not a crash
        stats["error"] = f"{type(exc).__name__}: {exc}"
    out.append(stats)


STEADY_AFTER = 100  # intervals (2 s of 20 ms frames) before a session counts as steady
STALL_WINDOW_S, STALL_SHARE = 0.1, 0.05  # a stall: a 100 ms in which >= 5 % of all intervals were off by > 15 ms


def stalls(results: list[dict[str, Any]]) -> tuple[int, float, list[float]]:
    """Stalls that hit many sessions at once (a collection, a burst of connections, the host): how
    many STALL_WINDOW_S windows had at least STALL_SHARE of the intervals ending in them off by
    more than 15 ms, the worst window's share (%), and when each run of such windows began (s from
    the first interval: one stall's late and early intervals may fall in two windows)."""
    times, off = [], []
    for r in results:
        if r["intervals"] and r.get("paced_from") is not None:
            iv = np.asarray(r["intervals"], np.float64)
            times.append(r["paced_from"] + np.cumsum(iv) / 1000)
            off.append(np.abs(iv - 20.0) > 15.0)
    if not times:
        return 0, 0.0, []
    at, bad = np.concatenate(times), np.concatenate(off)
    window = ((at - at.min()) // STALL_WINDOW_S).astype(np.int64)
    n = np.bincount(window)
    share = np.bincount(window, weights=bad) / np.maximum(n, 1)
    busy = n >= len(times)  # (a window with fewer intervals than sessions says little: the run's ends)
    hit = busy & (share >= STALL_SHARE)
    starts = [round(float(i) * STALL_WINDOW_S, 1) for i in np.flatnonzero(hit) if i == 0 or not hit[i - 1]]
    return int(hit.sum()), round(float(share[busy].max(initial=0.0)) * 100, 2), starts


def _client_process(url: str, count: int, seconds: float, scenario: str, first: bool, queue: Any, text: str) -> None:
    import uvloop

    async def run() -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        owner: dict[str, Any] = {"speak": True, "owner": scenario == "fanout"}
        tasks = []
        for i in range(count):
            if scenario == "fanout":  # the first session of the first process speaks, the others listen
                role = owner if first and i == 0 else {"listen": owner}
            else:  # in "slow", that first session is the runbook's slow client
                role = {"speak": True, "slow": scenario == "slow" and first and i == 0}
            tasks.append(asyncio.create_task(_session(url, seconds, role, out, text)))
            if i % 50 == 49:
                await asyncio.sleep(0.05)  # do not stampede the accept queue
        await asyncio.gather(*tasks)
        return out

    queue.put(uvloop.run(run()))


CLIENTS: dict[str, Callable[..., None]] = {"raw": rawclient._client_process, "websockets": _client_process}


def _cpu(procs: list[psutil.Process]) -> float:
    """CPU seconds of the client processes so far."""
    total = 0.0
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            total += sum(proc.cpu_times()[:2])
    return total


# -- servers ------------------------------------------------------------------------------------------


class Server(LoggedProcess):
    def __init__(
        self,
        kind: str,
        sessions: int,
        scenario: str,
        backend: str = "synthetic",
        processes: int = 1,
        voice_rate: int = 48_000,
    ) -> None:
        # the synthetic voice at its fastest and (by default) at the output rate, no resampling: the
        # server path is what is measured; the espeak scenario measures synthesis and resampling
        env = {**os.environ, "RINGAUDIO__WORKER__SYNTHETIC_RTF": "0", "LOG_LEVEL": "WARNING"}
        env["RINGAUDIO__WORKER__SYNTHETIC_RATE"] = str(voice_rate)
        env["RINGAUDIO__SERVER__MAX_SESSIONS"] = str(sessions + 16)
        if kind == "ringaudio":
            cmd = [sys.executable, "-m", "ringaudio.server", "--port", "0", "--backend", backend, "--workers", "1"]
            cmd += ["--processes", str(processes)]  # each process has its worker
            env["LOG_LEVEL"] = "INFO"
        else:
            cmd = [sys.executable, "-m", "bench.bare_server", "--port", "0"]
        super().__init__(cmd, env, what=f"{kind} server")
        self.ps = psutil.Process(self.proc.pid)
        # the processes that serve: this one, or the supervisor's children (--processes N)
        self.servers = [self.ps] if processes == 1 else self.ps.children()

    def cpu(self) -> tuple[float, float]:
        """CPU seconds of the server process(es) (and a supervisor) and of their workers so far."""
        own = sum(self.ps.cpu_times()[:2])
        workers = 0.0
        for server in self.servers:
            with contextlib.suppress(psutil.Error):
                if server is not self.ps:
                    own += sum(server.cpu_times()[:2])
                for child in server.children(recursive=True):
                    # user + system + what its exited children used (an espeak-ng process per utterance)
                    workers += sum(child.cpu_times()[:4])
        return own, workers

    def rss(self) -> tuple[int, int]:
        own, workers = 0, 0
        for server in self.servers:
            with contextlib.suppress(psutil.Error):
                own += server.memory_info().rss
                for child in server.children(recursive=True):
                    workers += child.memory_info().rss
        return own, workers


def run_one(
    kind: str,
    sessions: int,
    seconds: float,
    scenario: str,
    clients: int,
    backend: str = "synthetic",
    text: str = "",
    client: str = "raw",
    processes: int = 1,
    voice_rate: int = 48_000,
) -> dict[str, Any]:
    text = text or TEXT * int(seconds / 4 + 3)
    target = CLIENTS[client]
    server = Server(kind, sessions, scenario, backend, processes, voice_rate)
    try:
        url = f"ws://127.0.0.1:{server.port}/ws"
        ctx = mp.get_context("spawn")
        queue = ctx.Queue()
        per = [sessions // clients + (1 if i < sessions % clients else 0) for i in range(clients)]
        procs = [
            ctx.Process(target=target, args=(url, n, seconds, scenario, i == 0, queue, text), daemon=True)
            for i, n in enumerate(per)
            if n
        ]
        for p in procs:
            p.start()
        loaders = [psutil.Process(p.pid) for p in procs]
        time.sleep(min(2.0, seconds / 4))  # connections open; measure the steady part
        cpu0, t0, client0 = server.cpu(), time.monotonic(), _cpu(loaders)
        step = max(1.0, seconds / 10)
        while time.monotonic() - t0 < seconds * 0.6:
            done = (time.monotonic() - t0) / (seconds * 0.6)
            print(f"\r  {kind:9s} N={sessions:<5d} [{'#' * int(done * 30):<30s}]", end="", file=sys.stderr, flush=True)
            time.sleep(step)
        cpu1, t1, client1 = server.cpu(), time.monotonic(), _cpu(loaders)
        rss = server.rss()
        results: list[dict[str, Any]] = []
        for _ in procs:
            results.extend(queue.get(timeout=seconds + 120))
        for p in procs:
            p.join(30)
        print(file=sys.stderr)
    finally:
        server.stop()
    slow = [r for r in results if r.get("slow")]
    results = [r for r in results if not r.get("slow")]  # the figures below are the healthy sessions'
    frames = sum(r["frames"] for r in results)
    intervals = np.concatenate([np.asarray(r["intervals"], np.float64) for r in results if r["intervals"]] or [[0.0]])
    jitter = np.abs(intervals - 20.0)
    # ... and once each session is past its first STEADY_AFTER intervals (2 s: 500 streams starting
    # together, the worker's first audio for all of them), as the CPU figures are
    steady = [np.asarray(r["intervals"][STEADY_AFTER:], np.float64) for r in results]
    steady_jitter = np.abs(np.concatenate([x for x in steady if len(x)] or [np.zeros(1)]) - 20.0)
    stall_windows, stall_worst, stall_at = stalls(results)
    firsts = np.asarray([r["first_ms"] for r in results if r["first_ms"] is not None] or [np.nan])
    expected = len(results) * (seconds * 50)
    wall = t1 - t0
    return {
        "server": kind,
        "client": client,
        "scenario": scenario,
        "sessions": sessions,
        "errors": sum(1 for r in results if "error" in r),
        "delivered_pct": round(100 * frames / expected, 2),
        "gaps": sum(r["gaps"] for r in results),
        "lost": sum(r["lost"] for r in results),
        "jitter_p50_ms": round(float(np.percentile(jitter, 50)), 3),
        "jitter_p99_ms": round(float(np.percentile(jitter, 99)), 3),
        "jitter_max_ms": round(float(jitter.max()), 3),
        "steady_jitter_p99_ms": round(float(np.percentile(steady_jitter, 99)), 3),
        "stall_windows": stall_windows,
        "stall_worst_pct": stall_worst,
        "stall_at_s": stall_at,
        "first_audio_p50_ms": round(float(np.nanpercentile(firsts, 50)), 2),
        "first_audio_p95_ms": round(float(np.nanpercentile(firsts, 95)), 2),
        "first_audio_p99_ms": round(float(np.nanpercentile(firsts, 99)), 2),
        "server_cpu_pct": round(100 * (cpu1[0] - cpu0[0]) / wall, 1),
        "worker_cpu_pct": round(100 * (cpu1[1] - cpu0[1]) / wall, 1),
        "client_cpu_pct": round(100 * (client1 - client0) / wall, 1),  # all the load generator's processes
        "server_rss_mb": round(rss[0] / 2**20, 1),
        "worker_rss_mb": round(rss[1] / 2**20, 1),
        "backend": backend if kind == "ringaudio" else None,
        "processes": processes if kind == "ringaudio" else 1,
        "voice_rate": voice_rate if kind == "ringaudio" else None,
        "slow_client_frames": slow[0]["frames"] if slow else None,
        "slow_client_lost": slow[0]["lost"] if slow else None,
    }


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    """Jitter p99 and server CPU against N, ringaudio beside the bare peer (needs matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(matplotlib is not installed: no plot)", file=sys.stderr)
        return
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for kind in ("ringaudio", "bare"):
        mine = [r for r in rows if r["server"] == kind]
        if not mine:
            continue
        ns = [r["sessions"] for r in mine]
        left.plot(ns, [r["jitter_p99_ms"] for r in mine], marker="o", label=kind)
        right.plot(ns, [r["server_cpu_pct"] for r in mine], marker="o", label=f"{kind} server")
        if kind == "ringaudio":
            right.plot(ns, [r["worker_cpu_pct"] for r in mine], marker="x", linestyle="--", label="ringaudio worker")
    left.set(xlabel="sessions", ylabel="p99 jitter (ms)", title="Jitter")
    right.set(xlabel="sessions", ylabel="CPU (% of one core)", title="CPU")
    left.legend()
    right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.load", description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", default="100,400", help="comma-separated N")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument(
        "--scenario",
        choices=["independent", "fanout", "slow"],
        default="independent",
        help="independent sessions; one stream fanned out to N listeners; or one slow client among N healthy",
    )
    parser.add_argument("--backend", choices=["synthetic", "espeak"], default="synthetic")
    parser.add_argument("--text", default="", help="what each session says (default: enough for the run)")
    parser.add_argument("--clients", type=int, default=1, help="client processes generating the load")
    parser.add_argument(
        "--client",
        choices=sorted(CLIENTS),
        default="raw",
        help="load generator: the lean hand-rolled client (raw) or the websockets library client",
    )
    parser.add_argument("--no-bare", action="store_true", help="skip the bare websockets baseline")
    parser.add_argument("--name", default="", help="results file name (default: load-<scenario>-<backend>-<date>)")
    parser.add_argument("--processes", default="1", help="comma-separated: ringaudio server processes (--processes)")
    parser.add_argument(
        "--voice-rate", type=int, default=48_000, help="the synthetic voice's rate (22050: every frame resampled)"
    )
    args = parser.parse_args(argv)
    if args.scenario == "fanout" and args.clients > 1:
        # the owner's session id reaches its listeners in memory: other processes would wait forever
        parser.error("--scenario fanout needs --clients 1")
    rows = []
    for n in [int(x) for x in args.sessions.split(",")]:
        runs = [("ringaudio", int(p)) for p in args.processes.split(",")] + ([] if args.no_bare else [("bare", 1)])
        for kind, procs in runs:
            row = run_one(
                kind,
                n,
                args.seconds,
                args.scenario,
                args.clients,
                args.backend,
                args.text,
                args.client,
                procs,
                args.voice_rate,
            )
            rows.append(row)
            print(json.dumps(rows[-1]), flush=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d")
    name = args.name or f"load-{args.scenario}-{args.backend}-{stamp}"
    out = HERE / "results" / f"{name}.json"
    out.write_text(json.dumps({"machine": machine(), "date": stamp, "seconds": args.seconds, "rows": rows}, indent=1))
    plot(rows, HERE / "results" / f"{name}.png")
    cols = [
        "server",
        "processes",
        "sessions",
        "delivered_pct",
        "lost",
        "jitter_p50_ms",
        "jitter_p99_ms",
        "steady_jitter_p99_ms",
        "stall_windows",
        "first_audio_p95_ms",
    ]
    cols += ["server_cpu_pct", "worker_cpu_pct", "server_rss_mb", "client_cpu_pct"]
    print("\n| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(str(r[c]) for c in cols) + " |")
    print(f"\n{machine()}; {args.seconds:g} s per run; {args.client} client; JSON: {out.relative_to(HERE.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
