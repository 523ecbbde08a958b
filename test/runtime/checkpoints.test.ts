/**
 * CheckpointStore on a real nats-server: records in KV `sessions`, session copies in the
 * object store `sessions`. A record names only a stored object; a newer checkpoint
 * replaces the older copy; a late checkpoint of an earlier attempt never replaces a
 * later attempt's record (and leaves no copy behind).
 */
import { randomBytes } from "node:crypto";
import { Objm } from "@nats-io/obj";
import type { NatsConnection } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CheckpointStore } from "../../src/runtime/checkpoints.js";
import { provisioned, startTestServer, type TestServer } from "../helpers/nats.js";

let ts: TestServer;
let nc: NatsConnection;
beforeAll(async () => {
  ts = await startTestServer();
  nc = await ts.connect("checkpoints");
});
afterAll(async () => {
  await ts?.stop();
});

const C1 = "1".repeat(40);
const C2 = "2".repeat(40);
const record = (attempt: number, n: number, commit: string) => ({
  runId: "r1",
  taskId: "t1",
  attempt,
  n,
  workerId: "w-1",
  agent: "claude",
  sessionHost: "host:/home/a",
  at: new Date().toISOString(),
  commit,
  ref: `refs/ado/runs/r1/checkpoints/t1/${attempt}`,
  sessionId: "sess",
});

async function setup() {
  const { kv, topo } = await provisioned(nc);
  const store = new CheckpointStore(nc, kv.sessions, topo);
  const objects = await new Objm(nc).open(topo.objects.sessions);
  return { store, objects };
}

describe("checkpoints - records and stored sessions", () => {
  it("a checkpoint with a session: the record names the stored copy, which reads back byte for byte (a multi-chunk one too)", async () => {
    const { store } = await setup();
    // Larger than the object store's chunk size (128 KiB), random so gzip cannot hide a mix-up.
    const data = new Uint8Array(randomBytes(300 * 1024));
    const w = await store.put(record(1, 1, C1), data);
    expect(w).toMatchObject({ kind: "written", sessionStored: true, record: { commit: C1, session: { object: "r1.t1.1.1", bytes: data.length } } });
    const got = await store.get("r1", "t1");
    expect(got).toMatchObject({ attempt: 1, n: 1, commit: C1, sessionId: "sess" });
    expect(Buffer.from((await store.loadSession(got!))!).equals(Buffer.from(data))).toBe(true);
  });

  it("the next checkpoint replaces the record and deletes the copy the old record named", async () => {
    const { store, objects } = await setup();
    await store.put(record(1, 1, C1), new TextEncoder().encode("first"));
    await store.put(record(1, 2, C2), new TextEncoder().encode("second"));
    const got = (await store.get("r1", "t1"))!;
    expect(got).toMatchObject({ n: 2, commit: C2, session: { object: "r1.t1.1.2" } });
    expect(new TextDecoder().decode((await store.loadSession(got))!)).toBe("second");
    expect(await objects.getBlob("r1.t1.1.1")).toBeNull();
  });

  it("a late checkpoint of an earlier attempt is stale: the later attempt's record stays, and the late copy is not kept", async () => {
    const { store, objects } = await setup();
    await store.put(record(2, 1, C2), new TextEncoder().encode("attempt 2"));
    const late = await store.put(record(1, 5, C1), new TextEncoder().encode("attempt 1, late"));
    expect(late).toMatchObject({ kind: "stale", current: { attempt: 2 } });
    expect(await store.get("r1", "t1")).toMatchObject({ attempt: 2, commit: C2 });
    expect(await objects.getBlob("r1.t1.1.5")).toBeNull();
  });

  it("a checkpoint without session files: a record with no copy, and loadSession gives nothing", async () => {
    const { store } = await setup();
    const w = await store.put(record(1, 1, C1));
    expect(w).toMatchObject({ kind: "written", sessionStored: false });
    const got = (await store.get("r1", "t1"))!;
    expect(got.session).toBeUndefined();
    expect(await store.loadSession(got)).toBeUndefined();
    expect(await store.get("r1", "other")).toBeUndefined();
  });
});
