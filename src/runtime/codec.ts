import { headers as natsHeaders, type MsgHdrs } from "@nats-io/transport-node";
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

// Plain MessagePack (no msgpackr record extension), so any language can decode it.
const packr = new Packr({ useRecords: false, moreTypes: false, mapsAsObjects: true });

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
  return { data: packr.pack(checked), headers };
}

/** Encodes without headers (KV values, where the bucket names the type). */
export function encodeValue<T, I>(ref: SchemaRef<T, I>, value: I): Uint8Array {
  return packr.pack(ref.schema.parse(value));
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
  try {
    raw = packr.unpack(data);
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

/** Raw MessagePack decoding, unchecked: only to salvage fields from a rejected payload. */
export function unpackRaw(data: Uint8Array): unknown {
  return packr.unpack(data);
}
