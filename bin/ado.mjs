#!/usr/bin/env node
// Runs the TypeScript CLI through tsx's loader, so there is no build step between a
// checkout and a working `ado` (npx ado, npm link, or the package's bin).
import { register } from "tsx/esm/api";

register();
await import("../src/cli/main.ts");
