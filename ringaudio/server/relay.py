"""A listen to a stream held by a sibling process of the same ``--processes`` server.

The kernel's ``SO_REUSEPORT`` balancing gives a connection to any process; a stream lives in one
(its ring is in that process's arena). A ``listen`` whose session id names a sibling is carried there:
this process opens a WebSocket to the sibling's private socket (``/?listen=<id>&key=<key>``) and
from then on copies messages both ways, unchanged — the sibling paces the frames, this process
forwards them as they come. Backpressure holds end to end: a frame is read from the sibling only
once the one before it is handed to this client's transport (``send`` waits while its buffer is
over the high-water mark), so a slow listener is a slow reader at the sibling, which applies its
own watermarks and slow-client detection to it.

Until the sibling says ``listening`` the client keeps its own stream; a refusal (a wrong key, no
such stream) is passed on and the client stays where it was.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

from websockets.asyncio.client import ClientConnection, unix_connect
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from .instances import peer_uid, private_address

CONNECT_TIMEOUT = 5.0
SEND_TIMEOUT = 10.0  # s a listener may leave one relayed message unread before it is closed (1008)


class Relay:
    """One listener's path to a sibling: :meth:`run` until either side ends."""

    def __init__(
        self,
        down: ServerConnection,
        port: int,
        instance: str,
        family: str,
        session_id: str,
        key: str,
        token: str | None,
        max_size: int,
        on_listening: Callable[[], None],
    ) -> None:
        self.down = down
        self.address = private_address(port, instance, family)
        self.instance = instance
        self.query = urlencode({"listen": session_id, "key": key})
        self.token = token
        self.max_size = max_size
        self.on_listening = on_listening
        self.up: ClientConnection | None = None
        self.listening = False  # the sibling said "listening": the client's messages go there now
        self.close_code = 1000
        self.close_reason = "stream ended"

    async def run(self, refuse: Callable[[str], None]) -> bool:
        """Relay until either side closes; False if the sibling could not be reached or refused
        (``refuse`` was told why, or the sibling's own ``error`` was passed on)."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.setblocking(False)
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else None
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                await asyncio.get_running_loop().sock_connect(sock, self.address)
                if peer_uid(sock) != os.getuid():  # an abstract name anyone may bind: not ours, no token
                    raise OSError(f"{self.instance}'s socket is held by another user")
                self.up = await unix_connect(
                    sock=sock,
                    uri=f"ws://{self.instance}/?{self.query}",
                    additional_headers=headers,
                    max_size=self.max_size,
                    compression=None,
                    ping_interval=None,
                    close_timeout=2,
                )
        except (OSError, TimeoutError, InvalidHandshake) as exc:
            sock.close()
            refuse(f"the process holding that stream cannot be reached: {exc}")
            return False
        up = self.up
        try:
            async for message in up:
                if not self.listening:
                    kind = _event_type(message)
                    if kind == "session":
                        continue  # the sibling's session for this relay: the client has its own
                    if kind != "listening":  # refused: pass it on, stay where it was
                        await self.down.send(message)
                        return False
                    self.listening = True
                    self.on_listening()
                async with asyncio.timeout(SEND_TIMEOUT):  # waits while the client's transport is full
                    await self.down.send(message)
        except ConnectionClosed:
            pass
        except TimeoutError:  # the listener stopped reading: not held open for ever
            self.close_code, self.close_reason = 1008, "not reading"
            return self.listening
        finally:
            rcvd = up.protocol.close_rcvd
            if rcvd is not None and self.close_code != 1008:
                self.close_code, self.close_reason = rcvd.code, rcvd.reason
            await up.close()
        return self.listening

    async def forward(self, message: str | bytes) -> None:
        """A client message, on to the sibling (its pause, resume, acks, a listen elsewhere)."""
        if self.up is not None:
            with contextlib.suppress(ConnectionClosed):
                await self.up.send(message)

    async def close(self) -> None:
        if self.up is not None:
            await self.up.close()


def _event_type(message: str | bytes) -> Any:
    if isinstance(message, bytes):
        return None
    try:
        return json.loads(message).get("type")
    except (ValueError, AttributeError):
        return None
