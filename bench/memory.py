"""Where a server process's memory goes: ``python -m bench.memory``.

Each stage runs in a fresh interpreter that does everything the stages before it did, then reports
its RSS, PSS and USS (``/proc/self/smaps_rollup``); the differences say what each step costs:
the interpreter, NumPy, the WebSocket stack (websockets + uvloop), prometheus_client, the whole
server package (which loads no numba: its ring kernels are C), then what a worker adds: numba's
import and the resampler's kernels loaded from numba's on-disk cache (compiled once first, so no
stage compiles). An idle ``python -m ringaudio.server`` with its worker is measured by
:mod:`bench.footprint`, not here. Prints a markdown table and writes
``bench/results/memory-<date>.json``.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from typing import Any

from .common import HERE, machine

STAGES: list[tuple[str, str]] = [
    ("python", "pass"),
    ("+ numpy", "import numpy"),
    ("+ websockets, uvloop", "import websockets.asyncio.server, uvloop"),
    ("+ prometheus_client", "import prometheus_client"),
    # the server stops here: its ring kernels are C (ringaudio.kernels._ring), it never loads numba
    ("+ ringaudio.server (all of it)", "import ringaudio.server.app, sys\nassert 'numba' not in sys.modules"),
    # what a worker adds: numba, and its kernels loaded from numba's on-disk cache
    ("+ numba (import): a worker", "import numba"),
    (
        "+ resampler kernels (from the cache)",
        "from ringaudio.resample import warm\nwarm(((22_050, 48_000),))",
    ),
]

PROBE = """
import sys
def rollup():
    out = {}
    with open("/proc/self/smaps_rollup") as f:
        for line in f:
            parts = line.split()
            if parts[0] in ("Rss:", "Pss:", "Private_Clean:", "Private_Dirty:"):
                out[parts[0][:-1]] = int(parts[1]) * 1024
    return {"rss": out["Rss"], "pss": out["Pss"], "uss": out["Private_Clean"] + out["Private_Dirty"]}
import json; print(json.dumps(rollup()))
"""


def measure(upto: int) -> dict[str, int]:
    code = "\n".join(code for _, code in STAGES[: upto + 1]) + "\n" + PROBE
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=HERE.parent)
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-2000:])
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def main() -> int:
    measure(len(STAGES) - 1)  # compile (or load) every kernel once, so no stage below compiles
    rows: list[dict[str, Any]] = []
    previous: dict[str, int] | None = None
    for i, (name, _) in enumerate(STAGES):
        m = min((measure(i) for _ in range(3)), key=lambda x: x["rss"])
        step = {k: m[k] - previous[k] for k in m} if previous else dict(m)
        rows.append({"stage": name, **m, **{f"step_{k}": v for k, v in step.items()}})
        previous = m
    mb = 2**20
    print("| stage | RSS MB | PSS MB | USS MB | this step: RSS / USS MB |\n|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['stage']} | {r['rss'] / mb:.1f} | {r['pss'] / mb:.1f} | {r['uss'] / mb:.1f} "
            f"| {r['step_rss'] / mb:+.1f} / {r['step_uss'] / mb:+.1f} |"
        )
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d")
    out = HERE / "results" / f"memory-{stamp}.json"
    out.write_text(json.dumps({"machine": machine(), "date": stamp, "rows": rows}, indent=1))
    print(f"\n{machine()}; JSON: {out.relative_to(HERE.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
