/**
 * The credentials of an embedded stack (`ado run` without a server, `ado up`, `ado hitl`
 * and `ado runs resume` on a kept store): one nkey per role, generated the first time a
 * store is used and kept beside it (`<store>/auth/<role>.nk`, 0600, the directory 0700),
 * so only the user who started the stack can connect, and a stack started again on the
 * same store (a resumed run) keeps its keys. The server's configuration holds only the
 * public keys (nats-auth.ts `authorizationConfig`).
 */
import { chmod, mkdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { nkeys } from "@nats-io/transport-node";
import { authorizationConfig, ROLES, type RoleKey } from "./nats-auth.js";
import type { Topology } from "./topology.js";

/** The directory of a store's per-role seeds, `<store>/auth` (nats-server keeps its own data in `<store>/jetstream`). */
export const stackAuthDir = (storeDir: string): string => join(storeDir, "auth");

/** A role's seed file in a directory of seeds (what `NatsAuth.roleDir` names). */
export const roleSeedFile = (roleDir: string, role: string): string => join(roleDir, `${role}.nk`);

/**
 * The keys of every role for a store: those already there when every role has a valid
 * seed (a store used before), else fresh ones written 0600. Returns the directory of
 * seeds and the server's `authorization` block for the prefix.
 */
export async function stackCredentials(storeDir: string, topo: Topology): Promise<{ roleDir: string; authorization: string }> {
  const roleDir = stackAuthDir(storeDir);
  await mkdir(roleDir, { recursive: true, mode: 0o700 });
  // A directory made earlier with a looser umask, or copied: tightened every time.
  await chmod(roleDir, 0o700);
  let keys = await readKeys(roleDir);
  if (!keys) {
    keys = ROLES.map((role) => {
      const kp = nkeys.createUser();
      return { role, publicKey: kp.getPublicKey(), seed: new TextDecoder().decode(kp.getSeed()) };
    });
    for (const k of keys) {
      const path = roleSeedFile(roleDir, k.role);
      await writeFile(path, k.seed + "\n", { mode: 0o600 });
      await chmod(path, 0o600); // an existing file keeps its mode on write
    }
  }
  return { roleDir, authorization: authorizationConfig(topo, keys) };
}

/** Every role's key from its seed file, or undefined when one is missing or not a seed (then all are made anew). */
async function readKeys(roleDir: string): Promise<RoleKey[] | undefined> {
  const keys: RoleKey[] = [];
  for (const role of ROLES) {
    try {
      const seed = (await readFile(roleSeedFile(roleDir, role), "utf8")).trim();
      keys.push({ role, seed, publicKey: nkeys.fromSeed(new TextEncoder().encode(seed)).getPublicKey() });
    } catch {
      return undefined;
    }
  }
  return keys;
}
