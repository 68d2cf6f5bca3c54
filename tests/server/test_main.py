"""``python -m ringaudio.server``'s flags: the last configuration layer, checked like the others."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ringaudio.errors import ConfigError
from ringaudio.server.__main__ import configure

ROOT = Path(__file__).resolve().parents[2]


def test_the_flags_land_in_the_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RINGAUDIO__WORKER__WORKERS", "3")
    monkeypatch.setenv("LOG_LEVEL", "ERROR")
    args, cfg = configure(["--workers", "2", "--backend", "synthetic", "--log-level", "debug", "--port", "0"])
    assert (cfg.worker.workers, cfg.worker.backend, cfg.log_level) == (2, "synthetic", "DEBUG")
    assert args.port == 0
    _, cfg = configure([])
    assert (cfg.worker.workers, cfg.log_level) == (3, "ERROR")  # no flag: the environment's


def test_a_bad_flag_is_a_config_error_naming_the_key() -> None:
    with pytest.raises(ConfigError, match=r"^worker\.workers must be auto or an integer in 1\.\.64, got 0$"):
        configure(["--workers", "0"])


def test_a_bad_flag_exits_2_with_one_line() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RINGAUDIO") and k != "LOG_LEVEL"}
    cmd = [sys.executable, "-m", "ringaudio.server", "--port", "0", "--workers", "0"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=30, env=env, cwd=ROOT)
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "configuration error: worker.workers must be auto or an integer in 1..64, got 0"
    ]
