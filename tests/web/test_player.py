"""The browser player in real headless Chromium, against a real server: what the audio thread plays,
at what speed, how it stops, what it reports back.

Chromium is Debian's (scripts/env.sh installs it as root), driven by Playwright; the page is served
by the server itself from http://127.0.0.1:<port>/ (a secure context: AudioWorklet needs one), with
autoplay allowed. A headless Chromium's AudioContext runs on a real clock.
"""

from __future__ import annotations

import asyncio
import shutil
import wave
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ringaudio import client

from ..server.conftest import ServerProcess

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
RESULTS = Path(__file__).resolve().parents[2] / "bench" / "results"
TEXT = "The quick brown fox jumps over the lazy dog. It runs away, and then it comes back."
SHORT = "The quick brown fox jumps over the lazy dog."  # 3 s: enough to compare what played
ARGS = [
    "--autoplay-policy=no-user-gesture-required",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (scripts/env.sh installs it)")

SPEAK = """async (text) => {
  await player.start();
  const ended = new Promise((r) => player.addEventListener("utteranceend", (e) => r(e.detail), { once: true }));
  player.speak(text);
  const end = await ended;
  const t0 = performance.now();
  while (player.stats().bufferedMs > 0 && performance.now() - t0 < 10000) await new Promise((r) => setTimeout(r, 50));
  await new Promise((r) => setTimeout(r, 300)); // a last ack and stats report
  const cap = await player.captured();
  return { end, stats: player.stats(), samples: Array.from(cap.samples), rate: cap.sampleRate };
}"""


@pytest.fixture
def browser() -> Iterator[Any]:
    """A browser of its own per test: its processes (renderers, the audio service) all end with it."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def srv() -> Iterator[ServerProcess]:
    """A server with the default settings, for the tests that need nothing else: each has a session
    and a browser of its own."""
    server = ServerProcess()
    yield server
    assert server.stop() == 0


def reference_pcm(srv: ServerProcess, text: str, tmp_path: Path) -> np.ndarray:
    """What the server sends for ``text`` (the synthetic voice is deterministic), via the Python client."""
    out = tmp_path / "ref.wav"
    with ThreadPoolExecutor(1) as pool:  # Playwright's sync API runs an event loop in this thread
        stats = pool.submit(asyncio.run, client.speak(srv.url, [text], out=out)).result(60)
    assert stats.lost == 0 and stats.frames > 0
    with wave.open(str(out)) as w:
        return np.frombuffer(w.readframes(w.getnframes()), np.int16)


def acked(metrics: str) -> dict[str, float]:
    """The counts of the two series the clients' acks feed, summed over their labels (0 before any)."""
    out = {"tts_end_to_end_latency_ms_count": 0.0, "tts_client_buffer_seconds_count": 0.0}
    for line in metrics.splitlines():
        name = line.split("{")[0].split(" ")[0]
        if name in out:
            out[name] += float(line.split()[-1])
    return out


def test_the_worklet_plays_the_servers_pcm_exactly_and_feeds_the_metrics(
    srv: ServerProcess, browser: Any, tmp_path: Path
) -> None:
    ref = reference_pcm(srv, TEXT, tmp_path)
    page = browser.new_page()
    logs: list[str] = []
    page.on("console", lambda m: logs.append(m.text))
    page.goto(f"{srv.http}/?capture&rate=48000")
    before = acked(page.evaluate(f"fetch('{srv.http}/metrics').then((r) => r.text())"))  # the server is shared
    got = page.evaluate(SPEAK, TEXT)
    samples = np.asarray(got["samples"], np.float32)
    stats = got["stats"]
    assert got["rate"] == 48_000
    assert stats["underruns"] == 0 and stats["gaps"] == 0 and stats["lost"] == 0, (stats, logs)
    assert got["end"]["frames"] * 960 == len(ref)
    # the first quantum that played is the first sample: from there on, exactly the server's PCM
    assert len(samples) >= len(ref)
    assert np.array_equal(samples[: len(ref)], ref.astype(np.float32) / np.float32(32768))
    assert not np.any(samples[len(ref) :])  # then silence, no repeat, no noise
    assert stats["contextState"] == "running"
    after = acked(page.evaluate(f"fetch('{srv.http}/metrics').then((r) => r.text())"))
    latency, buffer = "tts_end_to_end_latency_ms_count", "tts_client_buffer_seconds_count"
    assert after[latency] > before[latency]  # the player's acks reached the server
    assert after[buffer] > before[buffer]
    assert "Audio buffer underrun" not in " ".join(logs)
    RESULTS.mkdir(exist_ok=True)
    page.screenshot(path=str(RESULTS / "player-demo.png"), full_page=True)
    page.close()


def test_a_24_khz_40_ms_session_plays_at_the_right_speed_on_a_48_khz_context(browser: Any) -> None:
    env = {"RINGAUDIO__AUDIO__OUTPUT_SAMPLE_RATE": "24000", "RINGAUDIO__AUDIO__FRAME_DURATION_MS": "40"}
    srv = ServerProcess(env)
    try:
        page = browser.new_page()
        page.goto(f"{srv.http}/?capture&rate=48000")
        got = page.evaluate(SPEAK, TEXT)
        stats = got["stats"]
        assert stats["underruns"] == 0 and stats["gaps"] == 0
        samples = np.asarray(got["samples"], np.float32)
        sent_s = got["end"]["frames"] * 0.040
        # every 24 kHz sample became two at 48 kHz: what played lasts what was sent (at the context's clock)
        assert abs(stats["framesPlayed"] * 0.040 - sent_s) <= 0.040 + 1e-9, (stats, sent_s)
        assert len(samples) >= sent_s * 48_000 and not np.any(samples[int((sent_s + 0.01) * 48_000) :])
        assert np.sqrt(np.mean(samples**2)) > 0.003  # speech, not silence
        page.close()
    finally:
        assert srv.stop() == 0


def test_cancel_is_silent_within_50_ms_and_the_next_utterance_plays(srv: ServerProcess, browser: Any) -> None:
    page = browser.new_page()
    page.goto(f"{srv.http}/?capture&rate=48000")
    got = page.evaluate(
        """async (text) => {
          await player.start();
          player.speak(text);
          while (player.stats().framesPlayed < 25) await new Promise((r) => setTimeout(r, 10));
          const at = player.context.currentTime;
          player.cancel();
          await new Promise((r) => setTimeout(r, 1000));
          const cap = await player.captured();
          return { at, start: cap.startTime, samples: Array.from(cap.samples), stats: player.stats() };
        }""",
        TEXT * 3,
    )
    samples = np.asarray(got["samples"], np.float32)
    cut = int((got["at"] - got["start"]) * 48_000)
    assert np.any(samples[:cut])  # it was speaking
    assert not np.any(samples[cut + int(0.05 * 48_000) :])  # and was silent within 50 ms of cancel()
    page.close()


WATCH = """async ({ text, seconds }) => {
  await player.start();
  const trace = [];
  const seen = [];
  player.addEventListener("stats", (e) => {
    const s = e.detail;
    trace.push([performance.now(), s.underruns, s.targetMs, s.bufferedMs]);
  });
  player.addEventListener("message", (e) => seen.push(e.detail.type));
  const ended = new Promise((r) => player.addEventListener("utteranceend", (e) => r(e.detail), { once: true }));
  player.speak(text);
  const end = await Promise.race([ended, new Promise((r) => setTimeout(() => r(null), seconds * 1000))]);
  await new Promise((r) => setTimeout(r, 300)); // the worklet reports what arrived last (10 times a second)
  const t0 = performance.now();
  while (player.stats().bufferedMs > 0 && performance.now() - t0 < 5000) await new Promise((r) => setTimeout(r, 50));
  return { end, trace, seen, stats: player.stats() };
}"""


def watch(browser: Any, srv: ServerProcess, query: str, text: str, seconds: float = 60) -> dict[str, Any]:
    page = browser.new_page()
    logs: list[str] = []
    page.on("console", lambda m: logs.append(m.text))
    page.goto(f"{srv.http}/?{query}")
    got: dict[str, Any] = page.evaluate(WATCH, {"text": text, "seconds": seconds})
    got["logs"] = logs
    page.close()
    return got


def test_through_a_jittery_link_the_buffer_adapts_and_then_plays_without_underruns(
    srv: ServerProcess, browser: Any
) -> None:
    from bench.netsim import Impairment, NetSim

    with NetSim.running(srv.port, down=Impairment(delay_ms=100, jitter_ms=30, seed=7)) as sim:
        got = watch(browser, srv, f"ws=ws://127.0.0.1:{sim.port}/ws", TEXT * 3)
    stats, trace = got["stats"], got["trace"]
    assert got["end"] is not None and stats["lost"] == 0 and stats["gaps"] == 0
    assert stats["jitterMs"] > 1  # it saw the jitter
    raised = [t for t, _, target, _ in trace if target > 200]
    first = raised[0] if raised else None
    late = [u for t, u, _, _ in trace if first is not None and t > first + 1000]
    # no underrun at all, or none once the first adjustment had a second to fill the buffer
    assert stats["underruns"] == 0 or (late and late[-1] == late[0]), trace[-5:]


def test_a_two_second_stall_is_counted_as_underruns_and_playback_recovers(srv: ServerProcess, browser: Any) -> None:
    """The link stops for 2 s (4 s in): the buffer runs dry (counted, the target grows), then the
    backlog arrives; it plays to the end, every sample played (or flushed, if it came more than 500 ms
    beyond the pause mark)."""
    from bench.netsim import Impairment, NetSim

    with NetSim.running(srv.port, down=Impairment(stall_every_s=4.0, stall_ms=2000)) as sim:
        got = watch(browser, srv, f"ws=ws://127.0.0.1:{sim.port}/ws", TEXT)
    stats = got["stats"]
    assert got["end"] is not None  # it recovered and played to the end
    assert stats["underruns"] >= 1 and stats["targetMs"] > 200  # counted, and the buffer grew
    assert any("Audio buffer underrun" in line for line in got["logs"])
    assert stats["lost"] == 0 and stats["gaps"] == 0  # under block nothing was lost on the way
    frames_ms = got["end"]["frames"] * 20
    assert abs(stats["playedMs"] + stats["droppedMs"] - frames_ms) <= 40, stats  # each sample played or flushed


def test_flow_control_pauses_and_resumes_the_server_and_loses_nothing(browser: Any) -> None:
    """A server that sends 800 ms at once (prebuffer) is faster than the player plays:
    above 400 ms buffered the player sends pause, below 200 ms resume; under block nothing is lost."""
    env = {
        "RINGAUDIO__SERVER__PREBUFFER_MS": "800",
        "RINGAUDIO__WORKER__LEAD_MS": "800",
        "RINGAUDIO__TRANSPORT__WEBSOCKET__FRAME_QUEUE_SIZE": "100",
    }
    srv = ServerProcess(env)
    try:
        got = watch(browser, srv, "pause=400&resume=200", TEXT)
        stats, seen = got["stats"], got["seen"]
        assert got["end"] is not None and stats["lost"] == 0 and stats["gaps"] == 0
        assert "paused" in seen and "resumed" in seen  # the server answered both
        assert stats["framesReceived"] == got["end"]["frames"]
        assert max(b for *_, b in got["trace"]) < 900 and stats["flushes"] == 0
    finally:
        assert srv.stop() == 0


def test_f32le_plays_the_same_samples_and_opus_plays_the_same_speech_without_underruns(
    srv: ServerProcess, browser: Any, tmp_path: Path
) -> None:
    """f32le: the worklet's output equals the s16le PCM exactly. Opus: decoded by WebCodecs'
    AudioDecoder on the main thread, played with 0 underruns and 0 gaps, and it is the same speech."""
    ref = reference_pcm(srv, SHORT, tmp_path).astype(np.float64) / 32768
    results = {}
    for encoding in ("f32le", "opus"):
        page = browser.new_page()
        logs: list[str] = []
        page.on("console", lambda m, logs=logs: logs.append(m.text))
        page.goto(f"{srv.http}/?capture&rate=48000&encoding={encoding}")
        assert page.evaluate("typeof AudioDecoder") == "function"  # Chromium has WebCodecs
        got = page.evaluate(SPEAK, SHORT)
        stats = got["stats"]
        assert stats["underruns"] == 0 and stats["gaps"] == 0 and stats["lost"] == 0, (encoding, stats, logs)
        results[encoding] = np.asarray(got["samples"], np.float64)
        page.close()
    f32 = results["f32le"]
    assert np.array_equal(f32[: len(ref)], ref) and not np.any(f32[len(ref) :])
    played = results["opus"]
    corr, lag = max(
        (float(np.corrcoef(ref, played[lag : lag + len(ref)])[0, 1]), lag)
        for lag in range(0, 2000, 2)
        if lag + len(ref) <= len(played)
    )
    assert corr > 0.9, (corr, lag)


LEVELS = """async (text) => {
  await player.start();
  const ended = new Promise((r) => player.addEventListener("utteranceend", (e) => r(e.detail), { once: true }));
  const formats = [];
  player.addEventListener("message", (e) => { if (e.detail.type === "format") formats.push(e.detail); });
  const wait = (ms) => new Promise((r) => setTimeout(r, ms));
  player.speak(text);
  await wait(1000);
  player._send({ type: "format", sample_rate: 24000, frame_ms: 40 });
  await wait(2000);
  player._send({ type: "format", sample_rate: 48000, frame_ms: 20 });
  const end = await ended;
  const t0 = performance.now();
  while (player.stats().bufferedMs > 0 && performance.now() - t0 < 10000) await wait(50);
  await wait(300);
  const cap = await player.captured();
  return { end, formats, stats: player.stats(), samples: Array.from(cap.samples) };
}"""


def test_the_player_follows_a_level_change_mid_utterance(browser: Any) -> None:
    """48 kHz / 20 ms, then 24 kHz / 40 ms (asked for mid-utterance), then back: played at the right
    speed throughout, without an underrun or a gap."""
    srv = ServerProcess({"RINGAUDIO__AUDIO__ADAPTIVE_QUALITY": "true"})
    try:
        page = browser.new_page()
        page.goto(f"{srv.http}/?capture&rate=48000")
        got = page.evaluate(LEVELS, TEXT)  # 5.8 s: a switch at 1 s and back at 3 s are mid-utterance
        stats = got["stats"]
        assert [(f["sample_rate"], f["reason"]) for f in got["formats"]] == [
            (24_000, "requested"),
            (48_000, "requested"),
        ]
        assert stats["underruns"] == 0 and stats["gaps"] == 0 and stats["lost"] == 0, stats
        sent_ms = got["end"]["duration_ms"]
        assert abs(stats["playedMs"] - sent_ms) <= 60, (stats["playedMs"], sent_ms)  # the right speed at each rate
        samples = np.asarray(got["samples"], np.float32)
        assert np.sqrt(np.mean(samples[: int(sent_ms * 48)] ** 2)) > 0.003
        page.close()
    finally:
        assert srv.stop() == 0
