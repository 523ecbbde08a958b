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

/** Prints one JSON object (`--json`) or the rendered tables. */
export function printReport<R>(report: R, json: boolean, render: (r: R) => string): void {
  process.stdout.write((json ? JSON.stringify(report) : render(report)) + "\n");
}

/** Runs a benchmark's main and sets the exit code it returns (1 on an unexpected error). */
export function runMain(main: () => Promise<number>): void {
  main().then(
    (code) => {
      process.exitCode = code;
    },
    (err) => {
      console.error(err);
      process.exitCode = 1;
    },
  );
}
