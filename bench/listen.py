"""What one listener hears over an impaired link: ``python -m bench.listen`` (``--short``: 5 s runs).

For each scenario × overflow policy (``block``, ``drop_oldest``) a fresh real server is started
(``python -m ringaudio.server --port 0 --backend synthetic``, one worker, the synthetic voice at 50×
real time), one client connects (through ``bench.netsim`` where the scenario impairs the link),
synthesizes about ``--seconds`` of audio and receives it until ``utterance.end``. Measured per run:

- frames delivered / expected (``utterance.end``'s ``frames``), lost (sequence numbers never
  received), gaps, reported lost (sum of ``overrun.lost``);
- first audio (synthesize sent → first frame received) and arrival jitter (p50/p99 of
  |interval − 20 ms| between arrivals, after the 200 ms burst);
- underruns of a simulated 200 ms playout buffer (:func:`playout`; not for ``slow25``, whose reads
  are its consumption: its real-time factor is reported instead);
- the server's view: seconds from "session opened" to the first "Client not consuming frames fast
  enough", and how many times each of the runbook's lines was logged.

The scenarios (each row of the JSON says what it modelled in ``what``, ``up`` and ``down``):

- ``clean``: loopback, no proxy.
- ``slow25``: the runbook's client, 25 ms of processing after each 20 ms frame, no ``ack``; no proxy.
- ``delay100``: 50 ms each way (a 100 ms round trip).
- ``jitter100±30``: 50 ± 15 ms each way (uniform, order-keeping): the round trip of ``delay100``
  ± 30 ms; the audio itself sees ± 15 ms.
- ``loss5``: 5 % packet loss on a 20 ms round trip (10 ms each way), as TCP shows it: a stall of the
  audio direction while the lost segment is recovered (netsim's loss-stalls; TCP cannot lose bytes).
  Calibration: netsim draws a stall per chunk it reads, and a chunk is one 1 948-byte frame
  message (the server writes one per 20 ms); on a 1 500-byte MTU path (MSS 1 448) that is two
  segments, so p = 1 − 0.95² = 0.0975 per chunk. A stall of 50 ms is fast-retransmit recovery: three
  duplicate ACKs need the next 1.5 frames (≈ 30 ms) plus one round trip (20 ms). RTO-length (200 ms)
  stalls are not modelled. Real loss (``ip netns`` + netem/nft) is not possible here: the kernel has
  no netem and neither ``nft`` nor ``iptables`` is installed.
- ``cap512``: the audio direction capped at 512 kbit/s, below the stream's 779 kbit/s (50 × 1 948 bytes
  of WebSocket messages per second).
- ``stall2s``: one 2 s stall of the audio direction half-way through the utterance. netsim's stalls are
  periodic from the connection's start, so the client waits 4 s before it synthesizes and the stall
  period is 4 s + half the audio: the next window would come after the stream has ended.

Only the audio (down) direction is impaired in ``loss5`` (beyond its base delay), ``cap512`` and
``stall2s``: the up direction carries one ``synthesize`` (and the client's pings). The proxy runs in
the client's event loop and stops reading at 16 KiB queued per direction (netsim's default: 256 KiB;
``--proxy-queue-kb``; see :data:`PROXY_QUEUE_BYTES`). Results:
``bench/results/listen-<seconds>s-<date>[-<n>].json`` (one file per run); a Markdown table on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import itertools
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from . import netns
from .common import HERE, LoggedProcess, machine
from .netsim import Impairment, NetSim

FRAME_MS = 20
PREBUFFER_MS = 200  # the server's initial burst, and the simulated player's buffer
FRAME_WIRE_BYTES = 24 + 1920 + 4  # header + PCM + the WebSocket frame header (16-bit length)
MSS = 1448  # a 1 500-byte MTU path with TCP timestamps
SENTENCE = "This is a sentence that keeps the voice busy for a while."  # 3.9 s of synthetic speech
POLICIES = ("block", "drop_oldest")
STALL_WAIT_S = 4.0  # stall2s: the client's wait before it synthesizes (see the module's docstring)
STALL_MS = 2000.0
SEGMENTS_PER_FRAME = math.ceil(FRAME_WIRE_BYTES / MSS)  # 2
LOSS_P = 1 - (1 - 0.05) ** SEGMENTS_PER_FRAME  # per chunk (one frame): 5 % of its segments
LOSS_STALL_MS = 50.0
SEED = 1
# What the proxy may hold per direction before it stops reading (netsim's default is 256 KiB). What it
# holds, the proxy's kernel has acknowledged, so the server cannot see it; on a real path those bytes
# would be in flight, in the server's send queue. 16 KiB (8 frames, 160 ms of audio) is enough for the
# 50 ms of audio a 50 ms one-way delay holds and keeps the server's view close to a real path's (with
# 256 KiB, 2.7 s of audio, a 2 s stall never reaches the server at all). The bound is checked after a
# read, and one read takes up to 64 KiB (netsim's READ_SIZE): what the proxy hides peaks at 16 + 64 KiB.
PROXY_QUEUE_BYTES = 16 * 1024
MESSAGES = {  # the runbook's lines, and what the table calls them
    "Client not consuming frames fast enough": "slow",
    "Frame queue depth": "depth",
    "Frame sequence gap detected": "gap",
    "Frame queue full, dropping frames": "full",
}
CONSUMING_AGAIN = "Client consuming again"  # the end of a slow-client episode (kept in the JSON)
EXTRA_MESSAGES = (CONSUMING_AGAIN, "session opened", "session closed")


# -- the metrics (pure) -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Playout:
    underruns: int  # times the player needed a frame that had not arrived
    starved_ms: float  # silence because of them (until the buffer held prebuffer_ms again)
    concealed: int  # frames lost in sequence, played as 20 ms of silence each (not underruns)
    start_ms: float | None  # when playback started (same clock as the arrivals)
    end_ms: float | None  # when the last frame finished playing


def playout(
    arrivals_ms: Sequence[float],
    sequences: Sequence[int],
    frame_ms: float = FRAME_MS,
    prebuffer_ms: float = PREBUFFER_MS,
) -> Playout:
    """A player with a ``prebuffer_ms`` buffer fed by frames arriving at ``arrivals_ms``.

    The timeline has one slot per sequence number from the first received to the last. A received
    frame is playable from its arrival; a lost one (a gap in sequence) from the arrival of the next
    received frame, when the gap becomes known: it plays as silence (``concealed``). Playback starts
    once ``prebuffer_ms`` of slots are playable (or all of them are), then takes one slot per
    ``frame_ms`` of wall time. A slot not playable when its turn comes is an underrun: the player is
    silent until ``prebuffer_ms`` are buffered again (or the rest of the stream is there), like
    :class:`ringaudio.playback.JitterBuffer`. Arrivals must be in sequence order (one TCP stream).
    """
    if len(arrivals_ms) != len(sequences):
        raise ValueError("one arrival time per sequence number")
    if not sequences:
        return Playout(0, 0.0, 0, None, None)
    if any(b <= a for a, b in itertools.pairwise(sequences)):
        raise ValueError("sequences must increase (frames arrive in order)")
    avail: list[float] = []
    lost: list[bool] = []
    prev = sequences[0] - 1
    for seq, t in zip(sequences, arrivals_ms, strict=True):
        missing = seq - prev - 1
        avail += [t] * (missing + 1)  # the missing ones become known with this arrival
        lost += [True] * missing + [False]
        prev = seq
    for i in range(1, len(avail)):  # (timestamps from one clock never go back; be safe anyway)
        avail[i] = max(avail[i], avail[i - 1])
    n, need = len(avail), max(1, round(prebuffer_ms / frame_ms))

    def ready(i: int) -> float:  # when slots i .. i+need-1 (or the rest) are all playable
        return avail[min(i + need, n) - 1]

    clock = start = ready(0)
    underruns, starved = 0, 0.0
    for i in range(n):
        if avail[i] > clock:
            underruns += 1
            resume = ready(i)
            starved += resume - clock
            clock = resume
        clock += frame_ms
    return Playout(underruns, round(starved, 3), sum(lost), round(start, 3), round(clock, 3))


def jitter(arrivals_ms: Sequence[float], frame_ms: float = FRAME_MS, skip: int = PREBUFFER_MS // FRAME_MS) -> dict:
    """p50/p99/max of |interval − frame_ms| between arrivals, from the end of the ``skip``-frame burst
    (the interval into frame ``skip`` is the first counted). None where there are too few frames."""
    t = np.asarray(arrivals_ms[max(0, skip - 1) :], np.float64)
    if len(t) < 2:
        return {"p50_ms": None, "p99_ms": None, "max_ms": None}
    dev = np.abs(np.diff(t) - frame_ms)
    return {k: round(float(np.percentile(dev, q)), 3) for k, q in (("p50_ms", 50), ("p99_ms", 99), ("max_ms", 100))}


@dataclass(frozen=True)
class Accounting:
    delivered: int  # frames received
    expected: int | None  # frames the stream had (utterance.end), None if it never ended
    lost: int  # sequence numbers of the stream never received
    gaps: int  # places where the received sequence jumps (a missing head or tail counts as one)
    reported: int  # sum of the overrun events' ``lost``
    duplicates: int  # sequence numbers received twice (never, by the contract)


def account(
    sequences: Sequence[int], expected: int | None, first: int = 0, overruns: Sequence[dict[str, Any]] = ()
) -> Accounting:
    """Lost and gaps of a stream that should hold ``expected`` frames from sequence ``first``."""
    received = set(sequences)
    last = first + expected - 1 if expected is not None else max(sequences, default=first - 1)
    inside = sum(1 for s in received if first <= s <= last)
    gaps = sum(1 for a, b in itertools.pairwise(sequences) if b != a + 1)
    if sequences and sequences[0] != first:
        gaps += 1
    if sequences and max(sequences) < last:
        gaps += 1
    return Accounting(
        delivered=len(sequences),
        expected=expected,
        lost=(last - first + 1) - inside,
        gaps=gaps,
        reported=sum(int(o["lost"]) for o in overruns),
        duplicates=len(sequences) - len(received),
    )


def consumption(arrivals_ms: Sequence[float], frame_ms: float = FRAME_MS) -> float | None:
    """The client's reads as a multiple of real time (1.0: one frame per frame_ms)."""
    if len(arrivals_ms) < 2 or arrivals_ms[-1] <= arrivals_ms[0]:
        return None
    return round((len(arrivals_ms) - 1) * frame_ms / (arrivals_ms[-1] - arrivals_ms[0]), 3)


def per_second(arrivals_ms: Sequence[float]) -> list[int]:
    """Frames received in each second from the synthesize: the timeline at a glance (stalls show as 0)."""
    if not arrivals_ms:
        return []
    out = [0] * (int(max(arrivals_ms) // 1000) + 1)
    for t in arrivals_ms:
        out[int(max(t, 0.0) // 1000)] += 1
    return out


def detection(log: Sequence[dict[str, Any]]) -> float | None:
    """Seconds from "session opened" to the first "Client not consuming frames fast enough"."""
    opened = next((e["timestamp"] for e in log if e.get("message") == "session opened"), None)
    slow = next((e["timestamp"] for e in log if e.get("message") == "Client not consuming frames fast enough"), None)
    return None if opened is None or slow is None else round(slow - opened, 3)


def counts(log: Sequence[dict[str, Any]]) -> dict[str, int]:
    return {m: sum(1 for e in log if e.get("message") == m) for m in (*MESSAGES, *EXTRA_MESSAGES)}


def text_of(seconds: float) -> str:
    """Words of :data:`SENTENCE`, over and over, until the synthetic voice speaks them for ``seconds``."""
    from ringaudio.tts.backends import SyntheticBackend

    voice, words = SyntheticBackend(), itertools.cycle(SENTENCE.split())
    text = next(words)
    while voice.duration(text) < seconds:
        text += " " + next(words)
    return text


# -- the scenarios --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    name: str
    what: str
    up: Impairment | None = None  # None and down None: no proxy at all
    down: Impairment | None = None
    slow_ms: float = 0.0
    wait_s: float = 0.0  # between the session event and the synthesize
    netloss: float = 0.0  # real packet loss, % each way: the server runs in a lossy namespace (bench.netns)


def scenarios(seconds: float) -> dict[str, Scenario]:
    """The scenarios for ``seconds`` of audio (``stall2s`` places its stall by it)."""
    every = STALL_WAIT_S + seconds / 2
    items = [
        Scenario("clean", "loopback, no proxy"),
        Scenario(
            "slow25",
            "no proxy; the client sleeps 25 ms after each frame (reads at 0.8× real time) and sends no ack",
            slow_ms=25.0,
        ),
        Scenario(
            "delay100",
            "50 ms each way (100 ms round trip)",
            up=Impairment(delay_ms=50, seed=SEED),
            down=Impairment(delay_ms=50, seed=SEED),
        ),
        Scenario(
            "jitter100±30",
            "50 ± 15 ms each way, uniform, order-keeping (round trip 100 ± 30 ms; the audio sees ± 15 ms)",
            up=Impairment(delay_ms=50, jitter_ms=15, seed=SEED),
            down=Impairment(delay_ms=50, jitter_ms=15, seed=SEED),
        ),
        Scenario(
            "loss5",
            f"10 ms each way; down: a {LOSS_STALL_MS:g} ms stall before a chunk with p = {LOSS_P:.4f} (5 % of "
            f"{MSS}-byte segments, {SEGMENTS_PER_FRAME} per frame; fast-retransmit recovery, 20 ms round trip)",
            up=Impairment(delay_ms=10, seed=SEED),
            down=Impairment(delay_ms=10, loss_stall_p=LOSS_P, loss_stall_ms=LOSS_STALL_MS, seed=SEED),
        ),
        Scenario(
            "netloss5",
            "real loss: the server in a network namespace of its own behind a veth pair, nftables dropping 5 % "
            "of the packets each way inside it (root, ip and nft needed; skipped otherwise)",
            netloss=5.0,
        ),
        Scenario(
            "cap512",
            "down capped at 512 kbit/s (the stream needs 779 kbit/s of WebSocket messages)",
            up=Impairment(),
            down=Impairment(rate_kbit=512, seed=SEED),
        ),
        Scenario(
            "stall2s",
            f"down stalled once for {STALL_MS / 1000:g} s, {seconds / 2:g} s into the audio (synthesize sent "
            f"{STALL_WAIT_S:g} s after connecting; stall period {every:g} s from the connection)",
            up=Impairment(),
            down=Impairment(stall_every_s=every, stall_ms=STALL_MS, seed=SEED),
            wait_s=STALL_WAIT_S,
        ),
    ]
    return {s.name: s for s in items}


# -- I/O: the server, the client ---------------------------------------------------------------------------


class Server(LoggedProcess):
    """``python -m ringaudio.server`` on a free port (in a lossy namespace if given); every JSON line
    it logs is kept."""

    def __init__(self, policy: str, ns: netns.Namespace | None = None) -> None:
        env = {
            **os.environ,
            "RINGAUDIO__WORKER__OVERFLOW": policy,
            "RINGAUDIO__WORKER__SYNTHETIC_RTF": "0.02",
            "RINGAUDIO__WORKER__WORKERS": "1",
            "LOG_LEVEL": "INFO",
        }
        cmd = [sys.executable, "-m", "ringaudio.server", "--port", "0", "--backend", "synthetic"]
        if ns is not None:
            cmd = ns.command(*cmd, "--host", ns.ns_ip)
        self.host = "127.0.0.1" if ns is None else ns.ns_ip
        super().__init__(cmd, env)


@dataclass
class Capture:
    """What the client saw; times in ms from the synthesize (monotonic clock)."""

    arrivals_ms: list[float] = field(default_factory=list)
    sequences: list[int] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)  # each with "t_ms"
    error: str | None = None


async def listen(url: str, text: str, slow_ms: float, wait_s: float, timeout: float) -> Capture:
    """Connect, (wait,) synthesize ``text``, receive until its ``utterance.end`` (or its error)."""
    from websockets.asyncio.client import connect

    from ringaudio import wire as P

    cap = Capture()
    try:
        async with connect(url, max_size=2**20, compression=None, open_timeout=30) as ws:
            json.loads(await ws.recv())  # session
            await asyncio.sleep(wait_s)
            sent = time.monotonic()
            await ws.send(json.dumps({"type": "synthesize", "text": text}))
            async with asyncio.timeout(timeout):
                while True:
                    msg = await ws.recv()
                    t_ms = (time.monotonic() - sent) * 1000
                    if isinstance(msg, str):
                        ev = {**json.loads(msg), "t_ms": round(t_ms, 3)}
                        cap.events.append(ev)
                        if ev["type"] == "utterance.end" or (ev["type"] == "error" and "utterance_id" in ev):
                            break
                        continue
                    cap.arrivals_ms.append(t_ms)
                    cap.sequences.append(P.decode_header(msg).sequence)
                    if slow_ms:
                        await asyncio.sleep(slow_ms / 1000)  # the runbook's processing, after each frame
    except Exception as exc:  # a dropped connection or a timeout is a result
        cap.error = f"{type(exc).__name__}: {exc}"
    return cap


async def _client(
    port: int, sc: Scenario, text: str, timeout: float, proxy_queue: int, host: str = "127.0.0.1"
) -> tuple[Capture, dict[str, Any] | None]:
    if sc.up is None and sc.down is None:
        return await listen(f"ws://{host}:{port}/ws", text, sc.slow_ms, sc.wait_s, timeout), None
    async with NetSim(port, up=sc.up, down=sc.down, max_queue_bytes=proxy_queue) as sim:
        cap = await listen(f"ws://127.0.0.1:{sim.port}/ws", text, sc.slow_ms, sc.wait_s, timeout)
        return cap, sim.counters()


def run_one(scenario: str, policy: str, seconds: float, proxy_queue: int = PROXY_QUEUE_BYTES) -> dict[str, Any]:
    """One fresh server, one client, one utterance of about ``seconds``: a row of the table."""
    sc = scenarios(seconds)[scenario]
    text = text_of(seconds)
    with contextlib.ExitStack() as stack:
        ns = stack.enter_context(netns.lossy(sc.netloss)) if sc.netloss else None
        server = Server(policy, ns)
        t0 = time.monotonic()
        try:
            cap, net = asyncio.run(_client(server.port, sc, text, seconds * 4 + 30, proxy_queue, server.host))
        finally:
            wall = time.monotonic() - t0
            code = server.stop()
    end = next((e for e in cap.events if e["type"] == "utterance.end"), None)
    acc = account(cap.sequences, end["frames"] if end else None, 0, [e for e in cap.events if e["type"] == "overrun"])
    play = None if sc.slow_ms else playout(cap.arrivals_ms, cap.sequences)
    logged = counts(server.log)
    row: dict[str, Any] = {
        "scenario": scenario,
        "policy": policy,
        "what": sc.what,
        "seconds": seconds,
        "audio_ms": end["duration_ms"] if end else None,
        **asdict(acc),
        "first_audio_ms": round(cap.arrivals_ms[0], 2) if cap.arrivals_ms else None,
        "jitter": jitter(cap.arrivals_ms),
        "playout": None if play is None else asdict(play),
        "consumption_x": consumption(cap.arrivals_ms),
        "receive_ms": round(cap.arrivals_ms[-1] - cap.arrivals_ms[0], 1) if cap.arrivals_ms else None,
        "frames_per_s": per_second(cap.arrivals_ms),
        "detection_s": detection(server.log),
        "logged": logged,
        "log": [e for e in server.log if e.get("message") in (*MESSAGES, CONSUMING_AGAIN)],
        "overruns": [e for e in cap.events if e["type"] == "overrun"],
        "errors": [e for e in cap.events if e["type"] == "error"],
        "client_error": cap.error,
        "server_exit": code,
        "wall_s": round(wall, 2),
        "netsim": net,
        "proxy_queue_bytes": None if net is None else proxy_queue,
        "up": None if sc.up is None else asdict(sc.up),
        "down": None if sc.down is None else asdict(sc.down),
    }
    if sc.wait_s and row["detection_s"] is not None:
        row["detection_after_synthesize_s"] = round(row["detection_s"] - sc.wait_s, 3)
    if net is not None:
        down = net["down"]
        per_chunk = down["loss_stalls"] / down["chunks"] if down["chunks"] else 0.0
        row["loss_stalls_per_chunk"] = round(per_chunk, 4)
        # the packet loss that many stalls stand for, a chunk being one frame of SEGMENTS_PER_FRAME packets
        row["packet_loss_equiv"] = round(1 - (1 - per_chunk) ** (1 / SEGMENTS_PER_FRAME), 4)
    return row


# -- the table -------------------------------------------------------------------------------------------


def _cell(v: Any, nd: int = 1) -> str:
    if v is None:
        return "–"
    return f"{v:.{nd}f}" if isinstance(v, float) else str(v)


def table(rows: Sequence[dict[str, Any]]) -> str:
    head = ["scenario", "policy", "delivered/expected", "lost", "reported", "gaps", "first audio ms",
            "jitter p50/p99 ms", "underruns (n / starved ms)", "detection s"]  # fmt: skip
    head.append("logged " + "/".join(MESSAGES.values()))
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        j, p, log = r["jitter"], r["playout"], r["logged"]
        if p is None:
            under = f"n/a (reads at {_cell(r['consumption_x'], 2)}× real time)"
        else:
            under = f"{p['underruns']} / {_cell(p['starved_ms'], 0)}"
            if p["concealed"]:
                under += f" (+{p['concealed']} lost concealed)"
        det = _cell(r["detection_s"])
        if "detection_after_synthesize_s" in r:
            det += f" ({_cell(r['detection_after_synthesize_s'])} after synthesize)"
        cells = [
            r["scenario"],
            r["policy"],
            f"{r['delivered']}/{_cell(r['expected'])}",
            str(r["lost"]),
            str(r["reported"]),
            str(r["gaps"]),
            _cell(r["first_audio_ms"]),
            f"{_cell(j['p50_ms'])} / {_cell(j['p99_ms'])}",
            under,
            det,
            "/".join(str(log[m]) for m in MESSAGES),
        ]
        if r["client_error"] or r["server_exit"] != 0:
            cells[0] += f" ⚠ {r['client_error'] or ''} exit {r['server_exit']}"
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.listen", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="audio per run (default 20)")
    parser.add_argument("--short", action="store_true", help="5 s per run (the smoke version)")
    parser.add_argument("--scenario", default=",".join(scenarios(20)), help="comma-separated (default: all)")
    parser.add_argument("--policy", default=",".join(POLICIES), help="comma-separated (default: both)")
    parser.add_argument(
        "--proxy-queue-kb",
        type=int,
        default=PROXY_QUEUE_BYTES // 1024,
        help="KiB the proxy holds per direction before it stops reading (default 16; netsim's own: 256)",
    )
    args = parser.parse_args(argv)
    seconds = 5.0 if args.short else args.seconds
    known = scenarios(seconds)
    names, policies = args.scenario.split(","), args.policy.split(",")
    bad = [n for n in names if n not in known] + [p for p in policies if p not in POLICIES]
    if bad:
        parser.error(f"unknown: {', '.join(bad)} (scenarios: {', '.join(known)}; policies: {', '.join(POLICIES)})")
    rows = []
    t0 = time.monotonic()
    for name in names:
        if known[name].netloss and netns.available() is not None:
            print(f"  {name:14s} skipped: {netns.available()}", file=sys.stderr, flush=True)
            continue
        for policy in policies:
            print(f"  {name:14s} {policy:12s} ...", end="", file=sys.stderr, flush=True)
            rows.append(run_one(name, policy, seconds, args.proxy_queue_kb * 1024))
            print(f" {rows[-1]['wall_s']:.1f} s", file=sys.stderr, flush=True)
    took = time.monotonic() - t0
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d")
    queue = "" if args.proxy_queue_kb * 1024 == PROXY_QUEUE_BYTES else f"-q{args.proxy_queue_kb}k"
    out = HERE / "results" / f"listen-{seconds:g}s{queue}-{stamp}.json"
    for n in itertools.count(2):  # one file per run: a second run the same day is -2, and so on
        if not out.exists():
            break
        out = out.with_name(f"listen-{seconds:g}s{queue}-{stamp}-{n}.json")
    out.parent.mkdir(exist_ok=True)
    doc = {
        "machine": machine(),
        "python": sys.version.split()[0],
        "date": stamp,
        "seconds": seconds,
        "proxy_queue_bytes": args.proxy_queue_kb * 1024,
        "took_s": round(took, 1),
        "rows": rows,
    }
    out.write_text(json.dumps(doc, indent=1, ensure_ascii=False))
    print(table(rows))
    print(
        f"\n{machine()}; {seconds:g} s of audio per run, a fresh server per row (synthetic voice at 50× real "
        f"time, 1 worker); took {took:.0f} s; JSON: {out.relative_to(HERE.parent)}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
