"""What a process of a ``--processes`` server does for its siblings' sessions: a ``listen`` to a
stream a sibling holds is relayed there (:mod:`.relay`), a ``listen`` to another instance's (another
box's) is refused with ``listen_elsewhere``, and ``/metrics`` and ``/debug/sessions`` on the public
port answer for every process (each sibling asked over its private socket, labelled with its name).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
from http import HTTPStatus

from websockets.asyncio.server import ServerConnection
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from .. import logs
from .. import wire as P
from . import access
from .http import DEBUG, Http
from .instances import instance_of, merge_expositions, peer_uid, private_address
from .relay import Relay
from .send import Sending
from .session import Session

log = logging.getLogger("ringaudio.server")
FETCH_TIMEOUT = 2.0
FETCH_MAX_BYTES = 16 << 20


class Siblings(Http, Sending):
    def _listen_away(self, s: Session, cmd: P.Listen) -> bool:
        """A listen to a stream this process does not hold: relayed to the sibling that does, or
        refused as held by another instance. False if the id names no other instance."""
        where = instance_of(cmd.session_id)
        if where is None or where == self.instance:
            return False
        if where not in self.siblings or getattr(s.ws, "is_private", False):  # no relays of relays
            self._error(
                s,
                P.ErrorCode.LISTEN_ELSEWHERE,
                f"that stream is held by instance {where!r}: connect to /?listen=<session_id>&key=<key> "
                "through the load balancer, which routes on the instance the id names",
                instance=where,
            )
            return True

        if s.relay is not None:  # one listen at a time: the one under way answers first
            self._error(s, P.ErrorCode.LISTEN_REFUSED, "a listen is already under way on this connection")
            return True

        def listening() -> None:  # the sibling took it: this session's own stream (or listen) goes
            self._eject_with_listeners(s)  # (their lanes read the ring that goes back here)
            if s.listening_to is not None:
                s.listening_to.listeners.discard(s)
                s.listening_to = None
            s.active = True
            if s.source is not None:
                s.source.close()
            s.source = s.stream = None
            s.quality = None
            self.schedule.discard(s)
            logs.event(log, logging.INFO, "listen relayed", s.id, to=cmd.session_id, process=where)

        s.relay = Relay(
            s.ws,
            self.port,
            where,
            self.family,
            cmd.session_id,
            cmd.key,
            self.token,
            self.config.server.max_message_bytes,
            listening,
        )
        self._spawn(self._run_relay(s, s.relay))
        return True

    async def _run_relay(self, s: Session, relay: Relay) -> None:
        listened = await relay.run(lambda why: self._error(s, P.ErrorCode.LISTEN_REFUSED, why))
        if listened:  # the stream (or the sibling) ended: so does this listener, with its code
            await self._close(s, relay.close_code, relay.close_reason)
        elif s.relay is relay:
            s.relay = None

    async def _process_public(self, connection: ServerConnection, request: Request) -> Response | None:
        """The public port's requests: as :meth:`_process_request`, with /metrics and
        /debug/sessions answered for every process of a ``--processes`` server."""
        response = self._process_request(connection, request)
        if response is None or response.status_code != 200 or not self.siblings:
            return response
        path, _ = access.split_target(request.path)
        if path not in ("/metrics", DEBUG):
            return response
        answers = await asyncio.gather(*(self._fetch(name, path) for name in self.siblings))
        bodies = {self.instance: response.body}
        bodies.update((n, b) for n, b in zip(self.siblings, answers, strict=True) if b is not None)
        missing = tuple(n for n, b in zip(self.siblings, answers, strict=True) if b is None)
        if missing:
            logs.event(log, logging.WARNING, "siblings did not answer", None, path=path, processes=list(missing))
        if path == "/metrics":
            text = merge_expositions({n: b.decode() for n, b in bodies.items()}, missing).encode()
            return Response(200, "OK", Headers([("Content-Type", response.headers["Content-Type"])]), text)
        views = {n: json.loads(b) for n, b in bodies.items()}
        merged = dict(views[self.instance])
        merged["processes"] = {n: {"uptime_s": v["uptime_s"], "workers": v["workers"]} for n, v in views.items()}
        merged["processes"].update((n, {"answered": False}) for n in missing)
        merged["sessions"] = [{**x, "process": n} for n, v in views.items() for x in v.get("sessions", [])]
        return self._json_response(HTTPStatus.OK, merged)

    async def _fetch(self, instance: str, path: str) -> bytes | None:
        """One sibling's answer to GET ``path`` on its private socket (None: it did not answer)."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.setblocking(False)
        auth = f"Authorization: Bearer {self.token}\r\n" if self.token else ""
        try:
            async with asyncio.timeout(FETCH_TIMEOUT):
                await asyncio.get_running_loop().sock_connect(sock, private_address(self.port, instance, self.family))
                if peer_uid(sock) != os.getuid():  # an abstract name anyone may bind: no token for them
                    raise OSError(f"{instance}'s socket is held by another user")
                reader, writer = await asyncio.open_unix_connection(sock=sock, limit=FETCH_MAX_BYTES)
                try:
                    writer.write(f"GET {path} HTTP/1.1\r\nHost: {instance}\r\n{auth}Connection: close\r\n\r\n".encode())
                    head = await reader.readuntil(b"\r\n\r\n")
                    if not head.startswith(b"HTTP/1.1 200"):
                        return None
                    body = b""
                    while len(body) <= FETCH_MAX_BYTES and (chunk := await reader.read(65536)):
                        body += chunk  # to the end: the server closes after its answer
                    return body if len(body) <= FETCH_MAX_BYTES else None
                finally:
                    writer.close()
        except (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            sock.close()
            return None
