"""The browser player's files (``ringaudio/web``), served on the server's own port.

``GET /`` (without an Upgrade) is the demo page; ``GET /static/<file>`` the ES modules. The files
are read once, at start-up; each answer carries its MIME type, an ETag (a conditional request gets
304) and a short cache lifetime. The page is sent cross-origin isolated (COOP/COEP), so a player
may use a SharedArrayBuffer there.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources

from websockets.datastructures import Headers
from websockets.http11 import Request, Response

PAGE = "index.html"
TYPES = {".js": "text/javascript; charset=utf-8", ".html": "text/html; charset=utf-8", ".css": "text/css"}
ISOLATED = (("Cross-Origin-Opener-Policy", "same-origin"), ("Cross-Origin-Embedder-Policy", "require-corp"))


@dataclass(frozen=True, slots=True)
class File:
    body: bytes
    content_type: str
    etag: str


def load() -> dict[str, File]:
    """Every file of the web folder, by name."""
    files: dict[str, File] = {}
    for entry in resources.files("ringaudio.web").iterdir():
        suffix = "." + entry.name.rsplit(".", 1)[-1]
        if entry.is_file() and suffix in TYPES:
            body = entry.read_bytes()
            files[entry.name] = File(body, TYPES[suffix], '"' + hashlib.sha256(body).hexdigest()[:20] + '"')
    return files


def is_upgrade(request: Request) -> bool:
    return "websocket" in request.headers.get("Upgrade", "").lower()


def answer(files: dict[str, File], name: str, request: Request) -> Response | None:
    """The response for ``name`` (None: no such file)."""
    f = files.get(name)
    if f is None:
        return None
    headers = Headers(
        [
            ("Content-Type", f.content_type),
            ("ETag", f.etag),
            ("Cache-Control", "no-cache" if name == PAGE else "public, max-age=300"),
            ("Cross-Origin-Resource-Policy", "same-origin"),
            ("X-Content-Type-Options", "nosniff"),
        ]
    )
    if name == PAGE:
        for key, value in ISOLATED:
            headers[key] = value
    if request.headers.get("If-None-Match") == f.etag:
        return Response(304, "Not Modified", headers, b"")
    headers["Content-Length"] = str(len(f.body))
    return Response(200, "OK", headers, f.body)
