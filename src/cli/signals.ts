/**
 * The one place that handles SIGINT/SIGTERM. The first signal runs the graceful path
 * (drain, hand back, stop the embedded server); a second one forces exit.
 */
export function onShutdown(graceful: (signal: NodeJS.Signals) => Promise<void> | void, log: (msg: string) => void): () => void {
  let count = 0;
  const handler = (signal: NodeJS.Signals) => {
    count++;
    if (count === 1) {
      void Promise.resolve(graceful(signal)).catch((err) => log(`shutdown failed: ${String(err)}`));
    } else {
      log("second signal: exiting now");
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
