/**
 * What every benchmark script shares: flag parsing, waiting for a quiet machine,
 * printing the report, and the process entry point.
 */

/** Parses a non-negative integer flag value, or throws the usage text. */
export function nonNegativeInt(v: string | undefined, flag: string, usage: string): number {
  const n = Number(v);
  if (!v || !Number.isInteger(n) || n < 0) throw new Error(`${flag} needs a non-negative integer\n${usage}`);
  return n;
}

/**
 * Waits (up to maxMs) until other processes have used under 15% of a core for 3
 * samples in a row. `sample` measures one second and returns that figure (% of a core).
 * Returns the last reading.
 */
export async function waitQuiet(
  sample: () => Promise<number | undefined>,
  maxMs: number,
  log: (m: string) => void,
  signal?: AbortSignal,
): Promise<number | undefined> {
  const by = Date.now() + maxMs;
  let other: number | undefined;
  for (let quiet = 0; ; ) {
    other = await sample();
    quiet = (other ?? 0) < 15 ? quiet + 1 : 0;
    if (quiet >= 3 || Date.now() >= by || signal?.aborted) return other;
    log(`waiting for a quiet machine (other processes: ${other}% of a core)`);
  }
}

/**
 * waitQuiet with one-second samples of a CPU meter: `other` turns two snapshots into
 * what other processes used (% of a core), as the benchmark counts it.
 */
export function waitQuietOn<S>(
  meter: { snapshot(): S },
  other: (a: S, b: S) => number | undefined,
  maxMs: number,
  log: (m: string) => void,
): Promise<number | undefined> {
  return waitQuiet(
    async () => {
      const a = meter.snapshot();
      await new Promise((r) => setTimeout(r, 1_000));
      return other(a, meter.snapshot());
    },
    maxMs,
    log,
  );
}

/** Prints one JSON object (`--json`) or the rendered tables. */
export function printReport<R>(report: R, json: boolean, render: (r: R) => string): void {
  process.stdout.write((json ? JSON.stringify(report) : render(report)) + "\n");
}

/** Progress lines on stderr, silent with `--json` (stdout then carries only the JSON). */
export type Log = (message: string) => void;

/**
 * A benchmark's entry point: parses the flags (a bad flag prints the usage and exits
 * 2), then runs `main` with them and a progress logger, and sets the exit code it
 * returns (1 on an unexpected error).
 */
export function runMain<O extends { json: boolean }>(name: string, parse: (argv: string[]) => O, main: (opts: O, log: Log) => Promise<number>): void {
  let opts: O;
  try {
    opts = parse(process.argv.slice(2));
  } catch (err) {
    console.error((err as Error).message);
    process.exitCode = 2;
    return;
  }
  const log: Log = (m) => {
    if (!opts.json) process.stderr.write(`[${name}] ${m}\n`);
  };
  main(opts, log).then(
    (code) => {
      process.exitCode = code;
    },
    (err) => {
      console.error(err);
      process.exitCode = 1;
    },
  );
}

/** How one flag is read: a switch (`on`), or a flag taking a value. */
export type FlagHandler = { on: () => void } | ((value: string, flag: string) => void);

/**
 * Reads `argv` against `flags`. Every benchmark also takes `--quick` (the caller reads it
 * first, as it changes the defaults), `--json`, `--wait-quiet SEC` and `-h`/`--help`. An
 * unknown flag, or a flag without its value, throws the usage text.
 */
export function parseFlags(
  argv: readonly string[],
  usage: string,
  common: { json: boolean; waitQuietMs: number },
  flags: Record<string, FlagHandler>,
): void {
  const { int } = flagValues(usage);
  const all: Record<string, FlagHandler> = {
    "--quick": { on: () => undefined },
    "--json": { on: () => (common.json = true) },
    "--wait-quiet": (v, f) => (common.waitQuietMs = int(v, f) * 1000),
    ...flags,
  };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i]!;
    if (flag === "-h" || flag === "--help") {
      console.log(usage);
      process.exit(0);
    }
    const handler = all[flag];
    if (!handler) throw new Error(`unknown argument '${flag}'\n${usage}`);
    if (typeof handler !== "function") {
      handler.on();
      continue;
    }
    const value = argv[++i];
    if (value === undefined) throw new Error(`${flag} needs a value\n${usage}`);
    handler(value, flag);
  }
}

/** Flag value parsers that throw the usage text. Lists are comma-separated and must not be empty. */
export function flagValues(usage: string) {
  const list = (v: string, flag: string) => {
    const items = v.split(",").map((s) => s.trim()).filter(Boolean);
    if (!items.length) throw new Error(`${flag} needs at least one value\n${usage}`);
    return items;
  };
  return {
    /** A non-negative integer, raised to `min`. */
    int: (v: string | undefined, flag: string, min = 0) => Math.max(min, nonNegativeInt(v, flag, usage)),
    /** Non-negative integers, each raised to `min`. */
    ints: (v: string, flag: string, min = 0) => list(v, flag).map((s) => Math.max(min, nonNegativeInt(s, flag, usage))),
    /** Names, each one of `allowed`. */
    oneOf: <T extends string>(v: string, flag: string, allowed: readonly T[]): T[] =>
      list(v, flag).map((s) => {
        if (!(allowed as readonly string[]).includes(s)) throw new Error(`${flag} takes ${allowed.join(", ")} (got '${s}')\n${usage}`);
        return s as T;
      }),
    list,
  };
}

/** Resolves with p, or rejects once the signal aborts. */
export function orAbort<T>(p: Promise<T>, signal: AbortSignal): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(new Error(`benchmark time budget exhausted (${String(signal.reason ?? "aborted")})`));
    if (signal.aborted) return onAbort();
    signal.addEventListener("abort", onAbort, { once: true });
    p.then(resolve, reject).finally(() => signal.removeEventListener("abort", onAbort));
  });
}
