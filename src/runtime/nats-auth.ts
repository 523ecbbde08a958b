/**
 * Who may do what on ado's NATS: one user per role, each with the narrowest publish and
 * subscribe permissions that let it work (the JetStream API and KV subjects included),
 * the server configuration that holds them (`ado nats config`), and how a process
 * authenticates (user and password, token, nkey seed, creds file, TLS with a CA and a
 * client certificate).
 *
 * Written for nats-server 2.9 (Debian's): permissions are per subject; the JetStream
 * API is reached through `$JS.API.<op>.<stream>[.<consumer>]` subjects, so a role gets
 * exactly the operations on exactly the streams it uses. Users are nkeys: the server
 * configuration holds only public keys, each role's seed is in a file of its own (0600).
 */
import { readFileSync } from "node:fs";
import { chmod, mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
// From the transport's re-exports of nats-core (nkeys is not a direct dependency).
import { credsAuthenticator, nkeyAuthenticator, nkeys, type Authenticator } from "@nats-io/transport-node";
import { ConfigError } from "./errors.js";
import { API_QUERIES, type ActorName, type Topology } from "./topology.js";

/**
 * The roles, each a NATS user of its own: the nine, then the actors and the
 * process that came later (recorder, notifier, dashboard, api), each with rights of its own.
 */
export const ROLES = ["admin", "scheduler", "balancer", "merger", "stealer", "scaler", "worker", "client", "observer", "recorder", "notifier", "dashboard", "api"] as const;
export type Role = (typeof ROLES)[number];

/** How a process authenticates to NATS; every field optional (none: no auth). */
export interface NatsAuth {
  user?: string;
  password?: string;
  token?: string;
  /** A file holding an nkey seed (`SU...`), as `ado nats config` writes per role. */
  nkeyFile?: string;
  /** A NATS creds file (JWT and seed, from `nsc`). */
  credsFile?: string;
  tls?: { ca?: string; cert?: string; key?: string };
  /** A directory of per-role seeds (`<role>.nk`, from `ado nats config`): each actor connects as its role. */
  roleDir?: string;
}

/** JetStream API operations, by what a role does with a stream. */
type StreamUse = "info" | "consume" | "readMsgs" | "deleteMsgs" | "purge" | "listConsumers" | "manageConsumers" | "watch" | "create";

/** Subjects of the JetStream API a role needs for one stream. */
function streamApi(stream: string, uses: readonly StreamUse[]): string[] {
  const api = "$JS.API";
  const out = new Set<string>([`${api}.STREAM.INFO.${stream}`]);
  for (const u of uses) {
    if (u === "consume" || u === "watch" || u === "manageConsumers") {
      // Ordered consumers (watches, event followers) and durables: create, read, pull.
      for (const s of [`${api}.CONSUMER.CREATE.${stream}`, `${api}.CONSUMER.CREATE.${stream}.>`, `${api}.CONSUMER.DURABLE.CREATE.${stream}.*`, `${api}.CONSUMER.INFO.${stream}.*`, `${api}.CONSUMER.MSG.NEXT.${stream}.*`, `${api}.CONSUMER.DELETE.${stream}.*`, `$JS.ACK.${stream}.>`, `$JS.FC.${stream}.>`]) out.add(s);
    }
    if (u === "manageConsumers" || u === "listConsumers") for (const s of [`${api}.CONSUMER.NAMES.${stream}`, `${api}.CONSUMER.LIST.${stream}`]) out.add(s);
    if (u === "readMsgs" || u === "watch") for (const s of [`${api}.STREAM.MSG.GET.${stream}`, `${api}.DIRECT.GET.${stream}`, `${api}.DIRECT.GET.${stream}.>`]) out.add(s);
    if (u === "deleteMsgs") out.add(`${api}.STREAM.MSG.DELETE.${stream}`);
    if (u === "purge") out.add(`${api}.STREAM.PURGE.${stream}`);
    if (u === "create") for (const s of [`${api}.STREAM.CREATE.${stream}`, `${api}.STREAM.UPDATE.${stream}`]) out.add(s);
  }
  return [...out];
}

export interface Permissions {
  publish: string[];
  subscribe: string[];
}

/**
 * The permissions of a role for a prefix. Everything not listed is refused by the
 * server: a worker cannot submit a run or write a run record, an observer cannot write
 * the control bucket, a client cannot delete a stream, no role reaches another prefix.
 */
export function rolePermissions(topo: Topology, role: Role): Permissions {
  const p = topo.prefix;
  const S = topo.streams;
  const kv = (b: keyof Topology["buckets"]) => `KV_${topo.buckets[b]}`;
  const kvPut = (b: keyof Topology["buckets"]) => `$KV.${topo.buckets[b]}.>`;
  const obj = `OBJ_${topo.objects.payloads}`;
  const objPut = `$O.${topo.objects.payloads}.>`;
  // Agent sessions kept with checkpoints (src/runtime/checkpoints.ts).
  const sessions = `OBJ_${topo.objects.sessions}`;
  const sessionsPut = `$O.${topo.objects.sessions}.>`;
  // Every role: replies to its own requests (JetStream API, PubAcks), the account info
  // nats.js asks for, and the services framework's discovery of its own kind.
  const publish = new Set<string>(["$JS.API.INFO"]);
  const subscribe = new Set<string>(["_INBOX.>"]);
  const pub = (...s: string[]) => s.forEach((x) => publish.add(x));
  const sub = (...s: string[]) => s.forEach((x) => subscribe.add(x));
  const api = (stream: string, ...uses: StreamUse[]) => pub(...streamApi(stream, uses));
  const actorService = (kind: string) => sub("$SRV.>", `${p}.svc.${kind}.>`);
  const readKv = (...b: (keyof Topology["buckets"])[]) => b.forEach((x) => api(kv(x), "watch"));
  const writeKv = (...b: (keyof Topology["buckets"])[]) => b.forEach((x) => (api(kv(x), "watch"), pub(kvPut(x))));
  const deadLetters = (actor: string) => pub(topo.subjects.deadLetter(actor));
  switch (role) {
    case "admin":
      // Provisioning: create and update every stream, bucket and object store of the prefix.
      for (const s of Object.values(S)) api(s.name, "create", "manageConsumers", "readMsgs", "deleteMsgs", "purge");
      for (const b of Object.keys(topo.buckets) as (keyof Topology["buckets"])[]) (api(kv(b), "create", "watch", "purge", "deleteMsgs"), pub(kvPut(b)));
      api(obj, "create", "watch", "purge");
      api(sessions, "create", "watch", "purge");
      pub(objPut, sessionsPut, "$JS.API.STREAM.NAMES", "$JS.API.STREAM.LIST", `${p}.>`, `$SRV.>`);
      sub(`${p}.>`);
      break;
    case "scheduler":
      api(S.submit.name, "consume");
      api(S.results.name, "consume");
      // Messages a server restart left where their consumers never deliver them (moveSkipped): the consumers'
      // positions, the messages, deletes, and publishing them again (so every work queue's subjects).
      for (const k of ["submit", "ready", "work", "results", "merge"] as const) api(S[k].name, "listConsumers", "readMsgs", "deleteMsgs");
      pub(topo.subjects.submit, `${p}.work.*`);
      api(S.ready.name);
      api(S.merge.name);
      api(S.events.name);
      pub(`${p}.ready.*`, `${p}.merge.*`, `${p}.evt.>`, `${p}.results.*`);
      // Agents' usage as it happens (core NATS): what a running attempt spent counts against the run's budget.
      sub(topo.subjects.usageAll);
      writeKv("runs", "tasks", "backlog", "control", "costs");
      // Stages' rate windows and circuits, shared by its replicas (compare-and-set).
      writeKv("stages");
      api(obj, "watch");
      pub(objPut);
      deadLetters("scheduler");
      actorService("scheduler");
      break;
    case "balancer":
      api(S.ready.name, "consume", "manageConsumers");
      api(S.work.name);
      pub(`${p}.work.*`, `${p}.evt.>`);
      sub(`${p}.load.*`);
      readKv("workers", "control");
      // The providers' governor: permits and circuit state by compare-and-set, its events.
      writeKv("providers");
      api(S.providers.name);
      pub(`${p}.provider.>`);
      deadLetters("balancer");
      actorService("balancer");
      break;
    case "merger":
      api(S.merge.name, "consume");
      pub(`${p}.results.*`, `${p}.evt.>`);
      writeKv("hitl", "worktrees");
      deadLetters("merger");
      actorService("merger");
      break;
    case "stealer":
      // Reads and deletes what a dead worker left on its subject, re-creates a worker's consumer.
      api(S.work.name, "readMsgs", "deleteMsgs", "manageConsumers");
      api(S.events.name, "readMsgs");
      pub(`${p}.ready.*`, `${p}.results.*`, `${p}.evt.>`, `${p}.svc.worker.>`, "$SRV.>");
      writeKv("workers", "leases", "worktrees", "sessions");
      readKv("claims");
      api(sessions, "watch");
      deadLetters("stealer");
      actorService("stealer");
      break;
    case "scaler":
      readKv("workers", "runs", "backlog");
      writeKv("leases", "scaler");
      api(S.ready.name, "manageConsumers");
      // The work stream's info by subject: each worker's queued work (without it the scaler
      // falls back to what the workers last reported, and the server logs a violation per decision).
      api(S.work.name);
      pub("$SRV.>", `${p}.svc.>`);
      actorService("scaler");
      break;
    case "worker":
      // Its own durable on its own subject; hands work back to the ready queue; results, events, load.
      api(S.work.name, "consume");
      api(S.ready.name);
      api(S.results.name);
      api(S.events.name);
      pub(`${p}.ready.*`, `${p}.results.*`, `${p}.evt.>`, `${p}.load.*`);
      writeKv("claims", "workers", "worktrees", "sessions");
      readKv("control");
      // Outcomes reported to the providers' governor (circuit, adaptive limits), its events.
      writeKv("providers");
      api(S.providers.name);
      pub(`${p}.provider.>`);
      api(obj, "watch");
      api(sessions, "watch");
      pub(sessionsPut);
      deadLetters("worker");
      actorService("worker");
      break;
    case "api":
      // Serves the typed API (src/actors/api/): reads the records behind its queries;
      // writes control requests, budget changes, HITL resolutions, pools' live policies.
      // Submits runs (runs.submit: long prompts to the object store), forwards drains to workers, records --manual steps.
      sub(topo.subjects.apiAll);
      api(S.submit.name);
      api(S.results.name);
      api(S.merge.name);
      api(S.work.name);
      pub(topo.subjects.submit, `${p}.results.*`, `${p}.merge.*`, topo.subjects.drain("*"));
      writeKv("control", "scaler", "hitl");
      readKv("runs", "tasks", "claims", "workers");
      api(obj, "watch");
      pub(objPut);
      // tasks.status starts from the run's snapshot and the events after it (records.ts).
      readKv("snapshots");
      api(S.events.name, "consume");
      deadLetters("api");
      actorService("api");
      break;
    case "client":
      // Submit, follow its runs' events, control them (cancel, pause, resume, hitl), read state.
      api(S.submit.name);
      api(S.results.name);
      api(S.merge.name);
      api(S.events.name, "consume", "readMsgs");
      // Of the actors' own endpoints only their status: a drain or a rebalancing pass goes through the API (workers.drain) or is an operator's.
      pub(topo.subjects.submit, `${p}.results.*`, `${p}.merge.*`, `${p}.detach.*`, "$SRV.>", topo.subjects.status("*" as ActorName, "*"), topo.subjects.apiAll);
      sub(`${p}.detach.*`);
      writeKv("control");
      readKv("runs", "tasks", "backlog", "costs", "claims", "workers", "hitl", "worktrees");
      // `ado status` shows the providers' circuits and permits; `ado attach|status` start from the recorder's snapshots.
      readKv("providers", "snapshots");
      pub(kvPut("hitl"), kvPut("worktrees"));
      api(obj, "watch");
      pub(objPut);
      break;
    case "observer":
      // Read only: events, records, the services' queries.
      api(S.events.name, "consume", "readMsgs");
      readKv("runs", "tasks", "backlog", "costs", "claims", "workers", "control", "hitl", "worktrees", "snapshots", "providers", "scaler", "stages");
      pub("$SRV.>", topo.subjects.status("*" as ActorName, "*"), ...API_QUERIES.map((q) => topo.subjects.api(q)));
      sub(`${p}.detach.*`);
      break;
    // ---- roles of the actors and the process added after the first nine ----
    case "recorder":
      // Folds every event (an ordered consumer) into run snapshots, under a lease; reads run records.
      api(S.events.name, "watch");
      readKv("runs");
      writeKv("snapshots", "leases");
      deadLetters("recorder");
      actorService("recorder");
      break;
    case "notifier":
      // One shared durable on the run-level events (created if absent; re-created by time after a
      // restart that rewrote the stream, told by reading the stream at a sequence); webhooks are HTTP, not NATS.
      api(S.events.name, "consume", "manageConsumers", "readMsgs");
      deadLetters("notifier");
      actorService("notifier");
      break;
    case "dashboard": {
      // A client (its buttons: cancel, pause, resume, HITL resolution) that also shows the ready queues' consumers.
      const client = rolePermissions(topo, "client");
      pub(...client.publish);
      sub(...client.subscribe);
      pub(`$JS.API.CONSUMER.INFO.${S.ready.name}.*`);
      break;
    }
  }
  return { publish: [...publish].sort(), subscribe: [...subscribe].sort() };
}

/** A role's keys: the public key goes in the server config, the seed to the role alone. */
export interface RoleKey {
  role: Role;
  publicKey: string;
  seed: string;
}

/** Fresh nkeys for every role. */
export function generateRoleKeys(): RoleKey[] {
  return ROLES.map((role) => {
    const kp = nkeys.createUser();
    return { role, publicKey: kp.getPublicKey(), seed: new TextDecoder().decode(kp.getSeed()) };
  });
}

const q = (s: string) => JSON.stringify(s);

/**
 * The server configuration's `authorization` block for a prefix: one nkey user per role
 * with its permissions. Include it from the server's config (`include ado-auth.conf`).
 * Responses to requests a role received are allowed (`allow_responses`): services and
 * the status endpoints answer on the requester's inbox.
 */
export function authorizationConfig(topo: Topology, keys: readonly Pick<RoleKey, "role" | "publicKey">[]): string {
  const users = keys.map(({ role, publicKey }) => {
    const perm = rolePermissions(topo, role);
    return [
      `    # ${role}`,
      `    {`,
      `      nkey: ${q(publicKey)}`,
      `      permissions: {`,
      `        publish: { allow: [${perm.publish.map(q).join(", ")}] }`,
      `        subscribe: { allow: [${perm.subscribe.map(q).join(", ")}] }`,
      `        allow_responses: true`,
      `      }`,
      `    }`,
    ].join("\n");
  });
  return [`# ado users for prefix '${topo.prefix}': generated by \`ado nats config\`; one nkey user per role.`, `authorization {`, `  users: [`, users.join("\n"), `  ]`, `}`, ""].join("\n");
}

/**
 * Writes the authorization block (`<dir>/<file>`) and each role's seed
 * (`<credsDir>/<role>.nk`, mode 0600, the directory 0700). Returns the paths.
 */
export async function writeNatsAuth(topo: Topology, opts: { dir: string; file: string; credsDir: string; keys?: RoleKey[] }): Promise<{ config: string; seeds: Record<Role, string> }> {
  const keys = opts.keys ?? generateRoleKeys();
  await mkdir(opts.dir, { recursive: true });
  await mkdir(opts.credsDir, { recursive: true, mode: 0o700 });
  await chmod(opts.credsDir, 0o700);
  const seeds = {} as Record<Role, string>;
  for (const k of keys) {
    const path = join(opts.credsDir, `${k.role}.nk`);
    await writeFile(path, k.seed + "\n", { mode: 0o600 });
    await chmod(path, 0o600); // an existing file keeps its mode on write
    seeds[k.role] = path;
  }
  const config = join(opts.dir, opts.file);
  await writeFile(config, authorizationConfig(topo, keys), { mode: 0o600 });
  return { config, seeds };
}

/** The connection options for `auth` (nats.js's names), reading the files it names. */
export function connectionAuth(auth: NatsAuth | undefined): { user?: string; pass?: string; token?: string; authenticator?: Authenticator; tls?: { caFile?: string; certFile?: string; keyFile?: string } } {
  if (!auth) return {};
  const read = (file: string, what: string) => {
    try {
      return readFileSync(file);
    } catch (err) {
      throw new ConfigError(`cannot read the NATS ${what} '${file}': ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, { cause: err });
    }
  };
  const out: ReturnType<typeof connectionAuth> = {};
  if (auth.user !== undefined) out.user = auth.user;
  if (auth.password !== undefined) out.pass = auth.password;
  if (auth.token !== undefined) out.token = auth.token;
  if (auth.nkeyFile) {
    const seed = new TextEncoder().encode(read(auth.nkeyFile, "nkey seed file").toString("utf8").trim());
    try {
      nkeys.fromSeed(seed);
    } catch (err) {
      throw new ConfigError(`the NATS nkey seed file '${auth.nkeyFile}' does not hold a seed (SU...): ${(err as Error).message}`, { cause: err });
    }
    out.authenticator = nkeyAuthenticator(seed);
  } else if (auth.credsFile) {
    out.authenticator = credsAuthenticator(read(auth.credsFile, "creds file"));
  }
  if (auth.tls && (auth.tls.ca || auth.tls.cert || auth.tls.key)) {
    if (!!auth.tls.cert !== !!auth.tls.key) throw new ConfigError("a TLS client certificate needs both nats.tls.cert and nats.tls.key (ADO_NATS_TLS_CERT, ADO_NATS_TLS_KEY)");
    out.tls = {
      ...(auth.tls.ca ? { caFile: auth.tls.ca } : {}),
      ...(auth.tls.cert ? { certFile: auth.tls.cert } : {}),
      ...(auth.tls.key ? { keyFile: auth.tls.key } : {}),
    };
  }
  return out;
}

/** The auth of one role: its seed in `roleDir` when there is one, else the shared settings. */
export function authForRole(auth: NatsAuth | undefined, role: Role): NatsAuth | undefined {
  if (!auth?.roleDir) return auth;
  const { roleDir, user: _u, password: _p, token: _t, credsFile: _c, ...rest } = auth;
  return { ...rest, nkeyFile: join(roleDir, `${role}.nk`) };
}
