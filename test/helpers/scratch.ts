import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll } from "vitest";

/** A temporary directory made before the file's (or describe block's) tests and removed after them. */
export interface Scratch {
  /** Its path; readable inside tests and hooks registered after `useScratch`. */
  readonly dir: string;
}

/** The one place tests make and remove their scratch directory. */
export function useScratch(prefix = "ado-test-"): Scratch {
  let dir: string | undefined;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), prefix));
  });
  afterAll(async () => {
    if (dir) await rm(dir, { recursive: true, force: true, maxRetries: 10 });
  });
  return {
    get dir() {
      if (dir === undefined) throw new Error("useScratch: read dir inside a test or a hook, not at module load");
      return dir;
    },
  };
}
