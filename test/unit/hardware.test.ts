import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { CONFIG_FILE, describeSlots, loadConfig, parseConfig } from "../../src/runtime/config.js";
import { ConfigError } from "../../src/runtime/errors.js";
import { autoSlots, bytesOfLimit, cgroupLimits, cpusOfCfs, cpusOfCpuMax, hostFacts, selfCgroups, statValue } from "../../src/runtime/hardware.js";
import { useScratch } from "../helpers/scratch.js";

const GB = 1024 ** 3;
const scratch = useScratch("ado-hardware-");

/** A reader of fixture files: path -> contents, anything else unreadable. */
const files = (fixture: Record<string, string>) => (path: string) => fixture[path];

describe("hardware - slots from cores, memory and load", () => {
  it("hardware - an idle host with memory to spare: one agent per core", () => {
    expect(autoSlots({ cores: 8, totalMemBytes: 64 * GB, freeMemBytes: 48 * GB, load1: 0.2 }, { agentMemoryMb: 1536, workers: 1 }).slots).toBe(8);
  });

  it("hardware - the load already there takes cores away; free memory at the per-agent estimate caps it", () => {
    const busy = autoSlots({ cores: 8, totalMemBytes: 64 * GB, freeMemBytes: 48 * GB, load1: 5.4 }, { agentMemoryMb: 1536, workers: 1 });
    expect(busy.slots).toBe(3);
    expect(busy.why).toMatch(/^8 cores at load 5\.4 \(3 idle\), 48\.0 GB free of 64\.0 GB at 1536 MB per agent \(32\): 3 agents by idle cores, 3 slots per worker$/);
    const tight = autoSlots({ cores: 16, totalMemBytes: 8 * GB, freeMemBytes: 4.5 * GB, load1: 0 }, { agentMemoryMb: 1536, workers: 1 });
    expect(tight.slots).toBe(3);
    expect(tight.why).toMatch(/by free memory/);
  });

  it("hardware - shared among the host's workers, and never below one slot (an overloaded host still runs something)", () => {
    expect(autoSlots({ cores: 8, totalMemBytes: 64 * GB, freeMemBytes: 48 * GB, load1: 0 }, { agentMemoryMb: 1536, workers: 3 }).slots).toBe(2);
    const swamped = autoSlots({ cores: 2, totalMemBytes: 4 * GB, freeMemBytes: 0.5 * GB, load1: 36 }, { agentMemoryMb: 1536, workers: 4 });
    expect(swamped.slots).toBe(1);
    expect(swamped.why).toMatch(/0 agents by idle cores over 4 workers, 1 slot per worker \(at least 1\)$/);
  });

  it("config - slots: auto resolves to a number for this host and says why; a number stays as given", () => {
    const c = parseConfig({ slots: "auto", workers: 1, agentMemoryMb: 64 });
    const expected = autoSlots(hostFacts(), { agentMemoryMb: 64, workers: 1 });
    // The host's load moves between the two reads: the same rule, within a slot.
    expect(Math.abs(c.slots - expected.slots)).toBeLessThanOrEqual(1);
    expect(c.slots).toBeGreaterThanOrEqual(1);
    expect(c.slotsAuto).toMatch(/slots? per worker/);
    expect(parseConfig({ slots: 3 })).toMatchObject({ slots: 3, slotsFrom: "settings" });
    expect(parseConfig({ slots: 3 }).slotsAuto).toBeUndefined();
    expect(() => parseConfig({ slots: "many" as never })).toThrow();
  });
});

describe("hardware - a container's limits (cgroup v2, else v1), which Node's os figures do not see", () => {
  it("hardware - the cgroup files' formats: cpu.max, cfs quota over period, memory limits (max and v1's unlimited), memory.stat", () => {
    expect(cpusOfCpuMax("200000 100000\n")).toBe(2);
    expect(cpusOfCpuMax("150000 100000")).toBe(1.5);
    expect(cpusOfCpuMax("max 100000\n")).toBeUndefined();
    expect(cpusOfCfs("50000\n", "100000\n")).toBe(0.5);
    expect(cpusOfCfs("-1\n", "100000\n")).toBeUndefined();
    expect(bytesOfLimit("4294967296\n")).toBe(4 * GB);
    expect(bytesOfLimit("max\n")).toBeUndefined();
    expect(bytesOfLimit("9223372036854771712\n")).toBeUndefined();
    expect(statValue("anon 10\nfile 20\ninactive_file 7\nactive_file 13\n", "inactive_file")).toBe(7);
    expect(statValue("cache 20\ntotal_inactive_file 5\n", "inactive_file")).toBe(0);
    expect(selfCgroups("12:memory:/docker/abc\n3:cpu,cpuacct:/docker/abc\n1:name=systemd:/x\n0::/\n")).toEqual({ v2: "/", v1: new Map([["memory", "/docker/abc"], ["cpu", "/docker/abc"], ["cpuacct", "/docker/abc"], ["name=systemd", "/x"]]) });
  });

  it("hardware - cgroup v2 in a container (its own cgroup at the root): a quota of 2 CPUs, 4 GB less what it uses (page cache it can drop not counted)", () => {
    const limits = cgroupLimits(
      files({
        "/proc/self/cgroup": "0::/\n",
        "/sys/fs/cgroup/cgroup.controllers": "cpuset cpu io memory pids\n",
        "/sys/fs/cgroup/cpu.max": "200000 100000\n",
        "/sys/fs/cgroup/memory.max": "4294967296\n",
        "/sys/fs/cgroup/memory.current": "1073741824\n",
        "/sys/fs/cgroup/memory.stat": "anon 805306368\nfile 268435456\ninactive_file 268435456\n",
      }),
    );
    expect(limits).toEqual({ cpus: 2, cpuFile: "/sys/fs/cgroup/cpu.max", memLimitBytes: 4 * GB, memFreeBytes: 3.25 * GB, memFile: "/sys/fs/cgroup/memory.max" });
    // No limits: nothing to say.
    expect(cgroupLimits(files({ "/proc/self/cgroup": "0::/\n", "/sys/fs/cgroup/cgroup.controllers": "cpu memory\n", "/sys/fs/cgroup/cpu.max": "max 100000\n", "/sys/fs/cgroup/memory.max": "max\n" }))).toBeUndefined();
  });

  it("hardware - cgroup v2 on a host: the process's own cgroup and its ancestors, the tightest limit wins (a pod's, above its container's)", () => {
    const limits = cgroupLimits(
      files({
        "/proc/self/cgroup": "0::/kubepods.slice/pod1/ctr\n",
        "/sys/fs/cgroup/cgroup.controllers": "cpu memory\n",
        "/sys/fs/cgroup/kubepods.slice/pod1/ctr/cpu.max": "max 100000\n",
        "/sys/fs/cgroup/kubepods.slice/pod1/cpu.max": "150000 100000\n",
        "/sys/fs/cgroup/kubepods.slice/cpu.max": "800000 100000\n",
        "/sys/fs/cgroup/kubepods.slice/pod1/ctr/memory.max": "8589934592\n",
        "/sys/fs/cgroup/kubepods.slice/pod1/ctr/memory.current": "1073741824\n",
        "/sys/fs/cgroup/kubepods.slice/pod1/memory.max": "2147483648\n",
        "/sys/fs/cgroup/kubepods.slice/pod1/memory.current": "1073741824\n",
      }),
    );
    expect(limits).toEqual({ cpus: 1.5, cpuFile: "/sys/fs/cgroup/kubepods.slice/pod1/cpu.max", memLimitBytes: 2 * GB, memFreeBytes: 1 * GB, memFile: "/sys/fs/cgroup/kubepods.slice/pod1/memory.max" });
  });

  it("hardware - cgroup v1 (no v2 root): cfs quota over period and memory.limit_in_bytes, at the process's path or, in a container that shows its own cgroup at the mount, there", () => {
    const hostPath = cgroupLimits(
      files({
        "/proc/self/cgroup": "4:memory:/docker/abc\n2:cpu,cpuacct:/docker/abc\n0::/\n",
        "/sys/fs/cgroup/cpu/cpu.cfs_quota_us": "-1\n",
        "/sys/fs/cgroup/cpu/cpu.cfs_period_us": "100000\n",
        "/sys/fs/cgroup/cpu/docker/abc/cpu.cfs_quota_us": "300000\n",
        "/sys/fs/cgroup/cpu/docker/abc/cpu.cfs_period_us": "100000\n",
        "/sys/fs/cgroup/memory/memory.limit_in_bytes": "9223372036854771712\n",
        "/sys/fs/cgroup/memory/docker/abc/memory.limit_in_bytes": "2147483648\n",
        "/sys/fs/cgroup/memory/docker/abc/memory.usage_in_bytes": "1610612736\n",
        "/sys/fs/cgroup/memory/docker/abc/memory.stat": "cache 600000000\ninactive_file 1\ntotal_inactive_file 536870912\n",
      }),
    );
    expect(hostPath).toEqual({ cpus: 3, cpuFile: "/sys/fs/cgroup/cpu/docker/abc/cpu.cfs_quota_us", memLimitBytes: 2 * GB, memFreeBytes: 1 * GB, memFile: "/sys/fs/cgroup/memory/docker/abc/memory.limit_in_bytes" });
    const namespaced = cgroupLimits(
      files({
        "/proc/self/cgroup": "4:memory:/docker/abc\n2:cpu,cpuacct:/docker/abc\n",
        "/sys/fs/cgroup/cpu/cpu.cfs_quota_us": "50000\n",
        "/sys/fs/cgroup/cpu/cpu.cfs_period_us": "100000\n",
        "/sys/fs/cgroup/memory/memory.limit_in_bytes": "1073741824\n",
        "/sys/fs/cgroup/memory/memory.usage_in_bytes": "0\n",
      }),
    );
    expect(namespaced).toEqual({ cpus: 0.5, cpuFile: "/sys/fs/cgroup/cpu/cpu.cfs_quota_us", memLimitBytes: 1 * GB, memFreeBytes: 1 * GB, memFile: "/sys/fs/cgroup/memory/memory.limit_in_bytes" });
    // Neither version's files (not Linux, or no cgroup filesystem): no limits.
    expect(cgroupLimits(files({}))).toBeUndefined();
  });

  it("hardware - a pod limited to 2 CPUs on an idle 64-core node gets 2, not 64, and says the quota decided; its memory limit caps like free memory", () => {
    const node = { cores: 64, totalMemBytes: 256 * GB, freeMemBytes: 200 * GB, load1: 0.3 };
    const pod = autoSlots({ ...node, cgroup: { cpus: 2, cpuFile: "/sys/fs/cgroup/cpu.max" } }, { agentMemoryMb: 1536, workers: 1 });
    expect(pod.slots).toBe(2);
    expect(pod.why).toMatch(/^64 cores at load 0\.3 \(64 idle\), cgroup CPU quota 2 CPUs \(\/sys\/fs\/cgroup\/cpu\.max\), 200\.0 GB free of 256\.0 GB at 1536 MB per agent \(133\): 2 agents by the cgroup's CPU quota, 2 slots per worker$/);
    expect(autoSlots(node, { agentMemoryMb: 1536, workers: 1 }).slots).toBe(64);
    const mem = autoSlots({ ...node, cgroup: { memLimitBytes: 4 * GB, memFreeBytes: 3.25 * GB, memFile: "/sys/fs/cgroup/memory.max" } }, { agentMemoryMb: 1536, workers: 1 });
    expect(mem.slots).toBe(2);
    expect(mem.why).toMatch(/, 3\.3 GB free of 4\.0 GB \(cgroup memory limit, \/sys\/fs\/cgroup\/memory\.max\) at 1536 MB per agent \(2\): 2 agents by the cgroup's memory limit, 2 slots per worker$/);
    // The load average is the node's: a busy node leaves the pod fewer than its quota; a fraction of a CPU is still one.
    expect(autoSlots({ ...node, load1: 63, cgroup: { cpus: 2 } }, { agentMemoryMb: 1536, workers: 1 }).slots).toBe(1);
    expect(autoSlots({ ...node, cgroup: { cpus: 0.5 } }, { agentMemoryMb: 1536, workers: 1 })).toMatchObject({ slots: 1, why: expect.stringMatching(/cgroup CPU quota 0\.50 CPUs .*: 1 agent by the cgroup's CPU quota/) });
  });

  it("hardware - this host's facts read without error, within its cgroup where it has limits", () => {
    const h = hostFacts();
    expect(h.cores).toBeGreaterThanOrEqual(1);
    expect(h.freeMemBytes).toBeGreaterThan(0);
    if (h.cgroup?.cpus !== undefined) expect(h.cgroup.cpuFile).toMatch(/^\/sys\/fs\/cgroup\//);
  });
});

describe("config - slots where nothing sets them: auto (ADO_SLOTS pins the default; the file, ADO_SLOTS and --slots set them in that order of precedence)", () => {
  it("config - settings in code: no slots is auto for this host, said as the default; ADO_SLOTS fills in where they say nothing, never over them", () => {
    const d = parseConfig({ workers: 2 }, {});
    expect(d.slotsFrom).toBe("default");
    expect(d.slotsAuto).toMatch(/over 2 workers, \d+ slots? per worker/);
    expect(describeSlots(d)).toBe(`slots: ${d.slots} per worker (default: auto: ${d.slotsAuto})`);
    const one = parseConfig({ slots: 1 }, {});
    expect(one).toMatchObject({ slots: 1, slotsFrom: "settings" });
    expect(one.slotsAuto).toBeUndefined();
    expect(describeSlots(one)).toBe("slots: 1 per worker (from settings)");
    expect(parseConfig({}, { ADO_SLOTS: "3" })).toMatchObject({ slots: 3, slotsFrom: "environment ADO_SLOTS" });
    expect(parseConfig({ slots: 2 }, { ADO_SLOTS: "3" })).toMatchObject({ slots: 2, slotsFrom: "settings" });
    const auto = parseConfig({ workers: 1 }, { ADO_SLOTS: "auto" });
    expect(auto.slotsFrom).toBe("environment ADO_SLOTS");
    expect(describeSlots(auto)).toMatch(/^slots: \d+ per worker \(auto, from environment ADO_SLOTS: \d+ cores? at load /);
    expect(() => parseConfig({}, { ADO_SLOTS: "0" })).toThrow(ConfigError);
    expect(() => parseConfig({}, { ADO_SLOTS: "lots" })).toThrow(/slots \(from environment ADO_SLOTS\)/);
    // The test suite pins the default (vitest.config.ts): nothing here depends on the host.
    expect(parseConfig({})).toMatchObject({ slots: 1, slotsFrom: "environment ADO_SLOTS" });
  });

  it("config - loaded: nothing set is auto; the file's slots, ADO_SLOTS over the file (as every ADO_* variable), a flag over both", async () => {
    const dir = join(scratch.dir, "slots");
    await mkdir(dir);
    const none = await loadConfig({ dir, env: {} });
    expect(none.slotsFrom).toBe("default");
    expect(none.slotsAuto).toMatch(/over 4 workers/);
    expect(await loadConfig({ dir, env: { ADO_SLOTS: "3" } })).toMatchObject({ slots: 3, slotsFrom: "environment ADO_SLOTS" });
    expect(await loadConfig({ dir, env: { ADO_SLOTS: "" } })).toMatchObject({ slotsFrom: "default" });
    const file = join(dir, CONFIG_FILE);
    await writeFile(file, "slots: 1\n");
    expect(await loadConfig({ dir, env: {} })).toMatchObject({ slots: 1, slotsFrom: file });
    expect(await loadConfig({ dir, env: { ADO_SLOTS: "3" } })).toMatchObject({ slots: 3, slotsFrom: "environment ADO_SLOTS" });
    expect(await loadConfig({ dir, env: { ADO_SLOTS: "3" }, flags: { slots: 5 } })).toMatchObject({ slots: 5, slotsFrom: "command-line flag" });
    await writeFile(file, "slots: auto\nworkers: 1\n");
    const auto = await loadConfig({ dir, env: {} });
    expect(describeSlots(auto)).toBe(`slots: ${auto.slots} per worker (auto, from ${file}: ${auto.slotsAuto})`);
  });
});
