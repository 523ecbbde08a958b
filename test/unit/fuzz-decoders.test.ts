/**
 * Property-based tests of every wire decoder (src/runtime/codec.ts `decode` with each
 * schema of SCHEMAS, the lease record): generated and mutated inputs never make an
 * exception escape other than DecodeError, every rejection names the schema and what
 * was wrong, and what is accepted can be sent on again (encodes without error).
 * `ADO_FUZZ_RUNS=100000` runs the 100,000 cases per property.
 */
import { createDeflate, deflateSync } from "node:zlib";
import fc from "fast-check";
import { headers as natsHeaders, type MsgHdrs } from "@nats-io/transport-node";
import { afterAll, describe, expect, it, vi } from "vitest";
import { COMPRESSION_HEADER, decode, encodeValue, MAX_INFLATED_BYTES, packRaw, SCHEMA_HEADER, type SchemaRef } from "../../src/runtime/codec.js";
import { DecodeError } from "../../src/runtime/errors.js";
import { LEASE } from "../../src/runtime/lease.js";
import { SCHEMAS } from "../../src/runtime/messages.js";
import { bytesMutationArb, damage, FUZZ_RUNS, FUZZ_TIMEOUT_MS, fuzzParams, mutate, mutationArb, nastyValue, prototypePolluted, SAMPLES } from "../helpers/fuzz.js";

vi.setConfig({ testTimeout: FUZZ_TIMEOUT_MS });

const DECODERS: Record<string, SchemaRef> = { ...SCHEMAS, LeaseRecord: LEASE };
const tally = new Map<string, { accepted: number; rejected: number }>();

/** Decodes and checks the outcome: a value that re-encodes, or a DecodeError that says what. */
function check(key: string, ref: SchemaRef, data: Uint8Array, headers?: MsgHdrs): void {
  const t = tally.get(key) ?? { accepted: 0, rejected: 0 };
  tally.set(key, t);
  let value: unknown;
  try {
    value = decode(ref, data, headers);
  } catch (err) {
    if (!(err instanceof DecodeError)) throw new Error(`${key}: ${String((err as Error)?.name)} escaped the decoder: ${String((err as Error)?.message)}`, { cause: err });
    // Every rejection names the schema and what was wrong, in words (never an object dump).
    // Plain checks, not expect(): this runs 100,000 times per property.
    const m = err.message;
    if (err.schema !== ref.name || !m.includes(`'${ref.name}`)) throw new Error(`${key}: a rejection that does not name '${ref.name}': ${m}`);
    if (/\[object Object\]|undefined: |: $/.test(m) || m.length < `invalid '${ref.name}' payload: `.length + 3) throw new Error(`${key}: a rejection that does not say what was wrong: ${m}`);
    t.rejected++;
    return;
  }
  t.accepted++;
  // Accepted means usable: it can be sent on as it is (senders validate on the way out).
  encodeValue(ref, value);
  const polluted = prototypePolluted();
  if (polluted) throw new Error(`${key}: decoding reached Object.prototype (${polluted})`);
}

/** Header values a message can carry: the right one, another schema's, a bad version, noise. */
const headerArb = (ref: SchemaRef) =>
  fc.option(
    fc.oneof(
      fc.constant(`${ref.name}/${ref.version}`),
      fc.constant(`${ref.name}/${ref.version + 1}`),
      fc.constantFrom(...Object.values(DECODERS).map((r) => `${r.name}/${r.version}`)),
      fc.tuple(fc.constant(ref.name), fc.string({ maxLength: 12 })).map(([n, v]) => `${n}/${v}`),
      fc.string({ maxLength: 30 }),
    ),
    { nil: undefined },
  );

function headersOf(value: string | undefined): MsgHdrs | undefined {
  if (value === undefined) return undefined;
  const h = natsHeaders();
  try {
    h.set(SCHEMA_HEADER, value);
  } catch {
    // nats.js refuses to send such a header value (CR/LF): it cannot arrive either.
    return undefined;
  }
  return h;
}

describe("fuzz - wire decoders", () => {
  afterAll(() => {
    // Shown in the test output: how many inputs each decoder accepted and rejected.
    const rows = [...tally].map(([k, t]) => `${k.padEnd(16)} accepted ${String(t.accepted).padStart(7)}  rejected ${String(t.rejected).padStart(7)}`);
    process.stdout.write(`fuzz - wire decoders (${FUZZ_RUNS} runs per property):\n  ${rows.join("\n  ")}\n`);
  });

  it("every schema of SCHEMAS has samples, and they decode (a schema added without one fails here: add it to test/helpers/fuzz.ts SAMPLES)", () => {
    expect(Object.keys(DECODERS).filter((k) => !SAMPLES[k]?.length)).toEqual([]);
    expect(Object.keys(SAMPLES).filter((k) => !DECODERS[k])).toEqual([]);
    for (const [key, ref] of Object.entries(DECODERS)) for (const s of SAMPLES[key]!) expect(() => decode(ref, packRaw(s)), key).not.toThrow();
  });

  it("a compressed payload that would inflate beyond the limit is refused, not inflated", async () => {
    // 260 MiB of zeros deflate to ~260 KB: a reader must not allocate what it says.
    const chunks: Buffer[] = [];
    const deflate = createDeflate();
    deflate.on("data", (c: Buffer) => chunks.push(c));
    const done = new Promise((r) => deflate.on("end", r));
    const mib = Buffer.alloc(1024 * 1024);
    for (let i = 0; i < MAX_INFLATED_BYTES / mib.length + 4; i++) deflate.write(mib);
    deflate.end();
    await done;
    const h = natsHeaders();
    h.set(COMPRESSION_HEADER, "deflate");
    expect(() => decode(SCHEMAS.SubmitRun, Buffer.concat(chunks), h)).toThrow(/cannot be inflated: it inflates to more than 256 MiB/);
  });

  for (const [key, ref] of Object.entries(DECODERS)) {
    const samples = SAMPLES[key] ?? [];
    describe(key, () => {
      it("random bytes and random MessagePack values are rejected with a DecodeError", () => {
        const input = fc.oneof(
          fc.uint8Array({ maxLength: 64 }).map((b) => b as Uint8Array),
          fc.oneof(nastyValue, fc.anything({ maxDepth: 3 })).map((v) => {
            try {
              return packRaw(v);
            } catch {
              return new Uint8Array([0xc1]); // msgpack's "never used" byte
            }
          }),
        );
        fc.assert(
          fc.property(input, headerArb(ref), (data, h) => check(key, ref, data, headersOf(h))),
          fuzzParams(),
        );
      });

      it.runIf(samples.length > 0)("mutated valid values decode or are rejected with what was wrong", () => {
        fc.assert(
          fc.property(fc.constantFrom(...samples), fc.array(mutationArb, { minLength: 1, maxLength: 3 }), headerArb(ref), (sample, muts, h) => {
            let data: Uint8Array;
            try {
              data = packRaw(mutate(sample, muts));
            } catch {
              return; // not representable in MessagePack: cannot arrive
            }
            check(key, ref, data, headersOf(h));
          }),
          fuzzParams(),
        );
      });

      it.runIf(samples.length > 0)("damaged compressed payloads (with the header, or as a KV value) are rejected or decode to a valid value", () => {
        fc.assert(
          fc.property(fc.constantFrom(...samples), bytesMutationArb, fc.boolean(), fc.constantFrom("deflate", "gzip", ""), (sample, ops, kv, how) => {
            const z = deflateSync(packRaw({ ...(sample as object), pad: "x".repeat(9_000) }));
            if (kv) return check(key, ref, damage(Uint8Array.from([0xc1, 0x01, ...z]), ops));
            const h = natsHeaders();
            if (how) h.set(COMPRESSION_HEADER, how);
            check(key, ref, damage(z, ops), h);
          }),
          fuzzParams(),
        );
      });

      it.runIf(samples.length > 0)("damaged encodings (bit flips, truncation, inserted bytes) are rejected or decode to a valid value", () => {
        fc.assert(
          fc.property(fc.constantFrom(...samples), bytesMutationArb, (sample, ops) => check(key, ref, damage(packRaw(sample), ops))),
          fuzzParams(),
        );
      });
    });
  }
});
