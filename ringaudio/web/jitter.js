// The player's pure logic: no DOM, no audio, no clock (times are passed in, in milliseconds).
// Imported by the page (ringaudio-player.js), by the audio worklet (ringaudio-worklet.js) and by
// the unit tests (node --test).

/** Arrival jitter and the target buffer level it calls for.
 *
 * Jitter is an RFC 3550-style running estimate of how far each frame's arrival strays from the
 * frame period: it rises fast (a late frame is news) and falls slowly (one on-time frame is not).
 * The target starts at minBufferMs, rises after an underrun (by two frames, or by the jitter if that
 * is more) and comes down one frame at a time after healthyMs without one, never below what the
 * jitter needs (3 × jitter), always within [minBufferMs, maxBufferMs]. */
export class JitterPolicy {
  constructor({ minBufferMs = 200, maxBufferMs = 400, frameMs = 20, healthyMs = 5000, rise = 1 / 4, fall = 1 / 64 } = {}) {
    if (!(minBufferMs > 0) || !(maxBufferMs >= minBufferMs)) throw new RangeError("need 0 < minBufferMs <= maxBufferMs");
    this.minBufferMs = minBufferMs;
    this.maxBufferMs = maxBufferMs;
    this.frameMs = frameMs;
    this.healthyMs = healthyMs;
    this.rise = rise;
    this.fall = fall;
    this.jitterMs = 0;
    this.targetMs = minBufferMs;
    this._last = null; // [arrivalMs, sequence]
    this._calmSince = null;
  }

  /** A frame arrived at nowMs. A gap in sequence (an overrun) is not jitter: the spacing expected is
   * one period per sequence number. */
  arrival(nowMs, sequence) {
    if (this._last !== null && sequence > this._last[1]) {
      const expected = (sequence - this._last[1]) * this.frameMs;
      const d = Math.abs(nowMs - this._last[0] - expected);
      this.jitterMs += (d > this.jitterMs ? this.rise : this.fall) * (d - this.jitterMs);
    }
    this._last = [nowMs, sequence];
    if (this._calmSince === null) this._calmSince = nowMs;
    this.tick(nowMs);
  }

  /** The buffer ran dry at nowMs: hold more from now on. */
  underrun(nowMs) {
    this.targetMs = this._clamp(this.targetMs + Math.max(2 * this.frameMs, this.jitterMs));
    this._calmSince = nowMs;
  }

  /** Time passes: after healthyMs without an underrun, one frame less is held. */
  tick(nowMs) {
    if (this._calmSince !== null && nowMs - this._calmSince >= this.healthyMs) {
      const floor = Math.max(this.minBufferMs, 3 * this.jitterMs);
      if (this.targetMs > floor) this.targetMs = this._clamp(Math.max(floor, this.targetMs - this.frameMs));
      this._calmSince = nowMs;
    }
    return this.targetMs;
  }

  /** A new stream (or a flush): the arrival history no longer applies. */
  restart() {
    this._last = null;
  }

  _clamp(ms) {
    return Math.min(this.maxBufferMs, Math.max(this.minBufferMs, ms));
  }
}

/** Flow control (the runbook's Strategy 4): pause the server above highMs buffered, resume below
 * lowMs. Returns "pause", "resume" or null (nothing to send). */
export class FlowControl {
  constructor({ highMs = 400, lowMs = 200 } = {}) {
    if (!(lowMs < highMs)) throw new RangeError("need lowMs < highMs");
    this.highMs = highMs;
    this.lowMs = lowMs;
    this.paused = false;
  }

  update(bufferedMs) {
    if (!this.paused && bufferedMs > this.highMs) {
      this.paused = true;
      return "pause";
    }
    if (this.paused && bufferedMs < this.lowMs) {
      this.paused = false;
      return "resume";
    }
    return null;
  }
}

/** The audio thread's playout over a preallocated ring of float32 samples (at the context's rate).
 *
 * - Playback starts once targetSamples are buffered (from silence: no fade, the samples play exactly).
 * - Running dry mid-speech is an underrun: what is left plays with a short fade-out, then silence,
 *   counted; playback resumes, with a short fade-in, when the buffer is back at the target.
 * - After drain() (the utterance ended) running dry is not an underrun: the stream is idle.
 * - cancel() drops everything at once; flush(keep) drops the oldest audio, keeping `keep` samples.
 * - A gap (frames lost upstream) fades the audio in over fadeSamples where it resumes. */
export class Playout {
  constructor(capacitySamples, fadeSamples = 96) {
    this.ring = new Float32Array(capacitySamples);
    this.capacity = capacitySamples;
    this.fade = fadeSamples;
    this.read = 0; // total samples read (played or dropped)
    this.write = 0; // total samples written
    this.targetSamples = 0;
    this.playing = false;
    this.draining = false;
    this.underruns = 0;
    this.played = 0; // samples played (not silence)
    this.dropped = 0; // samples dropped by overflow, flush or cancel
    this._fadeIn = 0; // samples of fade-in left
    this._gapAt = -1; // the fade-in applies from this written sample on (-1: none yet)
  }

  get buffered() {
    return this.write - this.read;
  }

  /** Room for n more samples, dropping the oldest if the ring is full (counted in dropped). */
  reserve(n) {
    const over = this.buffered + n - this.capacity;
    if (over > 0) {
      this.read += over;
      this.dropped += over;
    }
  }

  push(sample) {
    this.ring[this.write % this.capacity] = sample;
    this.write += 1;
    this.draining = false;
  }

  /** Frames after a gap: the next samples written fade in. */
  gap() {
    this._fadeIn = this.fade;
    this._gapAt = this.write;
  }

  drain() {
    this.draining = true;
  }

  cancel() {
    this.dropped += this.buffered;
    this.read = this.write;
    this.playing = false;
    this.draining = false;
  }

  flush(keep) {
    const drop = this.buffered - keep;
    if (drop > 0) {
      this.read += drop;
      this.dropped += drop;
    }
  }

  /** Fill out (a Float32Array, one render quantum) with what plays now. */
  render(out) {
    const n = out.length;
    if (!this.playing) {
      if (this.buffered >= Math.max(1, this.targetSamples) || (this.draining && this.buffered > 0)) {
        this.playing = true;
      } else {
        out.fill(0);
        return;
      }
    }
    const have = this.buffered;
    const take = Math.min(n, have);
    const fadeOutFrom = have < n && !this.draining ? Math.max(0, take - this.fade) : take;
    for (let i = 0; i < take; i++) {
      let s = this.ring[this.read % this.capacity];
      if (this._gapAt >= 0 && this.read >= this._gapAt && this._fadeIn > 0) {
        s *= 1 - this._fadeIn / this.fade;
        this._fadeIn -= 1;
      }
      if (i >= fadeOutFrom) s *= (take - i) / (take - fadeOutFrom + 1);
      out[i] = s;
      this.read += 1;
    }
    this.played += take;
    if (take < n) {
      out.fill(0, take);
      this.playing = false;
      if (!this.draining) {
        this.underruns += 1;
        this._fadeIn = this.fade; // the resume fades in
        this._gapAt = this.write;
      }
    }
  }
}
