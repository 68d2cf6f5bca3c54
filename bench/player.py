"""The browser player per network scenario, in real headless Chromium: ``python -m bench.player``.

For each scenario a fresh server (synthetic voice) and a fresh browser play the same text through
``bench/netsim`` (or directly); printed per scenario: underruns, the target the buffer settled at,
the jitter it measured, flushes, what the player reports as sent-to-heard latency, gaps and lost
frames, and the CPU of the browser's processes (% of one core over the run, psutil). JSON lands in
``bench/results/``.
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import date
from pathlib import Path
from typing import Any

import psutil

from bench.netsim import Impairment, NetSim
from tests.server.conftest import ServerProcess
from tests.web.test_player import ARGS, CHROMIUM, TEXT, WATCH

RESULTS = Path(__file__).parent / "results"
SCENARIOS: dict[str, Impairment | None] = {
    "loopback": None,
    "100 ms ± 30 ms jitter": Impairment(delay_ms=100, jitter_ms=30, seed=7),
    "2 s stall at 4 s": Impairment(stall_every_s=4.0, stall_ms=2000),
    "loss-like stalls (2 %, 200 ms)": Impairment(delay_ms=20, loss_stall_p=0.02, loss_stall_ms=200, seed=3),
}


def browser_cpu(browser_pid: int) -> float:
    procs = [psutil.Process(browser_pid), *psutil.Process(browser_pid).children(recursive=True)]
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


def run(name: str, impairment: Impairment | None, text: str) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    srv = ServerProcess()
    try:
        with sync_playwright() as p:
            b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
            root = next(c for c in psutil.Process().children(recursive=True) if "chrom" in c.name())
            page = b.new_page()
            page.goto(srv.http + "/")
            cpu0, t0 = browser_cpu(root.pid), time.monotonic()
            if impairment is None:
                got = page.evaluate(WATCH, {"text": text, "seconds": 60})
            else:
                with NetSim.running(srv.port, down=impairment) as sim:
                    page.goto(f"{srv.http}/?ws=ws://127.0.0.1:{sim.port}/ws")
                    got = page.evaluate(WATCH, {"text": text, "seconds": 60})
            cpu = (browser_cpu(root.pid) - cpu0) / (time.monotonic() - t0) * 100
            b.close()
    finally:
        srv.stop()
    s = got["stats"]
    return {
        "scenario": name,
        "frames": got["end"]["frames"] if got["end"] else None,
        "underruns": s["underruns"],
        "target_ms": round(s["targetMs"]),
        "jitter_ms": round(s["jitterMs"], 1),
        "flushes": s["flushes"],
        "end_to_end_ms": round(s["endToEndMs"] or 0),
        "gaps": s["gaps"],
        "lost": s["lost"],
        "browser_cpu_pct": round(cpu, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.player", description=__doc__)
    parser.add_argument("--repeat", type=int, default=2, help="how many times the text is said (one utterance)")
    args = parser.parse_args()
    rows = [run(name, imp, TEXT * args.repeat) for name, imp in SCENARIOS.items()]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"player-{date.today()}.json").write_text(json.dumps(rows, indent=1))
    keys = list(rows[0])
    print("| " + " | ".join(keys) + " |")
    print("|" + "---|" * len(keys))
    for r in rows:
        print("| " + " | ".join(str(r[k]) for k in keys) + " |")


if __name__ == "__main__":
    main()
