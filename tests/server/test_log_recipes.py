"""The server's stdout is its JSON log and nothing else, and the README's jq recipes (the runbook's,
adapted) print what the README says they print, run by jq on a real server's log."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from websockets.sync.client import connect

ROOT = Path(__file__).resolve().parents[2]
JQ = shutil.which("jq")


def recipe(log: Path, pipeline: str) -> list[str]:
    done = subprocess.run(["bash", "-c", f"set -o pipefail; cat {log} | {pipeline}"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


@pytest.fixture(scope="module")
def logged(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    """A server's stdout and stderr, kept apart, over one session that paused under drop_oldest (so
    it lost frames) and then played to the end, at LOG_LEVEL=DEBUG (one "frame sent" line per frame)."""
    env = {
        **os.environ,
        "LOG_LEVEL": "DEBUG",
        "RINGAUDIO__WORKER__OVERFLOW": "drop_oldest",
        "RINGAUDIO__WORKER__WORKERS": "1",
        "RINGAUDIO__WORKER__SYNTHETIC_RTF": "0.05",
    }
    cmd = [sys.executable, "-m", "ringaudio.server", "--port", "0", "--backend", "synthetic"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    out: list[str] = []
    err: list[str] = []
    ready = threading.Event()
    port: list[int] = []

    def read_out() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            out.append(line)
            if not ready.is_set() and '"server listening"' in line:
                port.append(json.loads(line)["port"])
                ready.set()
        ready.set()

    def read_err() -> None:
        assert proc.stderr is not None
        err.extend(proc.stderr)

    threads = [threading.Thread(target=f, daemon=True) for f in (read_out, read_err)]
    for t in threads:
        t.start()
    try:
        assert ready.wait(120) and port, f"the server did not start: {out[-5:]} {err[-5:]}"
        with connect(f"ws://127.0.0.1:{port[0]}/ws", max_size=None, open_timeout=10) as ws:
            json.loads(ws.recv(10))
            ws.send(json.dumps({"type": "synthesize", "text": "A sentence that lasts a few seconds, " * 4}))
            for _ in range(20):
                ws.recv(10)
            ws.send(json.dumps({"type": "control", "action": "pause"}))
            time.sleep(2.0)  # the worker goes on; the ring (1 s) is overwritten
            ws.send(json.dumps({"type": "control", "action": "resume"}))
            while True:
                message = ws.recv(20)
                if isinstance(message, str) and json.loads(message).get("type") == "utterance.end":
                    break
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(30)
        for t in threads:
            t.join(10)
    assert code == 0, err[-10:]
    path = tmp_path_factory.mktemp("log") / "server.log"
    path.write_text("".join(out))
    return path, "".join(out), "".join(err)


def test_stdout_is_json_lines_only_from_the_first_line(logged: tuple[Path, str, str]) -> None:
    _, out, err = logged
    lines = out.splitlines()
    assert len(lines) > 100
    for line in lines:
        entry: dict[str, Any] = json.loads(line)  # every line, the first included
        assert {"timestamp", "level", "message", "session_id", "logger"} <= entry.keys()
    assert not any(line.startswith("{") for line in err.splitlines())  # no log line went to stderr


@pytest.mark.skipif(JQ is None, reason="jq is not installed (scripts/env.sh installs it as root)")
def test_the_readme_jq_recipes(logged: tuple[Path, str, str]) -> None:
    log, _, _ = logged
    drops = recipe(log, 'grep -i "frame.*drop"')
    assert drops and all(json.loads(line)["message"] == "Frame queue full, dropping frames" for line in drops)

    queue = [
        json.loads(line)
        for line in recipe(
            log, """jq -c 'select(.message | contains("queue")) | {timestamp, session_id, queue_size}'"""
        )
    ]
    assert queue and all(set(q) == {"timestamp", "session_id", "queue_size"} for q in queue)
    assert all(isinstance(q["queue_size"], int) for q in queue)

    rtf = [json.loads(line) for line in recipe(log, "jq -c 'select(.rtf?) | {timestamp, model_id, rtf}'")]
    assert rtf and all(r["model_id"].startswith("synthetic") and 0 < r["rtf"] < 1 for r in rtf)

    sent = recipe(log, """jq -c 'select(.message | contains("frame sent")) | {timestamp, session_id, sequence}'""")
    assert len(sent) > 100
    intervals = recipe(
        log,
        """jq -r 'select(.message | contains("frame sent")) | .timestamp' | """
        """awk '{if(p){print ($1-p)*1000"ms"} p=$1}'""",
    )
    ms = sorted(float(i.removesuffix("ms")) for i in intervals)
    assert 5 < ms[len(ms) // 2] < 60  # ~20 ms (a sanity bound: this machine is shared)

    high = recipe(log, """jq 'select(.queue_size? > 40) | "WARNING: Queue at \\(.queue_size)/50"'""")
    assert high and all(line.startswith('"WARNING: Queue at ') and line.endswith('/50"') for line in high)

    gaps = recipe(
        log,
        """jq -r 'select(.frame_sequence?) | .frame_sequence' | """
        """awk 'BEGIN{prev=-1} {if(prev>=0 && $1!=prev+1){print "GAP: "prev" -> "$1} prev=$1}'""",
    )
    told = [
        json.loads(line)
        for line in recipe(log, """jq -c 'select(.message == "Frame sequence gap detected") | {expected, received}'""")
    ]
    assert gaps and len(gaps) == len(told)
    for gap, t in zip(gaps, told, strict=True):
        before, after = (int(x) for x in gap.removeprefix("GAP: ").split(" -> "))
        assert (before + 1, after) == (t["expected"], t["received"])

    synth = recipe(log, "jq -c 'select(.synthesis_duration_ms?) | {timestamp, duration_ms: .synthesis_duration_ms}'")
    wait = recipe(log, "jq -c 'select(.queue_wait_ms?) | {timestamp, wait_ms: .queue_wait_ms}'")
    assert synth and wait
