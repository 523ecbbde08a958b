/**
 * Hardware-aware slots (config `slots: auto`, the default where nothing sets `slots`):
 * how many agents this host can run at once, from its cores, its free memory at a
 * per-agent estimate (config `agentMemoryMb`) and its current load, within the limits
 * of its cgroup (a container's CPU quota and memory limit, which Node's
 * `availableParallelism()`, `totalmem()` and `freemem()` do not see). `autoSlots`
 * decides and `cgroupLimits` reads the cgroup files (both pure); `hostFacts` reads the
 * host.
 */
import { readFileSync } from "node:fs";
import { availableParallelism, freemem, loadavg, totalmem } from "node:os";
import { posix } from "node:path";

/** What `autoSlots` needs to know of a host. */
export interface HostFacts {
  /** The CPUs this process may run on (its affinity mask, so a cpuset is counted here). */
  cores: number;
  totalMemBytes: number;
  freeMemBytes: number;
  /** The 1-minute load average (runnable processes; 0 where the OS has none, e.g. Windows). */
  load1: number;
  /** The limits of the cgroup this process runs in, where it has any (a container's). */
  cgroup?: CgroupLimits;
}

/** A cgroup's limits, the tightest of its own and its ancestors'. */
export interface CgroupLimits {
  /** CPUs its CPU quota allows (quota over period; may be fractional, e.g. 1.5). */
  cpus?: number;
  /** The file that set `cpus`, e.g. /sys/fs/cgroup/cpu.max. */
  cpuFile?: string;
  memLimitBytes?: number;
  /** The limit less what the cgroup uses, not counting its reclaimable page cache (inactive files). */
  memFreeBytes?: number;
  /** The file that set the memory limit, e.g. /sys/fs/cgroup/memory.max. */
  memFile?: string;
}

/**
 * Memory one agent is taken to need when the config does not say (MB). ASSUMPTION, not
 * measured here: an agent CLI (a Node or Python process with its model client), its
 * tools and a git worktree's build; set `agentMemoryMb` from what your agents use.
 */
export const AGENT_MEMORY_MB_DEFAULT = 1536;

/** Where the cgroup filesystem is mounted. */
export const CGROUP_ROOT = "/sys/fs/cgroup";

/** A file's text, or undefined when it cannot be read. */
export type ReadFile = (path: string) => string | undefined;

const readQuietly: ReadFile = (path) => {
  try {
    return readFileSync(path, "utf8");
  } catch {
    return undefined;
  }
};

/** This host's facts now, within this process's cgroup. */
export function hostFacts(read: ReadFile = readQuietly): HostFacts {
  const cgroup = cgroupLimits(read);
  return { cores: availableParallelism(), totalMemBytes: totalmem(), freeMemBytes: freemem(), load1: loadavg()[0] ?? 0, ...(cgroup ? { cgroup } : {}) };
}

/** CPUs of a cgroup v2 `cpu.max` ("<quota> <period>", or "max <period>": no limit). */
export function cpusOfCpuMax(text: string): number | undefined {
  const [quota, period] = text.trim().split(/\s+/);
  return cpusOf(quota, period ?? "100000");
}

/** CPUs of cgroup v1 `cpu.cfs_quota_us` over `cpu.cfs_period_us` (a quota of -1: no limit). */
export function cpusOfCfs(quota: string, period: string): number | undefined {
  return cpusOf(quota.trim(), period.trim());
}

function cpusOf(quota: string | undefined, period: string): number | undefined {
  if (!quota || !/^\d+$/.test(quota) || !/^\d+$/.test(period)) return undefined;
  const q = Number(quota);
  const p = Number(period);
  return q > 0 && p > 0 ? q / p : undefined;
}

/**
 * Bytes of a memory limit (v2 `memory.max`, v1 `memory.limit_in_bytes`): "max", and
 * v1's "unlimited" (the largest page count, about 2^63), are no limit.
 */
export function bytesOfLimit(text: string): number | undefined {
  const t = text.trim();
  if (!/^\d+$/.test(t)) return undefined;
  const n = Number(t);
  return n > 0 && n < 2 ** 60 ? n : undefined;
}

/** A counter of a `memory.stat` ("<key> <value>" per line); 0 when absent. */
export function statValue(text: string, key: string): number {
  for (const line of text.split("\n")) {
    const [k, v] = line.trim().split(/\s+/);
    if (k === key && v && /^\d+$/.test(v)) return Number(v);
  }
  return 0;
}

/**
 * This process's cgroup paths from /proc/self/cgroup: v2's ("0::/path") and each v1
 * controller's ("4:memory:/path", "2:cpu,cpuacct:/path").
 */
export function selfCgroups(text: string): { v2?: string; v1: Map<string, string> } {
  const v1 = new Map<string, string>();
  let v2: string | undefined;
  for (const line of text.split("\n")) {
    const m = /^(\d+):([^:]*):(.*)$/.exec(line.trim());
    if (!m) continue;
    if (m[1] === "0" && m[2] === "") v2 = m[3];
    else for (const c of m[2]!.split(",")) if (c) v1.set(c, m[3]!);
  }
  return { ...(v2 !== undefined ? { v2 } : {}), v1 };
}

/**
 * A cgroup's directory and its ancestors' under a mount, deepest first. In a container
 * the path can be the host's (/kubepods/...) while the mount shows the container's own
 * cgroup at its root: the directories that do not exist there are simply not read.
 */
function chain(mount: string, path: string): string[] {
  const dirs: string[] = [];
  let p = posix.normalize(`/${path}`);
  for (;;) {
    dirs.push(p === "/" ? mount : `${mount}${p}`);
    if (p === "/") return dirs;
    p = posix.dirname(p);
  }
}

/**
 * The CPU quota and memory limit of this process's cgroup (cgroup v2 where the root is
 * a v2 mount, else v1's cpu and memory controllers), the tightest of its own and its
 * ancestors'; undefined where none is set. `read` is the only access to files, so this
 * is tested on fixture contents.
 */
export function cgroupLimits(read: ReadFile, root = CGROUP_ROOT): CgroupLimits | undefined {
  const self = selfCgroups(read("/proc/self/cgroup") ?? "");
  const v2 = read(`${root}/cgroup.controllers`) !== undefined;
  const cpuDirs = v2 ? chain(root, self.v2 ?? "/") : chain(`${root}/cpu`, self.v1.get("cpu") ?? "/");
  const memDirs = v2 ? chain(root, self.v2 ?? "/") : chain(`${root}/memory`, self.v1.get("memory") ?? "/");
  const out: CgroupLimits = {};
  for (const dir of cpuDirs) {
    const file = v2 ? `${dir}/cpu.max` : `${dir}/cpu.cfs_quota_us`;
    const text = read(file);
    if (text === undefined) continue;
    const cpus = v2 ? cpusOfCpuMax(text) : cpusOfCfs(text, read(`${dir}/cpu.cfs_period_us`) ?? "100000");
    if (cpus !== undefined && (out.cpus === undefined || cpus < out.cpus)) Object.assign(out, { cpus, cpuFile: file });
  }
  for (const dir of memDirs) {
    const file = v2 ? `${dir}/memory.max` : `${dir}/memory.limit_in_bytes`;
    const text = read(file);
    const limit = text === undefined ? undefined : bytesOfLimit(text);
    if (limit === undefined) continue;
    const usage = Number((read(v2 ? `${dir}/memory.current` : `${dir}/memory.usage_in_bytes`) ?? "0").trim()) || 0;
    // Page cache the kernel reclaims under pressure is not memory an agent lacks (as `docker stats` and the kubelet count it).
    const inactive = statValue(read(`${dir}/memory.stat`) ?? "", v2 ? "inactive_file" : "total_inactive_file");
    const free = Math.max(0, limit - Math.max(0, usage - inactive));
    if (out.memFreeBytes === undefined || free < out.memFreeBytes) Object.assign(out, { memLimitBytes: limit, memFreeBytes: free, memFile: file });
  }
  return Object.keys(out).length ? out : undefined;
}

/**
 * Slots per worker for `workers` workers on a host: the least of its idle cores (cores
 * less the load already there, so a busy host takes fewer) and the agents its free
 * memory holds, shared among the workers; never less than 1 (a worker with no slot
 * would hold its place and run nothing). In a cgroup, its CPU quota (at least one
 * core) caps the idle cores and its free memory caps the host's: the load average is
 * the whole host's (the kernel keeps none per cgroup), so a container on a busy node
 * gets the least of its quota and the node's idle cores, not its quota less the node's
 * load. `why` says what decided, for `ado doctor` and the worker's start line.
 */
export function autoSlots(h: HostFacts, o: { agentMemoryMb: number; workers: number }): { slots: number; why: string } {
  const hostIdle = Math.max(0, Math.floor(h.cores - h.load1 + 0.5));
  const quota = h.cgroup?.cpus === undefined ? undefined : Math.max(1, Math.floor(h.cgroup.cpus));
  const byQuota = quota !== undefined && quota < hostIdle;
  const idleCores = byQuota ? quota : hostIdle;
  const memLimited = h.cgroup?.memFreeBytes !== undefined && h.cgroup.memFreeBytes < h.freeMemBytes;
  const freeMem = memLimited ? h.cgroup!.memFreeBytes! : h.freeMemBytes;
  const totalMem = Math.min(h.totalMemBytes, h.cgroup?.memLimitBytes ?? Infinity);
  const memCapped = memLimited || totalMem < h.totalMemBytes;
  const byMemory = Math.floor(freeMem / (o.agentMemoryMb * 1024 * 1024));
  const total = Math.min(idleCores, byMemory);
  const workers = Math.max(1, o.workers);
  const slots = Math.max(1, Math.floor(total / workers));
  const gb = (b: number) => `${(b / 1024 ** 3).toFixed(1)} GB`;
  const limit = idleCores <= byMemory ? (byQuota ? "the cgroup's CPU quota" : "idle cores") : memLimited ? "the cgroup's memory limit" : "free memory";
  const cpus = (n: number) => `${Number.isInteger(n) ? n : n.toFixed(2)} ${n === 1 ? "CPU" : "CPUs"}`;
  const why =
    `${h.cores} ${h.cores === 1 ? "core" : "cores"} at load ${h.load1.toFixed(1)} (${hostIdle} idle)` +
    (quota !== undefined ? `, cgroup CPU quota ${cpus(h.cgroup!.cpus!)} (${h.cgroup!.cpuFile ?? "cpu.max"})` : "") +
    `, ${gb(freeMem)} free of ${gb(totalMem)}` +
    (memCapped ? ` (cgroup memory limit, ${h.cgroup!.memFile ?? "memory.max"})` : "") +
    ` at ${o.agentMemoryMb} MB per agent (${byMemory}): ${total} ${total === 1 ? "agent" : "agents"} by ${limit}` +
    (workers > 1 ? ` over ${workers} workers` : "") +
    `, ${slots} ${slots === 1 ? "slot" : "slots"} per worker${total < workers ? " (at least 1)" : ""}`;
  return { slots, why };
}
