"""Wyoming events off a socket, with bounds: a JSON header line, optional JSON data, optional payload.

The ``wyoming`` package's own reader waits without end for a payload a client promised and never
sends, buffers whatever length a header claims, and answers a bad header by hanging up in silence.
This one bounds each part and raises :class:`FramingError` with what was wrong, so the service can
say it in an ``error`` event before it closes the connection.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from wyoming.event import Event

from ..errors import FramingError

__all__ = ["FramingError", "read_event"]

MAX_HEADER = 64 * 1024  # bytes of the header line
MAX_DATA = 256 * 1024  # bytes of the JSON data after it (text to speak lives here)
MAX_PAYLOAD = 1024 * 1024  # bytes of a binary payload (a TTS client sends none)
BODY_TIMEOUT_S = 10.0  # a promised data or payload that does not come within this is a lie


def _length(header: dict[str, Any], key: str, limit: int) -> int:
    value = header.get(key)
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise FramingError("invalid_header", f"'{key}' must be a non-negative integer, got {value!r}")
    if value > limit:
        raise FramingError("too_large", f"'{key}' {value} is over the limit of {limit} bytes")
    return value


async def read_event(reader: asyncio.StreamReader) -> Event | None:
    """The next event, or None at the end of the stream; FramingError for anything malformed."""
    try:
        line = await reader.readuntil(b"\n")
    except asyncio.IncompleteReadError as exc:
        if exc.partial.strip():
            raise FramingError("invalid_header", "the connection ended inside a header line") from None
        return None
    except asyncio.LimitOverrunError:
        raise FramingError("too_large", f"a header line longer than {MAX_HEADER} bytes") from None
    try:
        header = json.loads(line)
    except ValueError as exc:
        raise FramingError("invalid_json", f"the header line is not JSON: {exc}") from None
    if not isinstance(header, dict) or not isinstance(header.get("type"), str):
        raise FramingError("invalid_header", "a header is a JSON object with a string 'type'")
    data = header.get("data") or {}
    if not isinstance(data, dict):
        raise FramingError("invalid_header", "'data' must be a JSON object")
    data_length = _length(header, "data_length", MAX_DATA)
    payload_length = _length(header, "payload_length", MAX_PAYLOAD)
    try:
        async with asyncio.timeout(BODY_TIMEOUT_S):
            if data_length:
                more = json.loads(await reader.readexactly(data_length))
                if not isinstance(more, dict):
                    raise FramingError("invalid_header", "the data after a header must be a JSON object")
                data = {**data, **more}
            payload = await reader.readexactly(payload_length) if payload_length else None
    except TimeoutError:
        raise FramingError(
            "timeout", f"the data or payload the header announced did not come within {BODY_TIMEOUT_S:g} s"
        ) from None
    except asyncio.IncompleteReadError:
        raise FramingError(
            "invalid_header", "the connection ended before the data or payload the header announced"
        ) from None
    except ValueError as exc:
        raise FramingError("invalid_json", f"the data is not JSON: {exc}") from None
    return Event(type=header["type"], data=data, payload=payload)
