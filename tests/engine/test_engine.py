"""The Engine without sockets: real worker processes, real rings, frames by sequence, events."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psutil
import pytest

from ringaudio import config
from ringaudio.engine import Engine, EngineError, Event, Frame, StreamError
from ringaudio.errors import TextError

TEXT = "The quick brown fox jumps over the lazy dog. It runs away, and then it comes back."


def make_engine(**env: str) -> Engine:
    environ = {"RINGAUDIO__WORKER__WORKERS": "1", "RINGAUDIO__WORKER__SYNTHETIC_RTF": "0", **env}
    return Engine(config.load(None, environ=environ), backend="synthetic", max_streams=8)


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    with make_engine() as e:
        yield e


def split(items: list[Frame | Event]) -> tuple[list[Frame], list[Event]]:
    return [i for i in items if isinstance(i, Frame)], [i for i in items if isinstance(i, Event)]


def test_speak_yields_every_frame_in_sequence_with_its_events(engine: Engine) -> None:
    with engine.speak(TEXT, request_id="r1") as stream:
        frames, events = split(list(stream))
    assert [f.sequence for f in frames] == list(range(len(frames)))
    assert all(f.pcm.shape == (engine.frame_samples,) and f.pcm.dtype == np.int16 for f in frames)
    assert frames[0].first and frames[-1].last and not any(f.first or f.last for f in frames[1:-1])
    assert {f.utterance_id for f in frames} == {frames[0].utterance_id}
    seconds = len(frames) * engine.frame_ms / 1000
    assert 2.0 < seconds < 15.0  # speech-length for two sentences
    audio = np.concatenate([f.pcm for f in frames]).astype(np.float64)
    assert np.sqrt(np.mean(audio**2)) > 100  # not silence
    kinds = [e.type for e in events]
    assert kinds == ["utterance.start", "utterance.end"]
    end = events[-1].data
    assert end["frames"] == len(frames) and end["last_sequence"] == frames[-1].sequence
    assert end["request_id"] == "r1"


def test_back_to_back_utterances_continue_the_sequence(engine: Engine) -> None:
    stream = engine.open_stream()
    try:
        first = stream.say("One sentence.")
        second = stream.say("And another one.")
        frames, events = split(list(stream))
    finally:
        stream.close()
    assert [f.sequence for f in frames] == list(range(len(frames)))
    ids = [f.utterance_id for f in frames]
    assert ids == sorted(ids) and set(ids) == {first, second}
    assert [e.type for e in events].count("utterance.end") == 2
    assert sum(f.first for f in frames) == 2 and sum(f.last for f in frames) == 2


def test_pause_holds_the_worker_at_the_watermark_and_loses_nothing(engine: Engine) -> None:
    stream = engine.speak(TEXT * 3)
    got: list[Frame] = []
    high, _ = stream.ring.watermarks
    try:
        it = iter(stream)
        while len(got) < 5:
            item = next(it)
            if isinstance(item, Frame):
                got.append(item)
        stream.pause()
        with pytest.raises(StreamError) as exc:
            stream.pause()
        assert exc.value.code == "already_paused"
        threading.Timer(1.6, stream.resume).start()
        t0 = time.monotonic()
        # the iterator blocks while paused; the worker goes on at real time (its lead ahead of the
        # playback clock), fills the ring to its high watermark and waits there
        deadline = t0 + 1.5
        while time.monotonic() < deadline and stream.ring.fill < high:
            time.sleep(0.01)
        assert stream.ring.fill >= high
        time.sleep(0.1)
        assert stream.ring.fill <= stream.ring.capacity  # held, not overwriting
        events = []  # an event may come out while paused (a worker event applied late, under load)
        while not isinstance(item := next(it), Frame):
            events.append(item)
        assert time.monotonic() - t0 >= 1.5, events  # no frame came out while paused
        rest = [*events, item, *it]
    finally:
        stream.close()
    got += [i for i in rest if isinstance(i, Frame)]
    assert [f.sequence for f in got] == list(range(len(got)))  # every frame, in order
    assert stream.lost == 0
    with pytest.raises(StreamError):
        stream.resume()


def test_cancel_drops_the_rest_and_the_next_utterance_starts_cleanly(engine: Engine) -> None:
    stream = engine.speak(TEXT * 5)
    try:
        it = iter(stream)
        frames = []
        while len(frames) < 10:
            item = next(it)
            if isinstance(item, Frame):
                frames.append(item)
        stream.cancel()
        rest = list(it)
        cancelled = [i for i in rest if isinstance(i, Event) and i.type == "cancelled"]
        assert len(cancelled) == 1
        assert not any(isinstance(i, Frame) for i in rest)  # nothing read after the cancel
        last = cancelled[0].data["last_sequence"]
        assert last == frames[-1].sequence
        uid = stream.say("Fresh start.")
        after, _ = split(list(stream))
    finally:
        stream.close()
    assert after and after[0].first and after[0].utterance_id == uid
    assert after[0].sequence > last
    assert {f.utterance_id for f in after} == {uid}  # no stale frame of the cancelled utterance
    assert [f.sequence for f in after] == list(range(after[0].sequence, after[0].sequence + len(after)))


def test_a_say_right_after_cancel_survives_it(engine: Engine) -> None:
    """Barge-in as a voice assistant does it: cancel and say the new thing at once."""
    stream = engine.speak(TEXT * 5)
    try:
        it = iter(stream)
        old_uid = None
        while old_uid is None:
            item = next(it)
            if isinstance(item, Frame):
                old_uid = item.utterance_id
        stream.cancel()
        new_uid = stream.say("The new answer.")
        frames, events = split(list(it))
    finally:
        stream.close()
    kinds = [e.type for e in events]
    assert "cancelled" in kinds and kinds[-1] == "utterance.end"
    assert events[-1].data["utterance_id"] == new_uid
    new = [f for f in frames if f.utterance_id == new_uid]
    assert new and new[0].first and new[-1].last
    assert all(f.utterance_id in (old_uid, new_uid) for f in frames)
    seqs = [f.sequence for f in new]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))


def test_cancel_after_synthesis_finished_drops_what_waits_in_the_ring(engine: Engine) -> None:
    stream = engine.speak("Short.")  # well under the ring's capacity: the worker is done at once
    try:
        deadline = time.monotonic() + 10
        assert engine.pool is not None
        while engine.pool.pending(stream.id):  # until the worker has written all of it
            assert time.monotonic() < deadline
            time.sleep(0.01)
        written = stream.ring.write_seq
        assert written > 3
        it = iter(stream)
        first = [i for i in (next(it), next(it)) if isinstance(i, Frame)]
        stream.cancel()
        rest = list(it)
    finally:
        stream.close()
    assert not any(isinstance(i, Frame) for i in rest)  # the frames still in the ring were dropped
    cancelled = [i for i in rest if isinstance(i, Event) and i.type == "cancelled"]
    assert len(cancelled) == 1 and stream.position >= written
    assert cancelled[0].data["last_sequence"] == (first[-1].sequence if first else None)


def test_a_tiny_ring_with_a_zero_low_watermark_still_plays_to_the_end() -> None:
    """A writer that waits for an empty ring before it writes on: the look-ahead frame it holds
    (to label the last one) must not deadlock it against the reader."""
    env = {"RINGAUDIO__TRANSPORT__WEBSOCKET__FRAME_QUEUE_SIZE": "2", "RINGAUDIO__WORKER__LOW_WATERMARK": "0.0"}
    with make_engine(**env) as engine:
        stream = engine.speak("Two words.")
        frames, events = split(list(stream))
        stream.close()
    assert frames and [f.sequence for f in frames] == list(range(len(frames)))
    assert events[-1].type == "utterance.end" and events[-1].data["frames"] == len(frames)


def test_a_killed_worker_ends_the_utterance_with_an_error_and_the_stream_goes_on() -> None:
    with make_engine() as engine:
        stream = engine.speak(TEXT * 5)
        it = iter(stream)
        while not isinstance(next(it), Frame):
            pass
        pool = engine.pool
        assert pool is not None
        os.kill(pool.pids()[0], signal.SIGKILL)
        rest = list(it)  # ends: the utterance failed, the stream is not wedged
        errors = [i for i in rest if isinstance(i, Event) and i.type == "error"]
        assert [e.data["code"] for e in errors] == ["worker_died"]
        assert errors[0].data["utterance_id"] is not None
        assert not any(isinstance(i, Event) and i.type == "utterance.end" for i in rest)
        deadline = time.monotonic() + 60
        while pool.alive() < pool.size:  # the replacement warms up
            assert time.monotonic() < deadline
            time.sleep(0.05)
        uid = stream.say("Back again.")
        frames, events = split(list(stream))
        stream.close()
    assert frames and {f.utterance_id for f in frames} == {uid} and frames[-1].last
    assert events[-1].type == "utterance.end"


def test_two_readers_get_the_same_frames(engine: Engine) -> None:
    stream = engine.open_stream()
    listener = stream.listen(start=0)
    out: dict[str, list[Frame]] = {}

    def consume(name: str, source: object) -> None:
        out[name] = [i for i in source if isinstance(i, Frame)]  # type: ignore[attr-defined]

    try:
        stream.say("Whole-home announcement: dinner is ready.")
        threads = [
            threading.Thread(target=consume, args=("owner", stream)),
            threading.Thread(target=consume, args=("listener", listener)),
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
    finally:
        listener.close()
        stream.close()
    owner, heard = out["owner"], out["listener"]
    assert owner and [f.sequence for f in heard] == [f.sequence for f in owner]
    assert all(np.array_equal(a.pcm, b.pcm) for a, b in zip(owner, heard, strict=True))
    assert listener.lost == 0


def test_async_iteration() -> None:
    async def main() -> list[Frame | Event]:
        async with make_engine() as engine:
            stream = engine.speak("Hello from asyncio.")
            return [item async for item in stream]

    items = asyncio.run(main())
    frames, events = split(items)
    assert frames and [f.sequence for f in frames] == list(range(len(frames)))
    assert [e.type for e in events] == ["utterance.start", "utterance.end"]


def test_bad_input_is_refused_and_the_stream_stays_usable(engine: Engine) -> None:
    stream = engine.open_stream()
    try:
        with pytest.raises(TextError):
            stream.say("")
        with pytest.raises(TextError):
            stream.say("x" * (engine.config.worker.max_text_chars + 1))
        with pytest.raises(TextError):
            stream.say(42)  # type: ignore[arg-type]
        stream.say("Still fine.")
        frames, _ = split(list(stream))
        assert frames
    finally:
        stream.close()
    with pytest.raises(StreamError):
        stream.say("closed")


def test_not_started_and_closed_engines_refuse_work() -> None:
    engine = make_engine()
    with pytest.raises(EngineError):
        engine.speak("not started")
    engine.close()
    with pytest.raises(EngineError):
        engine.start()


def test_exception_inside_with_leaves_no_process_and_no_segment() -> None:
    with pytest.raises(RuntimeError, match="boom"), make_engine() as engine:
        pids = engine.pool.pids() if engine.pool else []
        name = engine.arena.name if engine.arena else ""
        engine.speak(TEXT * 10)  # a worker busy mid-utterance
        time.sleep(0.1)
        raise RuntimeError("boom")
    assert pids and not any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE for p in pids)
    from pathlib import Path

    assert name and not (Path("/dev/shm") / name).exists()
    assert engine.arena is None and engine.pool is None


def readme_example(guarded: bool) -> str:
    """The README's Embedding example, as written (guarded), or without its ``__main__`` guard."""
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    block = readme.split("## Embedding", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    if guarded:
        return block
    lines = block.splitlines()
    (i,) = [n for n, line in enumerate(lines) if line.startswith("if __name__")]
    return "\n".join([*lines[:i], *(line.removeprefix("    ") for line in lines[i + 1 :])]) + "\n"


@pytest.mark.parametrize("guarded", [False, True])
def test_the_readme_embedding_example_runs_and_an_unguarded_main_gets_one_clear_error(
    tmp_path: Path, guarded: bool
) -> None:
    """Spawned workers import the main module: without a ``__main__`` guard every one of them would
    start an engine of its own. The engine sees that and says what to add, at once."""
    import subprocess
    import sys

    script = tmp_path / "example.py"
    script.write_text(readme_example(guarded))
    env = {**os.environ, "RINGAUDIO__WORKER__BACKEND": "synthetic"}
    t0 = time.monotonic()
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=120)
    if guarded:
        assert done.returncode == 0, done.stderr[-2000:]
        assert "utterance.end" in done.stdout
    else:
        assert done.returncode == 1 and time.monotonic() - t0 < 60
        assert 'put the code that starts the engine under `if __name__ == "__main__":`' in done.stderr
        last = done.stderr.strip().splitlines()[-1]
        assert last.startswith("ringaudio.errors.PoolError: a worker process re-imported your program's main")


def test_a_listener_gets_the_same_flags_and_events_as_the_owner(engine: Engine) -> None:
    """Labels travel in the ring: a listener reading the newest frame sees its last flag, and gets
    utterance.start / utterance.end like the owner (it used to get neither)."""
    stream = engine.open_stream()
    listener = stream.listen(start=0)
    out: dict[str, list[Frame | Event]] = {}

    def consume(name: str, source: object) -> None:
        out[name] = list(source)  # type: ignore[call-overload]

    try:
        stream.say("First one.", request_id="a")
        stream.say("And the second.", request_id="b")
        threads = [
            threading.Thread(target=consume, args=("owner", stream)),
            threading.Thread(target=consume, args=("listener", listener)),
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
    finally:
        listener.close()
        stream.close()

    def seen(items: list[Frame | Event]) -> list[tuple[object, ...]]:
        return [
            (i.sequence, i.utterance_id, i.flags) if isinstance(i, Frame) else (i.type, i.data.get("request_id"))
            for i in items
        ]

    owner, heard = seen(out["owner"]), seen(out["listener"])
    assert heard == owner
    assert [x for x in owner if isinstance(x[0], str)] == [
        ("utterance.start", "a"),
        ("utterance.end", "a"),
        ("utterance.start", "b"),
        ("utterance.end", "b"),
    ]
    lasts = [x for x in owner if not isinstance(x[0], str) and x[2] & 2]
    assert len(lasts) == 2


def test_a_killed_workers_error_follows_the_frames_it_wrote() -> None:
    with make_engine() as engine:
        stream = engine.speak(TEXT * 5)
        it = iter(stream)
        while not isinstance(next(it), Frame):
            pass
        pool = engine.pool
        assert pool is not None
        os.kill(pool.pids()[0], signal.SIGKILL)
        deadline = time.monotonic() + 30
        while pool.alive() == pool.size:  # the death is seen (its event is on its way)
            assert time.monotonic() < deadline
            time.sleep(0.01)
        time.sleep(0.2)
        written = stream.ring.write_seq
        rest = list(it)
        stream.close()
    kinds = ["frame" if isinstance(i, Frame) else i.type for i in rest]
    assert kinds.count("error") == 1
    after = kinds[kinds.index("error") + 1 :]
    assert "frame" not in after  # everything it wrote came first ...
    frames = [i for i in rest if isinstance(i, Frame)]
    assert not frames or frames[-1].sequence == written - 1  # ... all of it


@pytest.mark.parametrize("kwargs", [{"workers": 0}, {"backend": "festival"}, {"max_streams": 0}, {"workers": "two"}])
def test_engine_keywords_are_checked_like_configuration(kwargs: dict[str, object]) -> None:
    from ringaudio.errors import ConfigError

    with pytest.raises(ConfigError):
        Engine(**kwargs)  # type: ignore[arg-type]
