import { JetStreamApiError, JetStreamError } from "@nats-io/jetstream";
import { errors } from "@nats-io/nats-core";
import { describe, expect, it } from "vitest";
import { GitCommandError, MergeRaceError, UnknownRevisionError } from "../../src/git/index.js";
import { IntegrationAbortedError, InvalidIntegrateOptionsError } from "../../src/git/index.js";
import { AdoError, ConfigError } from "../../src/runtime/errors.js";
import { isTransient } from "../../src/runtime/transient.js";

const apiError = (code: number, err_code: number, description = "x") => new JetStreamApiError({ code, err_code, description });

describe("transient - what is worth another try", () => {
  it("transient - NATS timeouts, no responders, closed or draining connections", () => {
    expect(isTransient(new errors.TimeoutError())).toBe(true);
    expect(isTransient(new errors.RequestError("no responders", { cause: new errors.NoRespondersError("$JS.API.x") }))).toBe(true);
    expect(isTransient(new errors.ClosedConnectionError())).toBe(true);
    expect(isTransient(new errors.DrainingConnectionError())).toBe(true);
    expect(isTransient(new errors.ConnectionError("reconnecting"))).toBe(true);
    // What nats.js throws for a JetStream request nobody answered: judged by its cause.
    expect(isTransient(new JetStreamError("jetstream is not enabled", { cause: new errors.RequestError("", { cause: new errors.NoRespondersError("s") }) }))).toBe(true);
    expect(isTransient(new Error("wrapped", { cause: new errors.TimeoutError() }))).toBe(true);
  });

  it("transient - JetStream API 503s, compare-and-set races and a bucket being re-created; not a bad request", () => {
    expect(isTransient(apiError(503, 10008, "JetStream system temporarily unavailable"))).toBe(true);
    expect(isTransient(apiError(400, 10071, "wrong last sequence: 4"))).toBe(true);
    expect(isTransient(apiError(404, 10059, "stream not found"))).toBe(true);
    expect(isTransient(apiError(400, 10052, "bad request"))).toBe(false);
    expect(isTransient(apiError(500, 10039, "jetstream not enabled for account"))).toBe(false);
  });

  it("transient - ado errors say it themselves: a git lock and a lost race pass, a bad revision or setting does not", () => {
    const lock = new GitCommandError(["update-ref"], { exitCode: 128, stdout: "", stderr: "fatal: cannot lock ref 'refs/heads/x': Unable to create '/r/.git/refs/heads/x.lock': File exists." });
    expect(isTransient(lock)).toBe(true);
    expect(isTransient(new MergeRaceError("ado/r/integration", 8))).toBe(true);
    expect(isTransient(new IntegrationAbortedError("ado/r/integration"))).toBe(true);
    expect(isTransient(new GitCommandError(["merge-tree"], { exitCode: 128, stdout: "", stderr: "fatal: not a valid object name" }))).toBe(false);
    expect(isTransient(new UnknownRevisionError("/r", "nope"))).toBe(false);
    expect(isTransient(new InvalidIntegrateOptionsError("rule 1 has no paths"))).toBe(false);
    expect(isTransient(new ConfigError("bad"))).toBe(false);
    // An ado error's own word wins over what it wraps.
    expect(isTransient(new AdoError("wrapped", { cause: new errors.TimeoutError(), retryable: false }))).toBe(false);
  });

  it("transient - plain errors are not, unless a system call was busy for a moment", () => {
    expect(isTransient(new Error("boom"))).toBe(false);
    expect(isTransient(new TypeError("x is undefined"))).toBe(false);
    expect(isTransient(Object.assign(new Error("too many open files"), { code: "EMFILE" }))).toBe(true);
    expect(isTransient(Object.assign(new Error("no such file"), { code: "ENOENT" }))).toBe(false);
    expect(isTransient(undefined)).toBe(false);
    expect(isTransient("a string")).toBe(false);
  });
});
