"""One error tree: every exception class of the package is a RingAudioError from ringaudio.errors."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

import ringaudio
from ringaudio import errors

# RingAudioErrors still defined in their own modules, and the one internal exception that never
# leaves ring.layout (ring.segment turns it into a SegmentError)
ELSEWHERE: set[str] = set()  # every exception of the package is in ringaudio.errors


def package_exceptions() -> dict[str, type[BaseException]]:
    found: dict[str, type[BaseException]] = {}
    for info in pkgutil.walk_packages(ringaudio.__path__, "ringaudio."):
        if info.name.endswith(".__main__"):  # running it is what importing it does
            continue
        module = importlib.import_module(info.name)
        for _, obj in inspect.getmembers(module, inspect.isclass):
            if issubclass(obj, BaseException) and obj.__module__.startswith("ringaudio"):
                found[f"{obj.__module__}.{obj.__qualname__}"] = obj
    return found


def test_every_exception_of_the_package_is_defined_in_errors_under_the_root() -> None:
    found = package_exceptions()
    assert "ringaudio.errors.PoolError" in found  # the walk reached the worker modules
    stray = sorted(name for name in found if not name.startswith("ringaudio.errors.") and name not in ELSEWHERE)
    assert stray == []
    for name, cls in found.items():
        if name != "ringaudio.ring.layout.HeaderProblem":
            assert issubclass(cls, errors.RingAudioError), name


def test_moved_errors_are_still_importable_where_they_were() -> None:
    from ringaudio.playback import NoAudioDevice
    from ringaudio.tts import BackendError as FromPackage
    from ringaudio.tts import PoolError as PoolFromPackage
    from ringaudio.tts.backends import BackendError, BackendUnavailable
    from ringaudio.tts.pool import PoolError

    assert PoolError is PoolFromPackage is errors.PoolError
    assert BackendError is FromPackage is errors.BackendError
    assert BackendUnavailable is errors.BackendUnavailable and issubclass(BackendUnavailable, BackendError)
    assert NoAudioDevice is errors.NoAudioDevice


@pytest.mark.parametrize(
    ("cls", "code"),
    [
        (errors.PoolError, "unavailable"),
        (errors.BackendError, "backend_error"),
        (errors.BackendUnavailable, "backend_error"),
        (errors.TextError, "invalid_text"),
        (errors.RingClosed, "ring_closed"),
        (errors.ArenaFull, "too_many_sessions"),
        (errors.SegmentNotFound, "ring_unavailable"),
    ],
)
def test_errors_the_wire_reports_carry_its_code(cls: type[errors.RingAudioError], code: str) -> None:
    assert getattr(cls, "code", None) == code


def test_a_text_error_carries_its_own_code() -> None:
    assert errors.TextError("too long", code="text_too_long").code == "text_too_long"
    assert errors.TextError("empty").code == "invalid_text"


def test_bad_parameters_of_the_pure_pieces_are_config_errors_and_value_errors() -> None:
    from ringaudio.playback import JitterBuffer
    from ringaudio.tts import Framer, SyntheticBackend

    for make in (lambda: Framer(0), lambda: SyntheticBackend(rtf=-1), lambda: JitterBuffer(8, 0, 4)):
        with pytest.raises(errors.ConfigError) as info:
            make()
        assert isinstance(info.value, ValueError) and "\n" not in str(info.value)
