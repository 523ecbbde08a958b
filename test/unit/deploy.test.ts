import { readdirSync, readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import * as k8s from "@kubernetes/client-node";
import { parseAllDocuments, parse as parseYaml } from "yaml";
import { describe, expect, it } from "vitest";
import { parseConfig } from "../../src/runtime/config.js";
import { PRIORITIES } from "../../src/runtime/graph.js";
import { consumers, topology } from "../../src/runtime/topology.js";

/**
 * deploy/k8s: every manifest of a built-in kind is checked field by field against the
 * Kubernetes API types @kubernetes/client-node is generated from (an unknown or
 * misplaced field, a string where a list belongs, fails); the KEDA ScaledObject (a CRD
 * the library does not know) against what ado's topology says holds the backlog; the
 * ConfigMap's ado.config.yaml against ado's own config schema. No cluster runs here:
 * `kubectl --dry-run=client` needs one for API discovery, so it could not be used.
 */

const dir = fileURLToPath(new URL("../../deploy/k8s/", import.meta.url));
const docs = readdirSync(dir)
  .filter((f) => f.endsWith(".yaml"))
  .flatMap((file) =>
    parseAllDocuments(readFileSync(dir + file, "utf8")).map((d, i) => {
      if (d.errors.length) throw new Error(`${file} document ${i + 1}: ${d.errors[0]!.message}`);
      return { file, obj: d.toJSON() as { apiVersion: string; kind: string; metadata: { name: string }; [k: string]: unknown } };
    }),
  );

type AttrMap = Array<{ baseName: string; type: string }>;
const models = k8s as unknown as Record<string, { getAttributeTypeMap?: () => AttrMap }>;

/** Problems of `value` as the API type `type` (a model name or a primitive as the generator spells it). */
function check(value: unknown, type: string, path: string, out: string[]): void {
  if (value === null || value === undefined) return;
  const array = /^Array<(.+)>$/.exec(type);
  const map = /^\{ \[key: string\]: (.+); \}$/.exec(type);
  if (array) {
    if (!Array.isArray(value)) return void out.push(`${path}: expected a list`);
    value.forEach((v, i) => check(v, array[1]!, `${path}[${i}]`, out));
  } else if (map) {
    if (typeof value !== "object" || Array.isArray(value)) return void out.push(`${path}: expected a mapping`);
    for (const [k, v] of Object.entries(value)) check(v, map[1]!, `${path}.${k}`, out);
  } else if (type === "string" || type === "Date") {
    if (typeof value !== "string") out.push(`${path}: expected a string, got ${JSON.stringify(value)}`);
  } else if (type === "number") {
    if (typeof value !== "number") out.push(`${path}: expected a number, got ${JSON.stringify(value)}`);
  } else if (type === "boolean") {
    if (typeof value !== "boolean") out.push(`${path}: expected true or false, got ${JSON.stringify(value)}`);
  } else if (type === "IntOrString") {
    if (typeof value !== "string" && typeof value !== "number") out.push(`${path}: expected a number or a string`);
  } else if (type === "any" || type === "object") {
    // free-form
  } else {
    const attrs = models[type]?.getAttributeTypeMap?.();
    if (!attrs) return void out.push(`${path}: no API type '${type}' to check against`);
    if (typeof value !== "object" || Array.isArray(value)) return void out.push(`${path}: expected a mapping (${type})`);
    for (const [k, v] of Object.entries(value)) {
      const a = attrs.find((x) => x.baseName === k);
      if (!a) out.push(`${path}.${k}: unknown field of ${type}`);
      else check(v, a.type, `${path}.${k}`, out);
    }
  }
}

describe("deploy/k8s - manifests", () => {
  it("deploy - every built-in object matches its Kubernetes API type, field by field", () => {
    const builtIn = docs.filter((d) => !d.obj.apiVersion.includes("keda.sh"));
    expect(builtIn.map((d) => d.obj.kind).sort()).toEqual(
      ["ConfigMap", "Deployment", "Deployment", "Deployment", "Deployment", "Deployment", "Deployment", "Deployment", "HorizontalPodAutoscaler", "Namespace", "PodDisruptionBudget", "Role", "RoleBinding", "ServiceAccount", "ServiceAccount"].sort(),
    );
    for (const { file, obj } of builtIn) {
      const version = /v(\d+)$/.exec(obj.apiVersion)![1];
      const problems: string[] = [];
      check(obj, `V${version}${obj.kind}`, `${file} ${obj.kind}/${obj.metadata.name}`, problems);
      expect(problems, `${file} ${obj.kind}/${obj.metadata.name}`).toEqual([]);
    }
  });

  it("deploy - the checker finds a misplaced field and a wrong type (it can fail)", () => {
    const problems: string[] = [];
    check({ apiVersion: "apps/v1", kind: "Deployment", metadata: { name: "x" }, spec: { replica: 2, template: { spec: { containers: { name: "c" } } } } }, "V1Deployment", "d", problems);
    expect(problems).toEqual(["d.spec.replica: unknown field of V1DeploymentSpec", "d.spec.template.spec.containers: expected a list"]);
  });

  it("deploy - one Deployment per actor kind; the workers drain on the way out (preStop, a grace period longer than ado's own), a PodDisruptionBudget, probes on /health and /ready", () => {
    const deployments = docs.filter((d) => d.obj.kind === "Deployment").map((d) => d.obj as unknown as k8s.V1Deployment);
    const actorArgs = deployments.map((d) => d.spec!.template.spec!.containers[0]!.args!).filter((a) => a[0] === "actor").map((a) => a[1]);
    expect(actorArgs.sort()).toEqual(["api", "balancer", "merger", "scaler", "scheduler", "stealer"]);
    const worker = deployments.find((d) => d.metadata!.name === "ado-worker")!;
    const pod = worker.spec!.template.spec!;
    const c = pod.containers[0]!;
    expect(c.lifecycle?.preStop?.exec?.command?.join(" ")).toContain("kill -TERM 1");
    expect(c.livenessProbe?.httpGet?.path).toBe("/health");
    expect(c.readinessProbe?.httpGet?.path).toBe("/ready");
    const cfg = docs.find((d) => d.obj.kind === "ConfigMap")!.obj as unknown as k8s.V1ConfigMap;
    const config = parseConfig(parseYaml(cfg.data!["ado.config.yaml"]!), {});
    expect(pod.terminationGracePeriodSeconds! * 1000).toBeGreaterThan(config.shutdown.graceMs + config.shutdown.forceMs);
    expect(docs.some((d) => d.obj.kind === "PodDisruptionBudget" && d.obj.metadata.name === "ado-worker")).toBe(true);
    // The scaler's pool names the worker Deployment, in the namespace its RBAC covers.
    const pool = config.scaler.pools.find((p) => p.backend === "kubernetes")!;
    expect(pool.kubernetes).toMatchObject({ deployment: "ado-worker", namespace: "ado" });
    const role = docs.find((d) => d.obj.kind === "Role")!.obj as unknown as k8s.V1Role;
    expect(role.rules!.find((r) => r.resources!.includes("deployments/scale"))).toMatchObject({ resourceNames: ["ado-worker"], verbs: ["get", "update"] });
    expect(c.args).toEqual(expect.arrayContaining(["--pool", pool.name]));
  });

  it("deploy - the KEDA ScaledObject reads the stream and consumers that hold the ready backlog, one trigger per priority level", () => {
    const so = docs.find((d) => d.obj.kind === "ScaledObject")!.obj as unknown as { spec: { scaleTargetRef: { name: string }; triggers: Array<{ type: string; metadata: Record<string, string> }> } };
    expect(so.spec.scaleTargetRef.name).toBe("ado-worker");
    const topo = topology("ado");
    expect(so.spec.triggers.every((t) => t.type === "nats-jetstream" && t.metadata.stream === topo.streams.ready.name)).toBe(true);
    expect(so.spec.triggers.map((t) => t.metadata.consumer).sort()).toEqual(PRIORITIES.map((p) => consumers.readyLevel(p)).sort());
  });
});
