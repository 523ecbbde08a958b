import { headers as natsHeaders, type MsgHdrs } from "@nats-io/transport-node";
import { deflateSync, inflateSync } from "node:zlib";
import { Packr } from "msgpackr";
import { DecodeError } from "./errors.js";
import { formatIssues } from "./graph.js";
import type { z } from "zod";

/**
 * A schema with its wire name and version. `I` is what senders write (defaults optional).
 * Readers only care about the output type, so the input type defaults to any.
 */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type SchemaRef<T = unknown, I = any> = { name: string; version: number; schema: z.ZodType<T, I> };

/** Header naming the schema and version of a payload, e.g. `task.work/1`. */
export const SCHEMA_HEADER = "Ado-Schema";
/** `<name>/<version>`: a version is a whole number (`task.work/abc` once passed as version NaN). */
const SCHEMA_HEADER_VALUE = /^([^/\s]+)\/([1-9]\d{0,8})$/;

/**
 * Header saying the payload is compressed, and how: `deflate` (zlib). Set on payloads
 * larger than COMPRESS_MIN_BYTES that compress; anything else is plain MessagePack.
 */
export const COMPRESSION_HEADER = "Ado-Compression";
/** Payloads from this size on are compressed (smaller ones gain little and cost a round of zlib each). */
export const COMPRESS_MIN_BYTES = 8 * 1024;
/**
 * A KV value carries no header, so a compressed one starts with these two bytes: 0xc1 is
 * the one byte MessagePack never uses, so no plain value can start with it.
 */
const KV_DEFLATE_MAGIC = [0xc1, 0x01] as const;
/**
 * The most a compressed payload may inflate to. A few KB of zeros inflate to gigabytes:
 * without a bound, one such message would take down every reader.
 */
export const MAX_INFLATED_BYTES = 256 * 1024 * 1024;

/** The deflated form of `data` when it is large and compresses, else undefined (also for the API's JSON replies). */
export function deflated(data: Uint8Array): Uint8Array | undefined {
  if (data.length < COMPRESS_MIN_BYTES) return undefined;
  const z = deflateSync(data, { level: 6 });
  return z.length < data.length ? z : undefined;
}

// Plain MessagePack (no msgpackr record extension), so any language can decode it. A
// field whose value is `undefined` is left out: msgpackr would write it as an extension
// type (0xd4 0x00 0x00) that other languages' decoders refuse (examples/ado_client.py
// found events carrying one); absent is what `undefined` means to every reader.
// (`skipValues` is msgpackr's, missing from its type declarations.)
const packOptions = { useRecords: false, moreTypes: false, mapsAsObjects: true, skipValues: [undefined] };
const packr = new Packr(packOptions);

export interface Encoded {
  data: Uint8Array;
  headers: MsgHdrs;
}

/** Validates `value` against its schema and encodes it with the schema header. */
export function encode<T, I>(ref: SchemaRef<T, I>, value: I, extra?: Record<string, string>): Encoded {
  // Validating on the way out catches our own bugs at the sender, not at every reader.
  const checked = ref.schema.parse(value);
  const headers = natsHeaders();
  headers.set(SCHEMA_HEADER, `${ref.name}/${ref.version}`);
  if (extra) for (const [k, v] of Object.entries(extra)) headers.set(k, v);
  const data = packr.pack(checked);
  const z = deflated(data);
  if (!z) return { data, headers };
  headers.set(COMPRESSION_HEADER, "deflate");
  return { data: z, headers };
}

/** Encodes without headers (KV values, where the bucket names the type). */
export function encodeValue<T, I>(ref: SchemaRef<T, I>, value: I): Uint8Array {
  const data = packr.pack(ref.schema.parse(value));
  const z = deflated(data);
  if (!z) return data;
  const out = new Uint8Array(z.length + KV_DEFLATE_MAGIC.length);
  out.set(KV_DEFLATE_MAGIC);
  out.set(z, KV_DEFLATE_MAGIC.length);
  return out;
}

/** Inflates a payload sent with `Ado-Compression: deflate`, at most MAX_INFLATED_BYTES; DecodeError otherwise. */
export function inflated(z: Uint8Array, what: string): Uint8Array {
  try {
    return inflateSync(z, { maxOutputLength: MAX_INFLATED_BYTES });
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const why = code === "ERR_BUFFER_TOO_LARGE" ? `it inflates to more than ${MAX_INFLATED_BYTES / 1024 / 1024} MiB` : (err as Error).message;
    throw new DecodeError(`compressed '${what}' payload cannot be inflated: ${why}`, what, { cause: err });
  }
}

/** The MessagePack bytes of a payload: inflated when its header or (KV) its first bytes say it is compressed. */
function plain(ref: SchemaRef, data: Uint8Array, headers?: MsgHdrs): Uint8Array {
  const how = headers?.get(COMPRESSION_HEADER);
  let z: Uint8Array | undefined;
  if (how) {
    if (how !== "deflate") throw new DecodeError(`the '${ref.name}' payload's ${COMPRESSION_HEADER} header '${how}' names a compression this ado does not know (it reads 'deflate'): upgrade ado`, ref.name);
    z = data;
  } else if (data[0] === KV_DEFLATE_MAGIC[0] && data[1] === KV_DEFLATE_MAGIC[1]) {
    z = data.subarray(KV_DEFLATE_MAGIC.length);
  }
  if (!z) return data;
  return inflated(z, ref.name);
}

/**
 * Decodes a payload through its schema. Throws DecodeError naming the schema and the
 * first problem; the caller turns that into an error reply or a dead letter.
 */
export function decode<T, I>(ref: SchemaRef<T, I>, data: Uint8Array, headers?: MsgHdrs): T {
  const declared = headers?.get(SCHEMA_HEADER);
  if (declared) {
    const m = SCHEMA_HEADER_VALUE.exec(declared);
    if (!m) {
      throw new DecodeError(
        `the ${SCHEMA_HEADER} header '${declared}' is not '<schema>/<version>' with a whole version number (this reader expects '${ref.name}/${ref.version}')`,
        ref.name,
      );
    }
    const [, name, version] = m;
    if (name !== ref.name) {
      throw new DecodeError(`expected a '${ref.name}' payload but the message says it is '${declared}'`, ref.name);
    }
    if (Number(version) > ref.version) {
      throw new DecodeError(
        `'${declared}' is newer than this ado understands (${ref.name}/${ref.version}): upgrade ado`,
        ref.name,
      );
    }
  }
  let raw: unknown;
  const bytes = plain(ref, data, headers);
  try {
    raw = packr.unpack(bytes);
  } catch (err) {
    throw new DecodeError(`not valid MessagePack for '${ref.name}': ${(err as Error).message}`, ref.name, { cause: err });
  }
  const parsed = ref.schema.safeParse(raw);
  if (!parsed.success) {
    throw new DecodeError(`invalid '${ref.name}' payload: ${formatIssues(parsed.error)}`, ref.name, { cause: parsed.error });
  }
  return parsed.data;
}

/** Raw MessagePack encoding of any value, unchecked (for tests of malformed input). */
export function packRaw(value: unknown): Uint8Array {
  return packr.pack(value);
}

/** Raw MessagePack decoding, unchecked: only to salvage fields from a rejected payload (compressed or not). */
export function unpackRaw(data: Uint8Array, headers?: MsgHdrs): unknown {
  return packr.unpack(plain({ name: "payload", version: 1, schema: undefined as never }, data, headers));
}
