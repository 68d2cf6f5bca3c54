"""A Wyoming TTS service on the Engine, for Home Assistant: ``python -m ringaudio.wyoming``."""
