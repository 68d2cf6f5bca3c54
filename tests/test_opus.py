"""The libopus binding: one packet per frame, decoded back by FFmpeg's own decoder (PyAV), typed
errors for what it refuses, and a clear one where libopus is missing."""

from __future__ import annotations

import ctypes

import numpy as np
import pytest

from ringaudio import opus
from ringaudio.errors import CodecError

av = pytest.importorskip("av")
pytestmark = pytest.mark.skipif(opus.available() is not None, reason=f"{opus.available()}")


def speechlike(seconds: float, rate: int = 48_000) -> np.ndarray:
    """Harmonics of a gliding pitch under a syllable envelope: a stand-in for a voice."""
    t = np.arange(int(seconds * rate)) / rate
    f0 = 120 + 30 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / rate
    voice = sum(np.sin(k * phase) / k for k in range(1, 12))
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 4 * t) ** 2
    return (6000 * voice * envelope).astype(np.int16)


def ffmpeg_decode(packets: list[bytes], rate: int) -> np.ndarray:
    ctx = av.CodecContext.create("opus", "r")
    ctx.sample_rate = rate
    ctx.layout = "mono"
    out = []
    for packet in packets:
        for frame in ctx.decode(av.Packet(packet)):
            out.append(frame.to_ndarray().reshape(-1))
    return np.concatenate(out)


def aligned_correlation(reference: np.ndarray, decoded: np.ndarray, max_lag: int = 2000) -> tuple[float, int]:
    """The best correlation of ``decoded`` delayed against ``reference`` over lags 0..max_lag, and that lag."""
    ref = reference.astype(np.float64)
    best = (-1.0, 0)
    for lag in range(max_lag):
        seg = decoded[lag : lag + len(ref)].astype(np.float64)
        if len(seg) < len(ref):
            break
        c = float(np.corrcoef(ref, seg)[0, 1])
        best = max(best, (c, lag))
    return best


@pytest.mark.parametrize(("rate", "frame_ms"), [(48_000, 20), (24_000, 40)])
def test_one_packet_per_frame_decoded_by_an_independent_decoder(rate: int, frame_ms: int) -> None:
    enc = opus.Encoder(rate, frame_ms, 32_000)
    pcm = speechlike(2.0, rate)
    frames = pcm[: len(pcm) // enc.frame_samples * enc.frame_samples].reshape(-1, enc.frame_samples)
    packets = [enc.encode(f) for f in frames] + [enc.encode(np.zeros(enc.frame_samples, np.int16))]
    assert len(packets) == len(frames) + 1 and all(0 < len(p) <= opus.MAX_PACKET for p in packets)
    kbit = sum(map(len, packets)) * 8 / (len(packets) * frame_ms / 1000) / 1000
    assert 20 < kbit < 45  # ~32 kbit/s asked for
    decoded = ffmpeg_decode(packets, 48_000)  # FFmpeg decodes at 48 kHz whatever was coded
    if rate != 48_000:
        decoded = decoded[:: 48_000 // rate]
    corr, lag = aligned_correlation(
        frames.reshape(-1), (decoded * 32768).astype(np.int16) if decoded.dtype != np.int16 else decoded
    )
    assert corr > 0.9, (corr, lag)
    ours = np.concatenate([opus.Decoder(rate).decode(p) for p in packets[:1]])  # our decoder too
    assert len(ours) == enc.frame_samples
    enc.close()
    enc.close()  # twice: harmless


def test_what_it_refuses_is_a_codec_error() -> None:
    with pytest.raises(CodecError, match="Opus codes"):
        opus.Encoder(44_100, 20)
    with pytest.raises(CodecError, match="Opus packets last"):
        opus.Encoder(48_000, 25)
    enc = opus.Encoder(48_000, 20)
    with pytest.raises(CodecError, match="960 contiguous int16"):
        enc.encode(np.zeros(480, np.int16))
    with pytest.raises(CodecError, match="960 contiguous int16"):
        enc.encode(np.zeros(960, np.float32))
    enc.close()
    with pytest.raises(CodecError, match="closed"):
        enc.encode(np.zeros(960, np.int16))
    dec = opus.Decoder(48_000)
    with pytest.raises(CodecError, match="opus_decode"):
        dec.decode(b"\xff" * 3)  # not a packet
    with pytest.raises(CodecError):
        opus.Decoder(44_100)


def test_missing_libopus_is_said_plainly(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(name: str) -> ctypes.CDLL:
        raise OSError(f"{name}: cannot open shared object file")

    opus._lib.cache_clear()
    monkeypatch.setattr(opus.ctypes, "CDLL", refuse)
    try:
        why = opus.available()
        assert why is not None and "libopus is not installed" in why and "libopus0" in why
        with pytest.raises(CodecError, match="libopus is not installed"):
            opus.Encoder(48_000, 20)
    finally:
        monkeypatch.undo()
        opus._lib.cache_clear()
    assert opus.available() is None
