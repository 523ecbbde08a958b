import { describe, expect, it } from "vitest";
import { parseConfig } from "../../src/runtime/config.js";
import { autoSlots, hostFacts } from "../../src/runtime/hardware.js";

const GB = 1024 ** 3;

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
    expect(parseConfig({ slots: 3 })).toMatchObject({ slots: 3 });
    expect(parseConfig({ slots: 3 }).slotsAuto).toBeUndefined();
    expect(() => parseConfig({ slots: "many" as never })).toThrow();
  });
});
