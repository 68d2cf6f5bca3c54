"""One JSON object per log line: ``timestamp``, ``level``, ``message``, ``session_id`` and the line's fields.

Use ``log.info("Frame sequence gap detected", extra={"fields": {"expected": 42, "received": 45},
"session_id": sid})``, or the :func:`event` helper. The names of messages and fields are the ones the
operators' runbook greps for.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

_CONFIGURED = False


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "timestamp": round(record.created, 6),
            "level": record.levelname,
            "message": record.getMessage(),
            "session_id": getattr(record, "session_id", None),
            "logger": record.name,
        }
        fields = getattr(record, "fields", None)
        if fields:
            line.update(fields)
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def setup(level: str = "INFO", stream: Any = None) -> None:
    """Send ringaudio's logs, as JSON lines, to ``stream`` (stderr by default). Idempotent."""
    global _CONFIGURED
    root = logging.getLogger("ringaudio")
    root.setLevel(level.upper())
    if not _CONFIGURED:
        handler = logging.StreamHandler(stream or sys.stderr)
        handler.setFormatter(JsonFormatter())
        root.addHandler(handler)
        root.propagate = False
        _CONFIGURED = True


def event(logger: logging.Logger, level: int, message: str, session_id: str | None = None, **fields: Any) -> None:
    if logger.isEnabledFor(level):
        logger.log(level, message, extra={"session_id": session_id, "fields": fields})
