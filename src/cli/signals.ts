/**
 * The one place that handles SIGINT/SIGTERM. The first signal runs the graceful path
 * (drain, hand back, stop the embedded server); a second one forces exit.
 */
export function onShutdown(graceful: (signal: NodeJS.Signals) => Promise<void> | void, log: (msg: string) => void): () => void {
  return onSignals([graceful], log);
}

/**
 * Signal `n` (SIGINT or SIGTERM, counted together) runs `steps[n - 1]`; one more than
 * there are steps exits at once with 130. `ado run` uses it for "first Ctrl-C: finish
 * what runs; second: kill it; third: exit now". Returns a function that removes the
 * handlers.
 */
export function onSignals(steps: ReadonlyArray<(signal: NodeJS.Signals) => Promise<void> | void>, log: (msg: string) => void): () => void {
  let count = 0;
  const handler = (signal: NodeJS.Signals) => {
    const step = steps[count++];
    if (step) {
      void Promise.resolve()
        .then(() => step(signal))
        .catch((err) => log(`shutdown failed: ${String(err)}`));
    } else {
      log(`${count === 2 ? "second" : "another"} signal: exiting now`);
      process.exit(130);
    }
  };
  process.on("SIGINT", handler);
  process.on("SIGTERM", handler);
  return () => {
    process.off("SIGINT", handler);
    process.off("SIGTERM", handler);
  };
}
