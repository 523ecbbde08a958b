/**
 * Summarizes V8 .cpuprofile files (from `node --cpu-prof`) by function and by package.
 *
 *   node --import tsx --cpu-prof --cpu-prof-dir=/tmp/prof bench/run.ts --phases pipeline
 *   npx tsx bench/profile-summary.ts /tmp/prof [--top 30] [--match src/]
 *
 * Self time: samples whose top frame is the function. Total time: samples with the
 * function anywhere on the stack (each sample counted once per function).
 */
import { readdirSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";

interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
}
interface ProfileNode {
  id: number;
  callFrame: CallFrame;
  children?: number[];
}
interface Profile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

function shortUrl(url: string): string {
  if (!url) return "";
  const u = url.replace(/^file:\/\//, "");
  const nm = u.lastIndexOf("node_modules/");
  if (nm >= 0) return u.slice(nm + "node_modules/".length);
  const src = u.search(/\/(src|bench|test)\//);
  if (src >= 0) return u.slice(src + 1);
  return u;
}

/** Package or area a frame belongs to. */
function bucketOf(url: string, fn: string): string {
  if (!url) return fn.startsWith("(") ? fn : "(native/builtin)";
  if (url.startsWith("node:")) return "node:" + url.slice(5).split("/")[0];
  const u = shortUrl(url);
  const m = /^(@[^/]+\/[^/]+|[^/]+)\//.exec(u);
  if (url.includes("node_modules/") && m) return m[1]!;
  if (u.startsWith("src/")) return u.split("/").slice(0, 3).join("/").replace(/\.ts$/, "");
  return u.split("/")[0] ?? u;
}

function load(path: string): Profile[] {
  const st = statSync(path);
  const files = st.isDirectory()
    ? readdirSync(path)
        .filter((f) => f.endsWith(".cpuprofile"))
        .map((f) => join(path, f))
    : [path];
  return files.map((f) => JSON.parse(readFileSync(f, "utf8")) as Profile);
}

function main(): void {
  const args = process.argv.slice(2);
  const path = args.find((a) => !a.startsWith("--"));
  if (!path) {
    console.error("usage: tsx bench/profile-summary.ts <file.cpuprofile|dir> [--top N] [--match STR]");
    process.exit(2);
  }
  const topIdx = args.indexOf("--top");
  const top = topIdx >= 0 ? Number(args[topIdx + 1]) : 30;
  const matchIdx = args.indexOf("--match");
  const match = matchIdx >= 0 ? args[matchIdx + 1] : undefined;

  const self = new Map<string, number>();
  const total = new Map<string, number>();
  const buckets = new Map<string, number>();
  const bucketTotal = new Map<string, number>();
  let all = 0;
  let idle = 0;
  for (const p of load(path)) {
    const byId = new Map<number, ProfileNode>();
    const parent = new Map<number, number>();
    for (const n of p.nodes) {
      byId.set(n.id, n);
      for (const c of n.children ?? []) parent.set(c, n.id);
    }
    const keyOf = (n: ProfileNode) => {
      const cf = n.callFrame;
      const name = cf.functionName || "(anonymous)";
      const u = shortUrl(cf.url);
      return u ? `${name}  ${u}:${cf.lineNumber + 1}` : name;
    };
    for (let i = 0; i < p.samples.length; i++) {
      const dt = (p.timeDeltas[i] ?? 0) / 1000; // ms
      const node = byId.get(p.samples[i]!);
      if (!node) continue;
      all += dt;
      if (node.callFrame.functionName === "(idle)") {
        idle += dt;
        continue;
      }
      const k = keyOf(node);
      self.set(k, (self.get(k) ?? 0) + dt);
      const b = bucketOf(node.callFrame.url, node.callFrame.functionName);
      buckets.set(b, (buckets.get(b) ?? 0) + dt);
      const seen = new Set<string>();
      const seenB = new Set<string>();
      for (let id: number | undefined = node.id; id !== undefined; id = parent.get(id)) {
        const n = byId.get(id)!;
        const key = keyOf(n);
        if (!seen.has(key)) {
          seen.add(key);
          total.set(key, (total.get(key) ?? 0) + dt);
        }
        const bk = bucketOf(n.callFrame.url, n.callFrame.functionName);
        if (!seenB.has(bk)) {
          seenB.add(bk);
          bucketTotal.set(bk, (bucketTotal.get(bk) ?? 0) + dt);
        }
      }
    }
  }
  const busy = all - idle;
  const pct = (v: number) => `${((v / busy) * 100).toFixed(1)}%`.padStart(6);
  const ms = (v: number) => `${v.toFixed(0)} ms`.padStart(9);
  console.log(`profile: ${all.toFixed(0)} ms sampled, ${idle.toFixed(0)} ms idle, ${busy.toFixed(0)} ms busy (percentages of busy)`);
  console.log(`\nTop ${top} functions by self time`);
  for (const [k, v] of [...self].sort((a, b) => b[1] - a[1]).slice(0, top)) console.log(`${ms(v)} ${pct(v)}  ${k}`);
  console.log(`\nSelf time by package / source file`);
  for (const [k, v] of [...buckets].sort((a, b) => b[1] - a[1]).slice(0, 25)) console.log(`${ms(v)} ${pct(v)}  ${k}  (total ${pct(bucketTotal.get(k) ?? 0).trim()})`);
  const filt = match ?? "src/";
  console.log(`\nTop ${top} functions by total (inclusive) time matching '${filt}'`);
  for (const [k, v] of [...total].filter(([k]) => k.includes(filt)).sort((a, b) => b[1] - a[1]).slice(0, top)) console.log(`${ms(v)} ${pct(v)}  ${k}`);
}

main();
