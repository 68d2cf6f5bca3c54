// The player's pure logic (ringaudio/web/jitter.js) without a browser: node --test tests/web/
import assert from "node:assert/strict";
import { test } from "node:test";
import { FlowControl, JitterPolicy, Playout } from "../../ringaudio/web/jitter.js";

test("jitter rises fast on a late frame and falls slowly on time", () => {
  const p = new JitterPolicy({ frameMs: 20 });
  for (let i = 0; i < 10; i++) p.arrival(i * 20, i);
  assert.equal(p.jitterMs, 0);
  p.arrival(10 * 20 + 40, 10); // 40 ms late
  const risen = p.jitterMs;
  assert.ok(risen >= 10, `rose to ${risen}`);
  p.arrival(11 * 20 + 40, 11); // on time again (relative to the last)
  assert.ok(p.jitterMs < risen && p.jitterMs > risen * 0.9, "falls slowly");
});

test("a sequence gap is not jitter", () => {
  const p = new JitterPolicy({ frameMs: 20 });
  p.arrival(0, 0);
  p.arrival(100, 5); // five periods later, five sequences later
  assert.equal(p.jitterMs, 0);
});

test("the target rises after an underrun and comes down slowly while healthy, within bounds", () => {
  const p = new JitterPolicy({ minBufferMs: 200, maxBufferMs: 400, frameMs: 20, healthyMs: 5000 });
  assert.equal(p.targetMs, 200);
  p.underrun(1000);
  assert.equal(p.targetMs, 240);
  for (let i = 0; i < 10; i++) p.underrun(1000 + i);
  assert.equal(p.targetMs, 400); // capped
  p.tick(1009 + 4999);
  assert.equal(p.targetMs, 400); // not yet healthy long enough
  p.tick(1009 + 5000);
  assert.equal(p.targetMs, 380); // one frame less
  for (let t = 1009 + 10000; t < 200000; t += 5000) p.tick(t);
  assert.equal(p.targetMs, 200); // never below the minimum
});

test("the target never drops below what the jitter needs", () => {
  const p = new JitterPolicy({ minBufferMs: 100, maxBufferMs: 500, frameMs: 20, healthyMs: 1000 });
  p.jitterMs = 60;
  p.underrun(0);
  p.underrun(0);
  for (let t = 1000; t < 60000; t += 1000) p.tick(t);
  assert.equal(p.targetMs, 180); // 3 × jitter
});

test("flow control pauses above the high mark and resumes below the low one, once each", () => {
  const f = new FlowControl({ highMs: 400, lowMs: 200 });
  assert.deepEqual([300, 401, 450, 300, 199, 150].map((b) => f.update(b)), [null, "pause", null, null, "resume", null]);
  assert.throws(() => new FlowControl({ highMs: 100, lowMs: 100 }), RangeError);
});

function feed(p, n, from = 0) {
  p.reserve(n);
  for (let i = 0; i < n; i++) p.push((from + i + 1) / 1000);
}

test("playout starts at the target with the samples exactly, and counts an underrun with a fade", () => {
  const p = new Playout(1000, 8);
  p.targetSamples = 256;
  const out = new Float32Array(128);
  feed(p, 200);
  p.render(out);
  assert.ok(out.every((s) => s === 0), "silence until the target is buffered");
  feed(p, 100, 200);
  p.render(out);
  assert.deepEqual(Array.from(out), Array.from({ length: 128 }, (_, i) => Math.fround((i + 1) / 1000)));
  p.render(out); // 172 left: a whole quantum
  p.render(out); // 44 left: an underrun, faded out, then silence
  assert.equal(p.underruns, 1);
  assert.ok(Math.abs(out[43]) < Math.abs(p.ring[(p.read - 1) % p.capacity]) + 1e-9);
  assert.ok(out.subarray(44).every((s) => s === 0));
  assert.equal(p.playing, false);
});

test("draining to empty at an utterance's end is not an underrun; cancel drops everything", () => {
  const p = new Playout(1000, 8);
  p.targetSamples = 100;
  const out = new Float32Array(128);
  feed(p, 150);
  p.drain();
  p.render(out);
  p.render(out);
  assert.equal(p.underruns, 0);
  assert.equal(p.buffered, 0);
  feed(p, 500);
  p.render(out);
  p.cancel();
  assert.equal(p.buffered, 0);
  p.render(out);
  assert.ok(out.every((s) => s === 0));
});

test("a full ring drops the oldest, and flush keeps what it is told", () => {
  const p = new Playout(100, 8);
  feed(p, 150);
  assert.equal(p.buffered, 100);
  assert.equal(p.dropped, 50);
  p.flush(40);
  assert.equal(p.buffered, 40);
});
