/**
 * `ado nats config`: writes the NATS server's authorization for a prefix (one nkey user
 * per role, each with the narrowest permissions it works with: src/runtime/nats-auth.ts)
 * and each role's seed, readable only by the user. Include the written file from the
 * server's config; give each process its role's seed (ADO_NATS_NKEY, or the whole
 * directory as ADO_NATS_ROLE_DIR / config `nats.roleDir` for a stack of several actors).
 */
import { homedir } from "node:os";
import { join, resolve } from "node:path";
import { ROLES, writeNatsAuth } from "../runtime/nats-auth.js";
import { topology } from "../runtime/topology.js";
import { Exit } from "./common.js";

export interface NatsConfigFlags {
  prefix?: string;
  dir?: string;
  credsDir?: string;
}

/** The generated file's name: distinct from the server configs kept in `nats/`. */
export const authFileName = (prefix: string) => `ado-auth-${prefix}.conf`;

export async function natsConfigCommand(flags: NatsConfigFlags): Promise<number> {
  const topo = topology(flags.prefix ?? process.env.ADO_PREFIX ?? "ado");
  const dir = resolve(flags.dir ?? "nats");
  const credsDir = resolve(flags.credsDir ?? join(process.env.XDG_CONFIG_HOME || join(homedir(), ".config"), "ado", "nats", topo.prefix));
  const { config, seeds } = await writeNatsAuth(topo, { dir, file: authFileName(topo.prefix), credsDir });
  process.stdout.write(
    [
      `wrote ${config}: one user per role (${ROLES.join(", ")}) for prefix '${topo.prefix}'`,
      `      add to the server's config:  include ${JSON.stringify(config)}`,
      `wrote the roles' seeds (mode 0600) in ${credsDir}:`,
      ...ROLES.map((r) => `      ${r.padEnd(9)} ${seeds[r]}`),
      `a stack of several actors (ado up): ADO_NATS_ROLE_DIR=${credsDir} (or config nats.roleDir)`,
      `one role (ado worker, a client):   ADO_NATS_NKEY=${seeds.worker}`,
      "",
    ].join("\n"),
  );
  return Exit.ok;
}
