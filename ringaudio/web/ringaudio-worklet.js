// The audio thread's half of the player: a Playout over a ring it allocates once, fed by
// port.postMessage with transferred ArrayBuffers (one WebSocket message each: the 24-byte header,
// then s16le PCM). Conversion to float32 and resampling to the context's rate happen here, as the
// samples are written into the ring; process() only copies out of it. Nothing is allocated per
// frame or per render quantum.

import { Playout } from "./jitter.js";

const HEADER = 24;

class RingAudioProcessor extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const o = options.processorOptions || {};
    this.capacityMs = o.capacityMs || 4000;
    this.playout = new Playout(Math.ceil((this.capacityMs / 1000) * sampleRate), Math.round(sampleRate * 0.002));
    this.setTarget(o.targetMs || 200);
    this.inRate = o.inputRate || sampleRate;
    this.step = this.inRate / sampleRate; // input samples per output sample
    this.f32 = false; // "frame" messages hold f32le PCM (else s16le)
    this.pos = 0; // fractional position of the next output sample, in input samples past `prev`
    this.prev = 0; // the last input sample (for interpolation across frames)
    this.capture = o.capture ? new Float32Array(Math.ceil(o.captureSeconds * sampleRate)) : null;
    this.captured = 0;
    this.statsEvery = Math.round(sampleRate / 10); // 10 reports a second
    this.sinceStats = 0;
    this.frames = 0;
    this.port.onmessage = (e) => this.onMessage(e.data);
  }

  setRate(rate) {
    this.inRate = rate;
    this.step = rate / sampleRate; // the interpolation position carries over: no click at a change
  }

  setTarget(ms) {
    this.playout.targetSamples = Math.round((ms / 1000) * sampleRate);
  }

  onMessage(m) {
    const p = this.playout;
    switch (m.type) {
      case "frame":
        this.write(this.f32 ? new Float32Array(m.buf, HEADER) : new Int16Array(m.buf, HEADER), m.gap);
        break;
      case "pcm": // decoded on the main thread (Opus): float samples at their own rate
        this.setRate(m.rate);
        this.write(m.samples, m.gap);
        break;
      case "format": // what "frame" messages hold from now on
        this.f32 = m.encoding === "f32le";
        if (m.encoding !== "opus") this.setRate(m.rate);
        break;
      case "target":
        this.setTarget(m.ms);
        break;
      case "rate":
        this.setRate(m.rate);
        break;
      case "drain":
        p.drain();
        break;
      case "flush":
        p.flush(Math.round((m.keepMs / 1000) * sampleRate));
        break;
      case "cancel":
        p.cancel();
        this.pos = 0;
        this.prev = 0;
        break;
      case "capture":
        this.port.postMessage({
          type: "captured",
          samples: this.capture.slice(0, this.captured),
          startTime: this.captureStart,
        });
        break;
    }
  }

  write(pcm, gap) {
    // pcm: an Int16Array (s16le) or a Float32Array (f32le, decoded Opus): a view, not a copy
    const p = this.playout;
    const scale = pcm instanceof Int16Array ? 1 / 32768 : 1;
    if (gap) p.gap();
    this.frames += 1;
    if (this.step === 1) {
      p.reserve(pcm.length);
      for (let i = 0; i < pcm.length; i++) p.push(pcm[i] * scale);
      return;
    }
    // linear interpolation between consecutive input samples; the position carries across frames
    p.reserve(Math.ceil(pcm.length / this.step) + 1);
    let pos = this.pos;
    let prev = this.prev;
    for (let i = 0; i < pcm.length; i++) {
      const cur = pcm[i] * scale;
      while (pos < 1) {
        p.push(prev + (cur - prev) * pos);
        pos += this.step;
      }
      pos -= 1;
      prev = cur;
    }
    this.pos = pos;
    this.prev = prev;
  }

  process(inputs, outputs) {
    const out = outputs[0][0];
    const p = this.playout;
    p.render(out);
    for (let c = 1; c < outputs[0].length; c++) outputs[0][c].set(out);
    if (this.capture !== null && p.played > 0) {
      if (this.captured === 0) this.captureStart = currentTime;
      const room = this.capture.length - this.captured;
      if (room > 0) {
        const n = Math.min(room, out.length);
        this.capture.set(n === out.length ? out : out.subarray(0, n), this.captured);
        this.captured += n;
      }
    }
    this.sinceStats += out.length;
    if (this.sinceStats >= this.statsEvery) {
      this.sinceStats = 0;
      this.port.postMessage({
        type: "stats",
        bufferedMs: (p.buffered / sampleRate) * 1000,
        underruns: p.underruns,
        playedMs: (p.played / sampleRate) * 1000,
        droppedMs: (p.dropped / sampleRate) * 1000,
        frames: this.frames,
        playing: p.playing,
        time: currentTime,
      });
    }
    return true;
  }
}

registerProcessor("ringaudio-player", RingAudioProcessor);
