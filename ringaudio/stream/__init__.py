"""Streams: one session's frames and events, read by sequence (see :mod:`ringaudio.stream.source`).

The bookkeeping is the pure state machine of :mod:`ringaudio.stream.core`; iteration is in
:mod:`ringaudio.stream.iterate`.
"""

from ..errors import StreamError
from ..wire import FLAG_FIRST, FLAG_LAST
from .core import Event, Frame, StreamState
from .reading import Label
from .source import Listener, Source, Stream, StreamOwner

__all__ = [
    "FLAG_FIRST",
    "FLAG_LAST",
    "Event",
    "Frame",
    "Label",
    "Listener",
    "Source",
    "Stream",
    "StreamError",
    "StreamOwner",
    "StreamState",
]
