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
    this.pos = 0; // fractional position of the next output sample, in input samples past `prev`
    this.prev = 0; // the last input sample (for interpolation across frames)
    this.capture = o.capture ? new Float32Array(Math.ceil(o.captureSeconds * sampleRate)) : null;
    this.captured = 0;
    this.statsEvery = Math.round(sampleRate / 10); // 10 reports a second
    this.sinceStats = 0;
    this.frames = 0;
    this.port.onmessage = (e) => this.onMessage(e.data);
  }

  setTarget(ms) {
    this.playout.targetSamples = Math.round((ms / 1000) * sampleRate);
  }

  onMessage(m) {
    const p = this.playout;
    switch (m.type) {
      case "frame":
        this.write(m.buf, m.gap);
        break;
      case "target":
        this.setTarget(m.ms);
        break;
      case "rate":
        this.inRate = m.rate;
        this.step = this.inRate / sampleRate;
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

  write(buf, gap) {
    const p = this.playout;
    const pcm = new Int16Array(buf, HEADER); // a view of the transferred buffer, not a copy
    if (gap) p.gap();
    this.frames += 1;
    if (this.step === 1) {
      p.reserve(pcm.length);
      for (let i = 0; i < pcm.length; i++) p.push(pcm[i] / 32768);
      return;
    }
    // linear interpolation between consecutive input samples; the position carries across frames
    p.reserve(Math.ceil(pcm.length / this.step) + 1);
    let pos = this.pos;
    let prev = this.prev;
    for (let i = 0; i < pcm.length; i++) {
      const cur = pcm[i] / 32768;
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
