import { createServer, type IncomingMessage } from "node:http";
import type { AddressInfo } from "node:net";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Stack } from "../../src/actors/stack.js";
import { signature } from "../../src/actors/notifier/notifier.js";
import { AdoClient } from "../../src/runtime/client.js";
import { parseConfig } from "../../src/runtime/config.js";
import { connectNats } from "../../src/runtime/connection.js";
import { parseGraph } from "../../src/runtime/graph.js";
import { silentLogger } from "../../src/runtime/logger.js";
import { SCHEMAS } from "../../src/runtime/messages.js";
import { makeRepo } from "../helpers/repo.js";
import { eventually, startTestServer, uniqueTopology, type TestServer } from "../helpers/nats.js";

let ts: TestServer;
let dir: string;
beforeAll(async () => {
  ts = await startTestServer();
  dir = await mkdtemp(join(tmpdir(), "ado-hooks-"));
});
afterAll(async () => {
  await ts?.stop();
  await rm(dir, { recursive: true, force: true, maxRetries: 10 });
});

interface Received {
  headers: IncomingMessage["headers"];
  body: string;
}

describe("webhooks - the notifier posts a run's end to a local HTTP server", () => {
  it("signs the JSON body, retries a failed delivery with the same delivery id, and the body matches its schema", async () => {
    const received: Received[] = [];
    let failFirst = true;
    const http = createServer((req, res) => {
      let body = "";
      req.on("data", (d) => (body += d));
      req.on("end", () => {
        received.push({ headers: req.headers, body });
        // The first delivery fails: the notifier must try again.
        res.writeHead(failFirst ? 503 : 204).end();
        failFirst = false;
      });
    });
    await new Promise<void>((r) => http.listen(0, "127.0.0.1", () => r()));
    const url = `http://127.0.0.1:${(http.address() as AddressInfo).port}/hook`;
    const repo = await makeRepo();
    const topo = uniqueTopology();
    const config = parseConfig({ prefix: topo.prefix, server: ts.url, workers: 1, worktreeDir: join(dir, "wt"), heartbeatMs: 200, notifications: { webhooks: [{ url, secret: "s3cret" }], attempts: 3 } });
    const stack = await Stack.start({ config, logger: silentLogger });
    const nc = await connectNats({ servers: ts.url, name: "test-client", logger: silentLogger });
    try {
      const outcome = await new AdoClient(nc, topo).run({ graph: parseGraph('name: hooked\ntasks:\n  - { id: a, run: "echo a > a.txt" }\n'), repo: repo.dir });
      expect(outcome.status).toBe("succeeded");
      await eventually(() => received.length >= 2, 30_000, "the webhook tried twice");
      const [first, second] = received as [Received, Received];
      expect(second.body).toBe(first.body);
      expect(second.headers["ado-delivery"]).toBe(first.headers["ado-delivery"]);
      expect(second.headers["ado-event"]).toBe("run.completed");
      expect(second.headers["content-type"]).toBe("application/json");
      expect(second.headers["ado-signature"]).toBe(signature("s3cret", second.body));
      expect(signature("another secret", second.body)).not.toBe(second.headers["ado-signature"]);
      const body = SCHEMAS.WebhookBody.schema.parse(JSON.parse(second.body));
      expect(body).toMatchObject({ type: "run.completed", runId: outcome.runId, status: "succeeded", counts: { succeeded: 1 } });
      // Delivered once it succeeded: nothing more comes.
      await new Promise((r) => setTimeout(r, 1_500));
      expect(received).toHaveLength(2);
    } finally {
      await nc.drain();
      await stack.close();
      await new Promise<void>((r) => http.close(() => r()));
      await repo.cleanup();
    }
  }, 120_000);
});
