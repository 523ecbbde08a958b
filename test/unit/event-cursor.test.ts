import { describe, expect, it } from "vitest";
import { EventCursor } from "../../src/runtime/event-cursor.js";
import { WatchAbortedError, WatchLostError } from "../../src/runtime/client.js";
import { followRun } from "../../src/cli/follow.js";
import { createProgress } from "../../src/cli/progress.js";
import { CliError, Exit } from "../../src/cli/common.js";

const bytes = (s: string) => new TextEncoder().encode(s);

describe("event cursor - resuming a run's watch", () => {
  it("event cursor - shows each sequence once, and resumes after the last one read when the stream still holds it", () => {
    const c = new EventCursor();
    expect(c.resumeFrom(false)).toBeUndefined(); // nothing read: the watch's own start
    expect(c.accept(3, bytes("a"))).toBe(true);
    expect(c.accept(5, bytes("b"))).toBe(true);
    expect(c.accept(5, bytes("b"))).toBe(false);
    expect(c.accept(4, bytes("x"))).toBe(false);
    expect(c.holdsLast(bytes("b"))).toBe(true);
    expect(c.resumeFrom(true)).toBe(6);
    expect(c.rewrites).toBe(0);
  });

  it("event cursor - a stream rewritten under it (its last sequence now holds another event, or none) is read again from the oldest sequence remembered; only new content is shown", () => {
    const c = new EventCursor();
    for (const [seq, d] of [[10, "e1"], [11, "e2"], [12, "e3"], [13, "e4"]] as const) c.accept(seq, bytes(d));
    // Recovered up to 11; the run went on: 12 and 13 are new events now.
    expect(c.holdsLast(bytes("new-13"))).toBe(false);
    expect(c.holdsLast(undefined)).toBe(false);
    expect(c.resumeFrom(false)).toBe(10);
    expect(c.rewrites).toBe(1);
    expect([10, 11, 12, 13].map((seq, i) => c.accept(seq, bytes(["e1", "e2", "new-12", "new-13"][i]!)))).toEqual([false, false, true, true]);
    // An event published again after the restart, the same as one shown before it: not shown twice.
    expect(c.accept(14, bytes("e3"))).toBe(false);
    expect(c.accept(15, bytes("e5"))).toBe(true);
    expect(c.resumeFrom(c.holdsLast(bytes("e5")))).toBe(16);
    // Rewritten again: read again from the oldest remembered.
    expect(c.resumeFrom(false)).toBe(10);
  });

  it("event cursor - remembers a bounded window", () => {
    const c = new EventCursor(3);
    for (let seq = 1; seq <= 10; seq++) c.accept(seq, bytes(`e${seq}`));
    expect(c.resumeFrom(false)).toBe(8);
    expect(c.accept(8, bytes("e8"))).toBe(false);
    expect(c.accept(9, bytes("other"))).toBe(true);
  });
});

describe("follow - a watch that stops short of the run's end", () => {
  const follow = (fail: Error) =>
    followRun({ runId: "r1", view: createProgress("none", process.stdout), say: () => undefined, watch: () => Promise.reject(fail) });

  it("follow - a watch that ended without a Ctrl-C or `ado detach` fails (exit 1, what to do), never exits 0 as a detach", async () => {
    const err = await follow(new WatchAbortedError("stopped watching run r1", "signal")).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CliError);
    expect((err as CliError).exitCode).toBe(Exit.failed);
    expect((err as CliError).message).toMatch(/stopped following run r1 before its end .*ado status r1/);
  });

  it("follow - a watch that lost its connection fails with exit 1 and says how to find the run", async () => {
    const err = await follow(new WatchLostError("lost the connection to NATS while following run r1 ... ado attach r1")).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CliError);
    expect((err as CliError).exitCode).toBe(Exit.failed);
  });

  it("follow - `ado detach` from elsewhere stops following: the run goes on", async () => {
    const followed = await follow(new WatchAbortedError("stopped watching run r1", "detach"));
    followed.release();
    expect(followed.stopped).toEqual({ embedded: false, mergedWhileStopping: [], interrupted: [] });
  });
});
