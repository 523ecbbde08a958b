import { execFileSync } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import { r1 } from "./stats.js";

/**
 * CPU accounting from /proc (Linux only; every reading degrades to `undefined`
 * elsewhere): which process saturates during a benchmark phase, node or nats-server.
 */

let tck: number | undefined;
/** Clock ticks per second of /proc/<pid>/stat times. */
export function clockTicks(): number {
  if (tck === undefined) {
    try {
      tck = Number(execFileSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).trim()) || 100;
    } catch {
      tck = 100;
    }
  }
  return tck;
}

/** utime + stime of a /proc stat file, in ticks. */
export function readTicks(statPath: string): number | undefined {
  try {
    const s = readFileSync(statPath, "utf8");
    // Fields after the command (which may hold spaces) start at field 3.
    const rest = s.slice(s.lastIndexOf(")") + 2).split(" ");
    return Number(rest[11]) + Number(rest[12]);
  } catch {
    return undefined;
  }
}

/** Machine-wide busy and total jiffies, from the first line of /proc/stat. */
function readSystem(): { busy: number; total: number } | undefined {
  try {
    const line = readFileSync("/proc/stat", "utf8").split("\n")[0]!;
    const v = line.trim().split(/\s+/).slice(1).map(Number);
    const idle = (v[3] ?? 0) + (v[4] ?? 0);
    const total = v.slice(0, 8).reduce((a, b) => a + b, 0);
    return { busy: total - idle, total };
  } catch {
    return undefined;
  }
}

/** The pid of the first process named `comm` whose parent is `ppid`. */
export function findChild(ppid: number, comm: string): number | undefined {
  let names: string[];
  try {
    names = readdirSync("/proc").filter((n) => /^\d+$/.test(n));
  } catch {
    return undefined;
  }
  for (const n of names) {
    try {
      const s = readFileSync(`/proc/${n}/stat`, "utf8");
      const name = s.slice(s.indexOf("(") + 1, s.lastIndexOf(")"));
      const parent = Number(s.slice(s.lastIndexOf(")") + 2).split(" ")[1]);
      if (parent === ppid && name === comm) return Number(n);
    } catch {
      // gone meanwhile
    }
  }
  return undefined;
}

export interface CpuSnapshot {
  at: number;
  ticks: Record<string, number | undefined>;
  system?: { busy: number; total: number };
}

/** CPU use between two snapshots, in percent of one core (200% = both cores of a 2-core box). */
export interface CpuUse {
  [target: string]: number | undefined;
}

/**
 * Samples named targets (stat file paths). `cpuPercent` reports, per target, the share
 * of one core it used; `machine` is the whole box's busy share in percent of all cores.
 */
export class CpuMeter {
  readonly cores: number;
  constructor(private readonly targets: Record<string, string>) {
    let cores = 1;
    try {
      cores = readFileSync("/proc/stat", "utf8").split("\n").filter((l) => /^cpu\d+ /.test(l)).length || 1;
    } catch {
      // keep 1
    }
    this.cores = cores;
  }

  snapshot(): CpuSnapshot {
    const ticks: Record<string, number | undefined> = {};
    for (const [k, path] of Object.entries(this.targets)) ticks[k] = readTicks(path);
    return { at: performance.now(), ticks, system: readSystem() };
  }

  /** Adds `other`: CPU (in % of one core) used by processes other than node and nats-server. */
  use(a: CpuSnapshot, b: CpuSnapshot): CpuUse {
    const u = CpuMeter.use(a, b);
    if (u.machine !== undefined && u.node !== undefined && u.nats !== undefined) {
      u.other = round1(Math.max(0, u.machine * this.cores - u.node - u.nats));
    }
    return u;
  }

  static use(a: CpuSnapshot, b: CpuSnapshot): CpuUse {
    const sec = (b.at - a.at) / 1000;
    const out: CpuUse = {};
    for (const k of Object.keys(a.ticks)) {
      const x = a.ticks[k];
      const y = b.ticks[k];
      out[k] = x === undefined || y === undefined || sec <= 0 ? undefined : round1(((y - x) / clockTicks() / sec) * 100);
    }
    if (a.system && b.system && b.system.total > a.system.total) {
      out.machine = round1(((b.system.busy - a.system.busy) / (b.system.total - a.system.total)) * 100);
    }
    return out;
  }
}

/** Periodic samples during a phase, for the busiest interval of each target. */
export class CpuSampler {
  private timer?: NodeJS.Timeout;
  private last?: CpuSnapshot;
  readonly samples: CpuUse[] = [];
  constructor(
    private readonly meter: CpuMeter,
    private readonly everyMs = 500,
  ) {}

  start(): void {
    this.last = this.meter.snapshot();
    this.timer = setInterval(() => {
      const now = this.meter.snapshot();
      this.samples.push(this.meter.use(this.last!, now));
      this.last = now;
    }, this.everyMs);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
  }

  /** The highest interval value seen per target. */
  peak(): CpuUse {
    const out: CpuUse = {};
    for (const s of this.samples) {
      for (const [k, v] of Object.entries(s)) if (v !== undefined && (out[k] === undefined || v > out[k]!)) out[k] = v;
    }
    return out;
  }
}

function round1(x: number): number {
  return Math.round(x * 10) / 10;
}

/** utime+stime and cutime+cstime (children that were waited for) of a /proc stat file, in ticks. */
export function readSelfAndChildren(path: string): { self: number; children: number } | undefined {
  try {
    const s = readFileSync(path, "utf8");
    const rest = s.slice(s.lastIndexOf(")") + 2).split(" ");
    return { self: Number(rest[11]) + Number(rest[12]), children: Number(rest[13]) + Number(rest[14]) };
  } catch {
    return undefined;
  }
}

export interface ProcessCpu {
  node?: number;
  /** git and sh processes this node process started (and reaped). */
  children?: number;
  nats?: number;
  /** Everything else on the machine. */
  other?: number;
  machine?: number;
}

/** Meters this node process, its children, nats-server and the rest, in % of one core. */
export class ProcessMeter {
  private readonly base: CpuMeter;
  private readonly self = `/proc/${process.pid}/stat`;
  constructor(natsPid: number | undefined) {
    this.base = new CpuMeter({ node: this.self, ...(natsPid ? { nats: `/proc/${natsPid}/stat` } : {}) });
  }
  get cores(): number {
    return this.base.cores;
  }
  snapshot(): { base: CpuSnapshot; children?: number } {
    return { base: this.base.snapshot(), children: readSelfAndChildren(this.self)?.children };
  }
  use(a: { base: CpuSnapshot; children?: number }, b: { base: CpuSnapshot; children?: number }): ProcessCpu {
    const u = CpuMeter.use(a.base, b.base);
    const sec = (b.base.at - a.base.at) / 1000;
    const children = a.children === undefined || b.children === undefined || sec <= 0 ? undefined : r1(((b.children - a.children) / clockTicks() / sec) * 100);
    const out: ProcessCpu = { node: u.node, children, nats: u.nats, machine: u.machine };
    if (u.machine !== undefined && u.node !== undefined) {
      out.other = r1(Math.max(0, u.machine * this.cores - u.node - (u.nats ?? 0) - (children ?? 0)));
    }
    return out;
  }
}
