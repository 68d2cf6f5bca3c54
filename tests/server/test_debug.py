"""``GET /debug/sessions``: the token whenever one is set, every field documented, no secret in it,
sessions gone when they close; and the consumption rate it reports."""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from websockets.sync.client import connect

from ringaudio.server.debug import consumed_ratio

from .conftest import ServerProcess, wait_until

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def get(url: str, token: str | None = None) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as answer:
            body = answer.read()
            return answer.status, json.loads(body) if answer.headers.get_content_type() == "application/json" else body
    except urllib.error.HTTPError as exc:
        return exc.code, None


def test_consumed_ratio() -> None:
    period = 0.02
    steady = [(t / 4, t / 4 / period) for t in range(13)]  # 3 s of a client keeping up
    assert consumed_ratio(steady, 3.0, period) == 1.0
    half = [(t / 4, t / 8 / period) for t in range(13)]
    assert consumed_ratio(half, 3.0, period) == 0.5
    assert consumed_ratio(steady[:3], 0.5, period) is None  # under a second of samples
    assert consumed_ratio(steady, 10.0, period) is None  # all older than the window
    assert consumed_ratio([(0.0, 10.0), (2.0, 5.0)], 2.0, period) == 0.0  # never negative


@pytest.fixture(scope="module")
def guarded() -> Any:
    srv = ServerProcess({"RINGAUDIO_TOKEN": "tok", "RINGAUDIO__SERVER__PUBLIC_METRICS": "true"})
    yield srv
    assert srv.stop() == 0


def test_the_token_guards_it_even_with_public_metrics(guarded: ServerProcess) -> None:
    assert get(f"{guarded.http}/metrics")[0] == 200  # public
    assert get(f"{guarded.http}/debug/sessions")[0] == 401
    assert get(f"{guarded.http}/debug/sessions", "wrong")[0] == 401
    status, body = get(f"{guarded.http}/debug/sessions", "tok")
    assert status == 200 and body["sessions"] == [] and body["workers"]["alive"] == 1


def test_each_session_in_figures_documented_and_without_secrets(guarded: ServerProcess) -> None:
    url = f"{guarded.url}?token=tok"
    with connect(url, max_size=None) as ws, connect(url, max_size=None) as other:
        hello = json.loads(ws.recv(10))
        json.loads(other.recv(10))
        other.send(json.dumps({"type": "listen", "session_id": hello["session_id"], "key": hello["listen_key"]}))
        ws.send(json.dumps({"type": "synthesize", "text": "Hello there, this is a test."}))
        frames = 0
        while frames < 10:
            frames += isinstance(ws.recv(10), bytes)
        status, body = get(f"{guarded.http}/debug/sessions", "tok")
        assert status == 200
        text = json.dumps(body)
        assert hello["listen_key"] not in text
        roles = {s["session_id"]: s["role"] for s in body["sessions"]}
        assert roles[hello["session_id"]] == "owner" and sorted(roles.values()) == ["listener", "owner"]
        mine = next(s for s in body["sessions"] if s["session_id"] == hello["session_id"])
        assert mine["state"] in ("streaming", "idle") and mine["frames_sent"] >= 10
        assert mine["ring_depth"] is not None and mine["socket_send_queue_bytes"] >= 0
        table = README[README.index("### `GET /debug/sessions`") :]
        documented = set(re.findall(r"`([a-z_]+)`", table[: table.index("\n## ")]))
        assert set(mine) <= documented, set(mine) - documented
        assert {k for k in body if k != "sessions"} <= documented | {"workers"}
    wait_until(lambda: get(f"{guarded.http}/debug/sessions", "tok")[1]["sessions"] == [])
