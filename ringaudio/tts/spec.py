"""What the server side of the pool and a worker process share: the picklable spec and job, the
worker's constants, and its entry point.

Importing this module loads no numba and no DSP: the server process builds specs and jobs and
starts workers from here, and the worker's own modules load in the worker (on ``worker_entry``).
"""

from __future__ import annotations

from dataclasses import dataclass
from multiprocessing.connection import Connection

from ..config import Config
from ..ring import RingHandle

HEARTBEAT_S = 1.0  # a worker that says nothing for three of these is reported stale
EXIT_UNGUARDED_MAIN = 78  # the exit status of a spawned child whose main module started an engine

PACE_MAX = 8  # the most frames a paced job writes per look (its step's frames: job.STEP_FRAMES)


def prebuffer_frames(prebuffer_ms: int, frame_ms: int) -> int:
    """The frames the server sends at once when a stream starts (``server.prebuffer_ms``; at least one)."""
    return max(1, prebuffer_ms // frame_ms)


def pace_frames(lead: int, prebuffer: int) -> int:
    """Frames a paced job writes per look, for a lead and the server's prebuffer (in frames).

    The server takes ``prebuffer`` frames at once and then one a period; a writer ``lead`` frames
    ahead of the clock that waits until ``pace`` frames are due writes each frame
    ``lead - prebuffer - pace + 2`` periods before the server reads it (its margin). This keeps a
    margin of three periods (a late wake-up of the worker is not heard), or what the lead leaves,
    and takes the rest as fewer, larger looks (a look costs the worker about as much as the frames
    it writes), at most ``PACE_MAX``: 8 for the defaults (400 ms lead, 200 ms prebuffer: a margin of
    4 periods). A lead no longer than the prebuffer leaves one period: a look per frame.
    """
    return max(1, min(PACE_MAX, lead - prebuffer - 1))


@dataclass(frozen=True)
class WorkerSpec:
    """Everything a worker process needs, picklable."""

    backend: str
    voice: str
    speed: int
    synthetic_rtf: float
    synthetic_rate: int
    output_sample_rate: int
    frame_samples: int
    resample_quality: str
    clause_chars: int
    log_level: str = "INFO"
    lead_frames: int = 20  # worker.lead_ms in frames (0: no pacing, only the watermarks)
    prebuffer_ms: int = 200  # server.prebuffer_ms: a paced job's looks are sized to the margin it leaves
    opus_bitrate: int = 32_000  # audio.opus_bitrate, for jobs in Opus
    adaptive: bool = False  # audio.adaptive_quality: frames go through a LevelStage (levels.py)

    @classmethod
    def of(cls, config: Config, backend: str) -> WorkerSpec:
        """The spec of a configuration's workers, with ``backend`` (a name, not ``auto``)."""
        w = config.worker
        return cls(
            backend=backend,
            voice=w.voice,
            speed=w.speed,
            synthetic_rtf=w.synthetic_rtf,
            synthetic_rate=w.synthetic_rate,
            output_sample_rate=config.output_sample_rate,
            frame_samples=config.frame_samples,
            resample_quality=w.resample_quality,
            clause_chars=w.clause_chars,
            log_level=config.log_level,
            lead_frames=w.lead_ms // config.frame_duration_ms,
            prebuffer_ms=config.server.prebuffer_ms,
            opus_bitrate=config.opus_bitrate,
            adaptive=config.adaptive_quality,
        )


@dataclass(frozen=True)
class Job:
    session_id: str
    utterance_id: int
    text: str
    ring: RingHandle
    voice: str | None = None
    request_id: str | None = None
    encoding: str = "s16le"  # what the worker writes into the ring: s16le PCM, or one Opus packet per frame
    level: tuple[int, int] | None = None  # (rate, frame_ms) to start at (adaptive quality; None: the base)


def worker_entry(conn: Connection, spec: WorkerSpec) -> None:
    """The worker process's target: loads the worker (numba, resampler, backends) in the child only."""
    from .worker import worker_main

    worker_main(conn, spec)
