import { startDashboard, DashboardError } from "../dashboard/server.js";
import { drainQuietly } from "../runtime/connection.js";
import { openJetStream, topology } from "../runtime/topology.js";
import { CliError, clientConnection, configFrom, Exit, joinServer, type CommonFlags } from "./common.js";
import { onShutdown } from "./signals.js";

const say = (msg: string) => process.stderr.write(`ado: ${msg}\n`);

export interface DashboardFlags extends CommonFlags {
  port: number;
  host: string;
}

/** `ado dashboard`: the live web dashboard of the runs on a server, until interrupted. */
export async function dashboardCommand(flags: DashboardFlags): Promise<number> {
  const { config, logger } = await configFrom(flags);
  const server = await joinServer(config, "ado dashboard");
  const nc = await clientConnection(server, logger, "dashboard");
  try {
    await openJetStream(nc);
    const dashboard = await startDashboard({ nc, topo: topology(config.prefix), logger, port: flags.port, host: flags.host, heartbeatMs: config.heartbeatMs }).catch((err) => {
      throw err instanceof DashboardError ? new CliError(err.message.replace("--dashboard-port", "--port")) : err;
    });
    process.stdout.write(`ado dashboard: ${dashboard.url} (runs on ${server.url}); Ctrl-C stops it\n`);
    await new Promise<void>((resolve) => {
      onShutdown(async () => {
        await dashboard.close();
        resolve();
      }, say);
    });
    return Exit.ok;
  } finally {
    await drainQuietly(nc);
  }
}
