/**
 * bin/ado.mjs chooses what to run: the compiled CLI when it is up to date (no compile
 * on every command), the sources through tsx when one is newer, and a clear message
 * when neither can run. Tested on a copy of the launcher in a temporary layout.
 */
import { spawnSync } from "node:child_process";
import { copyFile, mkdir, mkdtemp, rm, symlink, utimes, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, describe, expect, it } from "vitest";

const BIN = fileURLToPath(new URL("../../bin/ado.mjs", import.meta.url));
const MODULES = fileURLToPath(new URL("../../node_modules", import.meta.url));
const dirs: string[] = [];
afterAll(async () => {
  await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true, maxRetries: 10 })));
});

async function layout(opts: { dist: boolean; tsx: boolean }): Promise<string> {
  const root = await mkdtemp(join(tmpdir(), "ado-bin-"));
  dirs.push(root);
  await mkdir(join(root, "bin"));
  await copyFile(BIN, join(root, "bin", "ado.mjs"));
  await mkdir(join(root, "src", "cli"), { recursive: true });
  await writeFile(join(root, "src", "cli", "main.ts"), 'const from: string = "sources"; console.log(from);\n');
  await writeFile(join(root, "package.json"), '{ "type": "module" }\n');
  const old = new Date(Date.now() - 60_000);
  await utimes(join(root, "src", "cli", "main.ts"), old, old);
  if (opts.dist) {
    await mkdir(join(root, "dist", "cli"), { recursive: true });
    await writeFile(join(root, "dist", "cli", "main.js"), 'console.log("compiled");\n');
    // Built before "now": an edit made now is newer even where the file system's clock is coarse (ms apart can share an mtime).
    const built = new Date(Date.now() - 30_000);
    await utimes(join(root, "dist", "cli", "main.js"), built, built);
  }
  if (opts.tsx) await symlink(MODULES, join(root, "node_modules"));
  return root;
}

const run = (root: string) => spawnSync(process.execPath, [join(root, "bin", "ado.mjs")], { encoding: "utf8", timeout: 60_000 });

describe("bin - compiled when up to date, sources otherwise", () => {
  it("bin - runs dist/ when no source is newer, without tsx", async () => {
    const root = await layout({ dist: true, tsx: false });
    const r = run(root);
    expect(r.stderr).toBe("");
    expect(r.stdout).toBe("compiled\n");
  });

  it("bin - runs the sources through tsx when one is newer than dist/, or dist/ is missing", async () => {
    const stale = await layout({ dist: true, tsx: true });
    await writeFile(join(stale, "src", "cli", "main.ts"), 'const from: string = "edited sources"; console.log(from);\n');
    expect(run(stale).stdout).toBe("edited sources\n");
    const none = await layout({ dist: false, tsx: true });
    expect(run(none).stdout).toBe("sources\n");
  }, 60_000);

  it("bin - says to build when dist/ is missing and tsx is not installed", async () => {
    const root = await layout({ dist: false, tsx: false });
    const r = run(root);
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/the compiled CLI \(dist\/\) is missing.*run `npm run build`/);
  });
});
