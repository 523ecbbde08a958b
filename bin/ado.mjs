#!/usr/bin/env node
// Runs the compiled CLI (dist/, written by `npm run build` and scripts/setup.sh), which
// starts without compiling anything. In a checkout being worked on, where no dist/ is
// built or a source file is newer than it, runs the TypeScript through tsx's loader
// instead, so an edit takes effect without a build step.
import { readdirSync, statSync } from "node:fs";
import { fileURLToPath } from "node:url";

const root = fileURLToPath(new URL("..", import.meta.url));
const compiled = `${root}dist/cli/main.js`;

/** mtime of the compiled entry, or 0 when there is none. */
function builtAt() {
  return statSync(compiled, { throwIfNoEntry: false })?.mtimeMs ?? 0;
}

/** Whether some source file changed after the build (or there are no sources: an installed package). */
function sourcesNewerThan(time) {
  let names;
  try {
    names = readdirSync(`${root}src`, { recursive: true });
  } catch {
    return false;
  }
  for (const name of names) {
    if (name.endsWith(".ts") && statSync(`${root}src/${name}`).mtimeMs > time) return true;
  }
  return false;
}

const built = builtAt();
if (built > 0 && !sourcesNewerThan(built)) {
  process.setSourceMapsEnabled(true);
  await import(compiled);
} else {
  let register;
  try {
    ({ register } = await import("tsx/esm/api"));
  } catch {
    process.stderr.write(
      `ado: ${built ? "the compiled CLI in dist/ is older than src/" : "the compiled CLI (dist/) is missing"}, and tsx is not installed to run the sources: run \`npm run build\` in ${root}\n`,
    );
    process.exit(2);
  }
  register();
  await import("../src/cli/main.ts");
}
