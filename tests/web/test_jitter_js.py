"""The player's pure JavaScript (ringaudio/web/jitter.js), unit-tested by Node's own test runner."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

NODE = shutil.which("node")


@pytest.mark.skipif(NODE is None, reason="node is not installed")
def test_jitter_policy_flow_control_and_playout_in_node() -> None:
    here = Path(__file__).parent
    run = subprocess.run([NODE, "--test", str(here / "jitter.test.mjs")], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert "# fail 0" in run.stdout and "# pass 8" in run.stdout
