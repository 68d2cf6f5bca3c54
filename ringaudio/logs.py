"""One JSON object per log line: ``timestamp``, ``level``, ``message``, ``session_id`` and the line's fields.

Use ``log.info("Frame sequence gap detected", extra={"fields": {"expected": 42, "received": 45},
"session_id": sid})``, or the :func:`event` helper. The names of messages and fields are the ones the
operators' runbook greps for.

Every line reaches the operator whole: worker processes do not write to the shared stdout pipe
(two processes writing long lines into one pipe interleave them); they hand their records to the
pool over their control pipe (``setup(forward=...)``) and the server logs them (:func:`replay`).
A string field longer than ``FIELD_MAX`` characters is cut (a client's 65 000-character id is not
worth 65 kB of log per line).
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from typing import Any

FIELD_MAX = 512  # characters kept of one string field (tracebacks: ERROR_MAX)
ERROR_MAX = 8192
_CONFIGURED = False


def _cut(value: Any, limit: int = FIELD_MAX) -> Any:
    if isinstance(value, str) and len(value) > limit:
        return f"{value[:limit]}… ({len(value)} characters)"
    return value


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "timestamp": round(record.created, 6),
            "level": record.levelname,
            "message": _cut(record.getMessage()),
            "session_id": getattr(record, "session_id", None),
            "logger": record.name,
        }
        fields = getattr(record, "fields", None)
        if fields:
            line.update({k: _cut(v, ERROR_MAX if k == "error" else FIELD_MAX) for k, v in fields.items()})
        if record.exc_info:
            line["error"] = _cut(self.formatException(record.exc_info), ERROR_MAX)
        return json.dumps(line, default=str)


class _Forward(logging.Handler):
    """Hands each record, as plain data, to ``send`` (a worker's control pipe)."""

    def __init__(self, send: Callable[[dict[str, Any]], None]) -> None:
        super().__init__()
        self.send = send

    def emit(self, record: logging.LogRecord) -> None:
        try:
            fields = dict(getattr(record, "fields", None) or {})
            if record.exc_info:
                fields["error"] = logging.Formatter().formatException(record.exc_info)
            self.send(
                {
                    "name": record.name,
                    "levelno": record.levelno,
                    "levelname": record.levelname,
                    "msg": _cut(record.getMessage()),
                    "created": record.created,
                    "session_id": getattr(record, "session_id", None),
                    "fields": {k: _cut(v, ERROR_MAX if k == "error" else FIELD_MAX) for k, v in fields.items()},
                }
            )
        except (OSError, ValueError, EOFError):
            pass  # the pool is gone: nobody to tell
        except Exception:
            self.handleError(record)


def setup(level: str = "INFO", stream: Any = None, forward: Callable[[dict[str, Any]], None] | None = None) -> None:
    """Send ringaudio's logs, as JSON lines, to ``stream`` (stdout by default: nothing else is written
    there, so ``python -m ringaudio.server | jq`` works from the first line), or each record to
    ``forward`` (in a worker process). Idempotent."""
    global _CONFIGURED
    root = logging.getLogger("ringaudio")
    root.setLevel(level.upper())
    if not _CONFIGURED:
        handler: logging.Handler
        if forward is not None:
            handler = _Forward(forward)
        else:
            handler = logging.StreamHandler(stream or sys.stdout)
            handler.setFormatter(JsonFormatter())
        root.addHandler(handler)
        root.propagate = False
        _CONFIGURED = True


def replay(data: dict[str, Any]) -> None:
    """Log a record a worker forwarded, through this process's handlers (its level was checked there)."""
    record = logging.makeLogRecord({**data, "args": None, "exc_info": None})
    logging.getLogger(str(data.get("name", "ringaudio.worker"))).handle(record)


def event(logger: logging.Logger, level: int, message: str, session_id: str | None = None, **fields: Any) -> None:
    if logger.isEnabledFor(level):
        logger.log(level, message, extra={"session_id": session_id, "fields": fields})
