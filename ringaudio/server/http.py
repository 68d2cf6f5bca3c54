"""The HTTP side of the server's port: method and path checks, the token, /healthz, /metrics and
/debug/sessions.

An Upgrade request on ``/ws`` (or ``/``) goes on to the WebSocket handshake; everything else is
answered here, before any session exists.
"""

from __future__ import annotations

import json
from http import HTTPStatus
from typing import Any

from websockets.asyncio.server import ServerConnection
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from .. import __version__
from . import access, debug, web
from .session import ServerBase

DEBUG = "/debug/sessions"


class Http(ServerBase):
    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        if not access.allowed_method(request):
            return access.method_not_allowed()
        path, _ = access.split_target(request.path)
        if path in ("/healthz", "/metrics") and self.public_metrics:
            return self._observe(path)
        static = path.startswith("/static/")
        if path not in ("/ws", "/", "/healthz", "/metrics", DEBUG) and not static:
            return self._json_response(HTTPStatus.NOT_FOUND, {"error": "not_found", "message": "use /ws"})
        if self.token is not None and not access.token_ok(self.token, request.headers, request.path):
            response = self._json_response(HTTPStatus.UNAUTHORIZED, {"error": "unauthorized", "message": "bad token"})
            response.headers["WWW-Authenticate"] = access.CHALLENGE
            return response
        if static or (path == "/" and not web.is_upgrade(request)):
            origin = request.headers.get("Origin")
            allowed = self.config.server.allowed_origins
            if origin is not None and allowed and origin not in allowed:
                return self._json_response(HTTPStatus.FORBIDDEN, {"error": "forbidden", "message": "origin"})
            found = web.answer(self.web_files, path[len("/static/") :] if static else web.PAGE, request)
            if found is None:
                return self._json_response(HTTPStatus.NOT_FOUND, {"error": "not_found", "message": "no such file"})
            return found
        if path == DEBUG:  # the token, whenever there is one (server.public_metrics does not open it)
            return self._json_response(HTTPStatus.OK, debug.view(self))
        return self._observe(path) if path not in ("/ws", "/") else None

    def _observe(self, path: str) -> Response:
        if path == "/healthz":  # 503 while it stops: a load balancer sends it no new sessions
            draining = self.stopping.is_set()
            return self._json_response(HTTPStatus.SERVICE_UNAVAILABLE if draining else HTTPStatus.OK, self.health())
        pool = self.engine.pool
        if pool is not None:
            self.metrics.totals.workers = (pool.alive(), pool.size, pool.restarts)
        self.metrics.totals.collections = (self.collections.count, self.collections.seconds)
        body, content_type = self.metrics.exposition(self._session_gauges())
        return Response(200, "OK", Headers([("Content-Type", content_type)]), body)

    @staticmethod
    def _json_response(status: HTTPStatus, body: dict[str, Any]) -> Response:
        data = json.dumps(body).encode()
        headers = Headers([("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
        return Response(status.value, status.phrase, headers, data)

    def health(self) -> dict[str, Any]:
        h = self.engine.health()
        return {
            "status": "draining" if self.stopping.is_set() else h["status"],
            "version": __version__,
            "workers": h["workers"],
            "backend": h["backend"],
            "sessions": len(self.sessions),
            "arena": h["arena"],
        }

    def _session_gauges(self) -> dict[str, tuple[int, int, float | None]]:
        gauges = {}
        for sid, s in self.sessions.items():
            self._export_drops(s)
            depth = self.depth(s)
            if depth is not None:
                buffered = s.client_buffer_ms / 1000 if s.client_buffer_ms is not None else None
                gauges[sid] = (depth, s.episodes, buffered)
        return gauges
