import type { Config } from "../runtime/config.js";
import { formatIssues } from "../runtime/graph.js";
import { PoolConfigSchema } from "../runtime/scaling.js";
import { CliError } from "./common.js";

/** The pool `ado run --auto-scale` adds when the config names no local one. */
export const AUTO_SCALE_POOL = "run";

/** Most workers `--auto-scale` may ask for (the same bound as `--workers`). */
const MAX_WORKERS = 256;

/**
 * `--auto-scale` as given: `true` (no value), or a range `min..max`, or one number (`max`,
 * from 0). Returns the bounds, or throws a CliError that shows the syntax.
 */
export function parseAutoScaleRange(value: string): { min: number; max: number } {
  const m = /^\s*(?:(\d+)\s*\.\.\s*)?(\d+)\s*$/.exec(value);
  const min = m?.[1] !== undefined ? Number(m[1]) : 0;
  const max = m ? Number(m[2]) : NaN;
  if (!m || !(max >= 1) || max > MAX_WORKERS || min > max) {
    throw new CliError(`--auto-scale '${value}' is not a range of workers: give min..max with 0 <= min <= max, 1 <= max <= ${MAX_WORKERS} (e.g. --auto-scale 0..6), or just max (--auto-scale 6)`);
  }
  return { min, max };
}

/**
 * The embedded stack's config for `ado run --auto-scale`: its workers are a pool the
 * scaler manages with the `local` backend (`ado worker` processes that come up while
 * tasks wait and go once idle), instead of a fixed number in the run's own process.
 *
 * The pool: the config's first `local` pool when it has one (its min and max replaced by
 * the range, if given), else a pool named `run` shaped like the workers the run would
 * have started (config `slots`, `worker.labels`, `worker.capabilities`) with the range,
 * or `0..<workers>` without one. Pools of other backends in the config are kept. The run
 * itself starts no worker of its own (`workers: 0`).
 */
export function autoScaleConfig(config: Config, flag: string | true, workersFlag?: number): Config {
  const range = flag === true ? undefined : parseAutoScaleRange(flag);
  if (range && workersFlag !== undefined) {
    throw new CliError(`--workers and --auto-scale ${flag} both size the pool: give one (--auto-scale ${range.min}..${workersFlag}, or --auto-scale alone for 0..${workersFlag})`);
  }
  const pools = [...config.scaler.pools];
  const i = pools.findIndex((p) => p.backend === "local");
  if (i >= 0) {
    if (range) pools[i] = { ...pools[i]!, ...range };
  } else {
    // From raw values, so the pool gets every default a config file's pool would.
    const max = range?.max ?? workersFlag ?? Math.max(1, config.workers);
    const raw = { name: AUTO_SCALE_POOL, backend: "local", min: range?.min ?? 0, max, slots: config.slots, labels: config.worker.labels, capabilities: config.worker.capabilities };
    const parsed = PoolConfigSchema.safeParse(raw);
    if (!parsed.success) throw new CliError(`--auto-scale: the run's pool: ${formatIssues(parsed.error)}`);
    pools.unshift(parsed.data);
  }
  return { ...config, workers: 0, scaler: { ...config.scaler, pools } };
}

