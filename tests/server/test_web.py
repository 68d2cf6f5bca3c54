"""The browser player's files on the server's port: types, caching, isolation, the token."""

from __future__ import annotations

import urllib.error
import urllib.request

import pytest

from .conftest import ServerProcess


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=10) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def test_the_page_and_the_modules_are_served_with_types_caching_and_isolation(server: ServerProcess) -> None:
    status, headers, body = get(server.http + "/")
    assert status == 200 and headers["Content-Type"].startswith("text/html") and b"RingAudioPlayer" in body
    assert headers["Cross-Origin-Opener-Policy"] == "same-origin"
    assert headers["Cross-Origin-Embedder-Policy"] == "require-corp"
    assert headers["Cache-Control"] == "no-cache"
    for name in ("ringaudio-player.js", "ringaudio-worklet.js", "jitter.js"):
        status, headers, body = get(f"{server.http}/static/{name}")
        assert status == 200 and headers["Content-Type"].startswith("text/javascript"), name
        assert "max-age" in headers["Cache-Control"] and headers["X-Content-Type-Options"] == "nosniff"
        assert int(headers["Content-Length"]) == len(body) > 500
        again, _, empty = get(f"{server.http}/static/{name}", {"If-None-Match": headers["ETag"]})
        assert again == 304 and empty == b""
    assert get(server.http + "/static/nope.js")[0] == 404
    assert get(server.http + "/static/../ringaudio/server/app.py")[0] == 404


@pytest.mark.parametrize("path", ["/", "/static/ringaudio-player.js"])
def test_the_token_and_the_origin_list_apply_to_the_files(path: str) -> None:
    srv = ServerProcess({"RINGAUDIO_TOKEN": "s3cret", "RINGAUDIO__SERVER__ALLOWED_ORIGINS": '["http://ok.example"]'})
    try:
        assert get(srv.http + path)[0] == 401
        assert get(srv.http + path + "?token=s3cret")[0] == 200
        assert get(srv.http + path, {"Authorization": "Bearer s3cret"})[0] == 200
        assert get(srv.http + path + "?token=s3cret", {"Origin": "http://evil.example"})[0] == 403
        assert get(srv.http + path + "?token=s3cret", {"Origin": "http://ok.example"})[0] == 200
    finally:
        assert srv.stop() == 0
