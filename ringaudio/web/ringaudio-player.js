// RingAudioPlayer: plays a ringaudio session (or a listened-to one) in the browser.
//
//   const player = new RingAudioPlayer({ url: "ws://127.0.0.1:8080/ws" });
//   button.onclick = async () => { await player.start(); player.speak("Hello there."); };
//
// The WebSocket and the jitter-buffer policy live on the main thread; playback is an AudioWorklet
// (ringaudio-worklet.js) with a ring of its own. Each binary message (24-byte header + s16le PCM) is
// transferred to the worklet as it is, not copied. No build step, no dependency.

import { FlowControl, JitterPolicy } from "./jitter.js";

const HEADER = 24;
const FLAG_FIRST = 1;
const FLAG_LAST = 2;
const here = new URL(".", import.meta.url);

export class RingAudioPlayer extends EventTarget {
  constructor({
    url,
    token = null,
    minBufferMs = 200,
    maxBufferMs = 400,
    flowControl = true,
    pauseAboveMs = 400,
    resumeBelowMs = 200,
    flushLagMs = 500,
    ackEveryMs = 250,
    capture = false,
    captureSeconds = 30,
    context = null,
    sampleRate = undefined,
    encoding = "s16le",
  } = {}) {
    super();
    if (!url) throw new TypeError("RingAudioPlayer needs a url");
    this.url = token ? `${url}${url.includes("?") ? "&" : "?"}token=${encodeURIComponent(token)}` : url;
    // Opus needs WebCodecs' AudioDecoder; where there is none the player asks for PCM
    const canOpus = typeof AudioDecoder !== "undefined";
    this.encoding = encoding === "opus" && !canOpus ? "s16le" : encoding;
    this.options = { minBufferMs, maxBufferMs, flowControl, flushLagMs, ackEveryMs, capture, captureSeconds, sampleRate };
    this.policy = new JitterPolicy({ minBufferMs, maxBufferMs });
    this.flow = new FlowControl({ highMs: pauseAboveMs, lowMs: resumeBelowMs });
    this.context = context;
    this.node = null;
    this.ws = null;
    this.session = null;
    this._stats = {
      framesReceived: 0,
      framesPlayed: 0,
      gaps: 0,
      lost: 0,
      underruns: 0,
      bufferedMs: 0,
      targetMs: minBufferMs,
      jitterMs: 0,
      lagMs: 0,
      contextState: "closed",
      flushes: 0,
      playedMs: 0,
      droppedMs: 0,
      endToEndMs: null,
      paused: false,
    };
    this._expected = null;
    this._lastSeq = null;
    this._lastAck = 0;
    this._opened = null;
    this._pending = [];
    this._cancelling = false;
    this._userPaused = false;
    this._format = { encoding: "s16le", sample_rate: 48000, frame_ms: 20 }; // what frames are in now
    this._decoder = null; // an AudioDecoder while frames are Opus
    this._opusWaiting = []; // queue entries waiting for the decoder's PCM, in order
    this._tsUs = 0;
    this._queue = []; // frames and format changes for the worklet, in order; an Opus one waits for its PCM
  }

  /** Create (or resume) the AudioContext and open the session. Call it from a user gesture. */
  async start() {
    if (this.context === null) {
      const rate = this.options.sampleRate;
      this.context = new AudioContext(rate ? { latencyHint: "interactive", sampleRate: rate } : { latencyHint: "interactive" });
    }
    if (this.context.state === "suspended") await this.context.resume();
    this.context.onstatechange = () => {
      this._stats.contextState = this.context.state;
      this._emit("statechange", { state: this.context.state });
    };
    this._stats.contextState = this.context.state;
    if (this.node === null) {
      await this.context.audioWorklet.addModule(new URL("ringaudio-worklet.js", here));
      this.node = new AudioWorkletNode(this.context, "ringaudio-player", {
        numberOfInputs: 0,
        outputChannelCount: [1],
        processorOptions: {
          targetMs: this.policy.targetMs,
          capacityMs: Math.max(4000, 4 * this.options.maxBufferMs),
          capture: this.options.capture,
          captureSeconds: this.options.captureSeconds,
        },
      });
      this.node.port.onmessage = (e) => this._fromWorklet(e.data);
      this.node.connect(this.context.destination);
    }
    if (this.ws === null) await this._open();
    return this;
  }

  _open() {
    this._opened = new Promise((resolve, reject) => {
      const ws = new WebSocket(this.url);
      ws.binaryType = "arraybuffer";
      this.ws = ws;
      ws.onmessage = (e) => (typeof e.data === "string" ? this._event(JSON.parse(e.data), resolve) : this._frame(e.data));
      ws.onerror = () => reject(new Error(`cannot connect to ${this.url}`));
      ws.onclose = (e) => this._emit("close", { code: e.code, reason: e.reason });
    });
    return this._opened;
  }

  speak(text, { voice = undefined, requestId = undefined } = {}) {
    this._send({ type: "synthesize", text, voice, request_id: requestId });
  }

  listen(sessionId, key) {
    this._send({ type: "listen", session_id: sessionId, key });
  }

  /** Barge-in: silence now (the worklet drops what it holds within one render quantum) and tell
   * the server to drop the rest. */
  cancel() {
    this._cancelling = true; // frames already on their way are dropped until the server's answer
    this._queue = this._queue.filter((e) => e.message && e.message.type === "format"); // formats still hold
    this._opusWaiting.length = 0; // and the decoder is reset below: none of their PCM comes back
    if (this._decoder !== null && this._decoder.state === "configured") {
      this._decoder.reset(); // and what it has not decoded yet is not decoded at all
      this._decoder.configure({ codec: "opus", sampleRate: 48000, numberOfChannels: 1 });
    }
    if (this.node) this.node.port.postMessage({ type: "cancel" });
    this._send({ type: "cancel" });
  }

  pause() {
    this._userPaused = true;
    if (!this.flow.paused) this._send({ type: "control", action: "pause" });
    this.flow.paused = true;
    if (this.context) this.context.suspend();
  }

  resume() {
    this._userPaused = false;
    if (this.context) this.context.resume();
    if (this.flow.paused) this._send({ type: "control", action: "resume" });
    this.flow.paused = false;
  }

  stats() {
    return { ...this._stats, targetMs: this.policy.targetMs, jitterMs: this.policy.jitterMs };
  }

  /** What the worklet played so far (capture: true only): {samples (Float32Array, from the first
   * quantum that played audio), startTime (the context time of that quantum), sampleRate}. */
  captured() {
    return new Promise((resolve) => {
      const prev = this.node.port.onmessage;
      this.node.port.onmessage = (e) => {
        if (e.data.type === "captured") {
          this.node.port.onmessage = prev;
          resolve({ samples: e.data.samples, startTime: e.data.startTime, sampleRate: this.context.sampleRate });
        } else prev(e);
      };
      this.node.port.postMessage({ type: "capture" });
    });
  }

  close() {
    if (this.ws) this.ws.close(1000, "bye");
    if (this.node) this.node.disconnect();
    if (this.context) this.context.close();
    this.ws = null;
  }

  // -- internals ---------------------------------------------------------------------------------
  _send(msg) {
    const text = JSON.stringify(msg);
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(text);
    else this._pending.push(text);
  }

  _emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  _event(ev, opened) {
    switch (ev.type) {
      case "session":
        this.session = ev;
        this._format = { encoding: ev.format, sample_rate: ev.sample_rate, frame_ms: ev.frame_ms };
        if (this.node) this.node.port.postMessage({ type: "format", encoding: ev.format, rate: ev.sample_rate });
        this.policy.frameMs = ev.frame_ms;
        if (this.encoding !== "s16le" && (ev.encodings || []).includes(this.encoding)) {
          this.ws.send(JSON.stringify({ type: "format", encoding: this.encoding })); // before anything is said
        }
        for (const text of this._pending.splice(0)) this.ws.send(text);
        opened(ev);
        break;
      case "utterance.start":
        this._emit("utterancestart", ev);
        break;
      case "utterance.end":
        this._emit("utteranceend", ev);
        break;
      case "cancelled":
        this._cancelling = false;
        this._expected = ev.next_sequence;
        break;
      case "overrun":
        this._expected = ev.received;
        break;
      case "format": // the frames from the next one on (adaptive quality, or what we asked for)
        this._format = ev;
        this.policy.frameMs = ev.frame_ms;
        if (ev.encoding === "opus" && this._decoder === null) this._openDecoder();
        this._enqueue({ ready: true, message: { type: "format", encoding: ev.encoding, rate: ev.sample_rate } });
        break;
    }
    this._emit("message", ev);
  }

  _frame(buf) {
    const now = performance.now();
    const view = new DataView(buf);
    const flags = view.getUint8(3);
    const seq = Number(view.getBigUint64(8, true));
    const sentMs = Number(view.getBigUint64(16, true)) / 1000;
    const s = this._stats;
    s.framesReceived += 1;
    if (this._cancelling) return; // sent before the server saw the cancel: not to be heard
    let gap = false;
    if (this._lastSeq !== null && seq !== this._lastSeq + 1 && seq !== this._expected) {
      gap = true;
      s.gaps += 1;
      s.lost += Math.max(0, seq - this._lastSeq - 1);
      this._emit("gap", { expected: this._lastSeq + 1, received: seq });
    }
    this._lastSeq = seq;
    this._expected = null;
    this.policy.arrival(now, seq);
    s.endToEndMs = Math.max(0, Date.now() - sentMs) + s.bufferedMs; // sent -> heard, as this player sees it
    if (this._format.encoding === "opus") {
      if (this._decoder === null && !this._openDecoder()) {
        s.lost += 1; // no decoder here (a listener of an owner that chose Opus): not playable
        return;
      }
      const entry = { ready: false, message: null, gap };
      this._enqueue(entry);
      this._opusWaiting.push(entry); // the decoder answers in order; cancel resets it, so nothing stale comes back
      const timestamp = this._tsUs; // monotonic, whatever the sequence does
      this._tsUs += this._format.frame_ms * 1000;
      try {
        this._decoder.decode(new EncodedAudioChunk({ type: "key", timestamp, data: new Uint8Array(buf, 24) }));
      } catch (e) {
        this._decoderFailed(e);
      }
    } else {
      this._enqueue({ ready: true, message: { type: "frame", buf, gap }, transfer: [buf] });
    }
    if (flags & FLAG_LAST) this._enqueue({ ready: true, message: { type: "drain" } });
    if (flags & FLAG_FIRST) this.policy.restart();
  }

  /** An AudioDecoder for Opus frames; false where the browser has none (an "error" event says so). */
  _openDecoder() {
    if (typeof AudioDecoder === "undefined") {
      if (!this._noDecoderSaid) this._emit("error", { code: "format_unavailable", message: "no AudioDecoder for Opus" });
      this._noDecoderSaid = true;
      return false;
    }
    this._decoder = new AudioDecoder({
      output: (data) => {
        const entry = this._opusWaiting.shift();
        if (entry) {
          const samples = new Float32Array(data.numberOfFrames);
          data.copyTo(samples, { planeIndex: 0, format: "f32-planar" });
          entry.message = { type: "pcm", samples, rate: data.sampleRate, gap: entry.gap };
          entry.transfer = [samples.buffer];
          entry.ready = true;
          this._drainQueue();
        }
        data.close();
      },
      error: (e) => this._decoderFailed(e),
    });
    this._decoder.configure({ codec: "opus", sampleRate: 48000, numberOfChannels: 1 });
    return true;
  }

  /** The decoder failed (it is closed now): what it still owed plays as a gap, the next frame gets a new one. */
  _decoderFailed(e) {
    this._emit("error", { code: "decode_failed", message: String(e) });
    for (const entry of this._opusWaiting) {
      entry.message = null;
      entry.ready = true;
    }
    this._opusWaiting.length = 0;
    this._decoder = null;
    this._drainQueue();
  }

  _enqueue(entry) {
    this._queue.push(entry);
    this._drainQueue();
  }

  /** Hand the worklet what is ready, in the order it came: an Opus frame holds back what follows it. */
  _drainQueue() {
    if (this.node === null) return; // (before start(): they wait)
    const q = this._queue;
    while (q.length && q[0].ready) {
      const e = q.shift();
      if (e.message !== null) this.node.port.postMessage(e.message, e.transfer || []);
    }
  }

  _fromWorklet(m) {
    if (m.type !== "stats") return;
    const s = this._stats;
    const now = performance.now();
    if (m.underruns > s.underruns) {
      console.warn("Audio buffer underrun", { underruns: m.underruns, targetMs: this.policy.targetMs });
      for (let i = s.underruns; i < m.underruns; i++) this.policy.underrun(now);
      this._emit("underrun", { underruns: m.underruns });
    }
    s.underruns = m.underruns;
    s.bufferedMs = m.bufferedMs;
    s.framesPlayed = Math.floor(m.playedMs / (this.session ? this.session.frame_ms : 20));
    s.playedMs = m.playedMs;
    s.droppedMs = m.droppedMs;
    const target = this.policy.tick(now);
    this.node.port.postMessage({ type: "target", ms: target });
    // lag: audio held beyond where it should be (the pause mark under flow control, else the target)
    s.lagMs = Math.max(0, m.bufferedMs - (this.options.flowControl ? this.flow.highMs : target));
    if (s.lagMs > this.options.flushLagMs) {
      this.node.port.postMessage({ type: "flush", keepMs: target });
      s.flushes += 1;
      console.warn("Flushed stale audio buffers", { bufferedMs: m.bufferedMs, targetMs: target });
    }
    if (this.options.flowControl && !this._userPaused) {
      const action = this.flow.update(m.bufferedMs);
      if (action !== null) this._send({ type: "control", action });
      s.paused = this.flow.paused;
    }
    if (this._lastSeq !== null && now - this._lastAck >= this.options.ackEveryMs) {
      this._lastAck = now;
      this._send({ type: "ack", sequence: this._lastSeq, buffered_ms: m.bufferedMs, underruns: m.underruns });
    }
    this._emit("stats", this.stats());
  }
}
