"""The uvloop WebSocket server: ``python -m ringaudio.server``."""

from .app import App

__all__ = ["App"]
