// EventChannel's two ways out: iteration, and listen() (the transports' fast path:
// values handed over synchronously from push(), pausing, ending, a listener that
// throws); listenable() over a plain async generator behaves the same.
import t from "tap";
import { EventChannel, listenable } from "../infer/event-channel.js";

t.test("listen: buffered values first, then each push synchronously, then closed", async (t) => {
  const channel = new EventChannel<number>();
  channel.push(1);
  channel.push(2);
  const seen: number[] = [];
  const done = channel.listen((v) => (seen.push(v), true));
  t.same(seen, [1, 2], "buffered values handed over inside listen()");
  channel.push(3);
  t.same(seen, [1, 2, 3], "a push reaches the listener before push() returns");
  channel.close();
  t.equal(await done, "closed");
  channel.push(4);
  t.same(seen, [1, 2, 3]);
});

t.test("listen: false pauses; later values wait for the next listen()", async (t) => {
  const channel = new EventChannel<number>();
  const seen: number[] = [];
  const first = channel.listen((v) => (seen.push(v), v !== 2));
  channel.push(1);
  channel.push(2);
  channel.push(3);
  t.equal(await first, "paused");
  t.same(seen, [1, 2]);
  channel.close();
  t.equal(await channel.listen((v) => (seen.push(v), true)), "closed", "buffered values still delivered after close");
  t.same(seen, [1, 2, 3]);
});

t.test("listen: a throwing listener ends the stream, tells the producer, rejects", async (t) => {
  let returned = 0;
  const channel = new EventChannel<number>(() => returned++);
  const done = channel.listen(() => {
    throw new Error("boom");
  });
  channel.push(1);
  await t.rejects(done, { message: "boom" });
  t.equal(returned, 1);
  channel.push(2);
  t.equal(await channel.listen(() => true), "closed");
});

t.test("stop and discard end a listen() as closed", async (t) => {
  let returned = 0;
  const channel = new EventChannel<number>(() => returned++);
  const done = channel.listen(() => true);
  channel.stop();
  t.equal(await done, "closed");
  t.equal(returned, 1);
  channel.stop();
  t.equal(returned, 1, "once");
});

t.test("listenable() over an async generator: same results, an await per value", async (t) => {
  let finished = false;
  async function* gen() {
    try {
      for (let i = 1; i <= 4; i++) yield i;
    } finally {
      finished = true;
    }
  }
  const stream = listenable(gen());
  const seen: number[] = [];
  t.equal(await stream.listen((v) => (seen.push(v), v !== 2)), "paused");
  t.equal(await stream.listen((v) => (seen.push(v), true)), "closed");
  t.same(seen, [1, 2, 3, 4]);
  t.ok(finished);

  finished = false;
  const early = listenable(gen());
  t.equal(await early.listen(() => false), "paused");
  early.stop();
  await new Promise((r) => setImmediate(r));
  t.ok(finished, "stop() returns the generator");

  const channel = new EventChannel<number>();
  t.equal(listenable(channel), channel, "a Listenable is used as is");
});
