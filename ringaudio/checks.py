"""Checks of single configuration values (pure): each returns the value, typed, or raises
:class:`~ringaudio.errors.ConfigError` whose one-line message names the dotted key, what was given
and what is allowed. :func:`ringaudio.config.load` runs one on every key, whichever layer set it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from typing import Any, NoReturn, TypeVar

from .errors import ConfigError

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
MAX_WORKERS = 64
VOICE = re.compile(r"[A-Za-z0-9_.+/-]{1,64}")
_T = TypeVar("_T")


def show(value: object) -> str:
    """``repr`` on one line, cut short: what was given, in an error message."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def refuse(where: str, allowed: str, value: object) -> NoReturn:
    raise ConfigError(f"{where} must be {allowed}, got {show(value)}")


def is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def integer(value: Any, where: str, low: int, high: int) -> int:
    if not is_int(value) or not low <= value <= high:
        refuse(where, f"an integer in {low}..{high}", value)
    return int(value)


def number(value: Any, where: str, low: float, high: float) -> float:
    # NaN and ±inf fail the range check (every range here is finite)
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        refuse(where, f"a number in {low:g}..{high:g}", value)
    return float(value)


def boolean(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        refuse(where, "true or false", value)
    return value


def choice(value: Any, where: str, allowed: Sequence[_T]) -> _T:
    for option in allowed:
        if type(value) is type(option) and value == option:  # 48000.0, True and "48000" are not 48000
            return option
    refuse(where, f"one of {', '.join(map(str, allowed))}", value)


def workers(value: Any, where: str) -> int:
    if value == "auto":
        return max(1, os.cpu_count() or 1)
    if not is_int(value) or not 1 <= value <= MAX_WORKERS:
        refuse(where, f"auto or an integer in 1..{MAX_WORKERS}", value)
    return int(value)


def voice(value: Any, where: str) -> str:
    if not isinstance(value, str) or not VOICE.fullmatch(value):
        refuse(where, "an espeak-ng voice name: 1..64 of A-Z a-z 0-9 _ . + / -", value)
    return value


def watermarks(high: Any, low: Any, where: str) -> tuple[float, float]:
    """``0 <= low < high <= 1``, what :func:`ringaudio.ring.layout.watermark_frames` requires.

    Any such pair suits every ring capacity: the arena rounds the high mark down to at least one
    frame and keeps the low one below it.
    """
    hi = number(high, f"{where}.high_watermark", 0.0, 1.0)
    lo = number(low, f"{where}.low_watermark", 0.0, 1.0)
    if not lo < hi:
        raise ConfigError(
            f"{where}.low_watermark and {where}.high_watermark must satisfy 0 <= low_watermark < high_watermark"
            f" <= 1, got low_watermark={lo:g} high_watermark={hi:g}"
        )
    return hi, lo


def origins(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(o, str) for o in value):
        refuse(where, 'a list of origins (strings such as "https://home.example"), empty for any', value)
    return tuple(value)


def idle_timeout(value: Any, where: str) -> float:
    if value == 0 and not isinstance(value, bool):
        return 0.0
    try:
        return number(value, where, 1, 86_400)
    except ConfigError:
        refuse(where, "0 (never) or a number of seconds in 1..86400", value)


def log_level(value: Any, where: str) -> str:
    if not isinstance(value, str) or value.upper() not in LOG_LEVELS:
        refuse(where, f"one of {', '.join(LOG_LEVELS)} (any case)", value)
    return value.upper()
