import { ApiException, AppsV1Api, CoreV1Api, KubeConfig, PatchStrategy, setHeaderOptions, type V1Scale } from "@kubernetes/client-node";
import { errorMessage } from "../../../runtime/errors.js";
import type { WorkerRecord } from "../../../runtime/messages.js";
import { Backoff, retry } from "../../../runtime/retry.js";
import type { StopOrder, WorkerExit } from "../decide.js";
import type { BackendContext, ScalerBackend } from "../backend.js";

/** The annotation the ReplicaSet controller reads to choose which pods go first on scale-down (lowest first). */
export const POD_DELETION_COST = "controller.kubernetes.io/pod-deletion-cost";
/** The cost given to pods of workers chosen to go (the others have the default, 0). */
const GOING_COST = -1_000;
/** Tries of one read-modify-write of the scale (a 409 Conflict: someone else changed it meanwhile). */
const SCALE_TRIES = 5;

/**
 * The Deployment's scale subresource after a change of `delta` replicas: the same
 * object with its resourceVersion (so the PUT fails with 409 Conflict if another writer
 * changed it meanwhile, and is read again), never below 0.
 */
export function scaleAfter(current: V1Scale, delta: number): V1Scale {
  const replicas = Math.max(0, (current.spec?.replicas ?? 0) + delta);
  return {
    apiVersion: "autoscaling/v1",
    kind: "Scale",
    metadata: { name: current.metadata?.name, namespace: current.metadata?.namespace, resourceVersion: current.metadata?.resourceVersion },
    spec: { replicas },
  };
}

/** The merge patch that marks a pod to go first when the ReplicaSet shrinks. */
export function deletionCostPatch(cost = GOING_COST): { metadata: { annotations: Record<string, string> } } {
  return { metadata: { annotations: { [POD_DELETION_COST]: String(cost) } } };
}

/**
 * `kubernetes`: the workers are the pods of a Deployment (deploy/k8s/workers.yaml), sized
 * through its scale subresource. The scaler's launches and stops become a change of the
 * Deployment's replicas by as many, read-modify-write on the scale's resourceVersion, so
 * a change made meanwhile by someone else (`kubectl scale`, another tool) is not
 * overwritten but built on. Pods cannot be told their worker ids: a new pod's first
 * heartbeat ends the oldest warm-up (decide.ts).
 *
 * Scale-in must not take a busy pod: the workers chosen to go (idle ones) get a low
 * `controller.kubernetes.io/pod-deletion-cost`, so the ReplicaSet removes exactly those;
 * a pod that goes anyway gets SIGTERM and drains (its preStop hook and termination
 * grace period: the running task checkpoints and is handed back). A pod's name is its
 * hostname, which its worker's record carries.
 *
 * Crashed pods are the ReplicaSet's to replace, so takeExits() reports nothing, and
 * close() leaves the pods alone: they outlive the scaler by design.
 */
export class KubernetesBackend implements ScalerBackend {
  readonly kind = "kubernetes" as const;
  private readonly apps: AppsV1Api;
  private readonly core: CoreV1Api;
  private readonly counts = { scaled: 0, marked: 0, errors: 0 };
  private lastReplicas?: number;
  private lastError?: string;

  constructor(
    private readonly ctx: BackendContext,
    kubeConfig?: KubeConfig,
  ) {
    const k = ctx.pool.kubernetes!;
    const kc = kubeConfig ?? new KubeConfig();
    if (!kubeConfig) {
      // loadFromDefault: KUBECONFIG or ~/.kube/config, else the pod's service account (in a cluster).
      if (k.kubeconfig) kc.loadFromFile(k.kubeconfig);
      else kc.loadFromDefault();
    }
    if (k.context) kc.setCurrentContext(k.context);
    this.apps = kc.makeApiClient(AppsV1Api);
    this.core = kc.makeApiClient(CoreV1Api);
  }

  async launch(ids: readonly string[]): Promise<void> {
    if (ids.length) await this.scaleBy(ids.length);
  }

  async stop(orders: ReadonlyArray<StopOrder & { record?: WorkerRecord }>): Promise<void> {
    if (orders.length === 0) return;
    const k = this.ctx.pool.kubernetes!;
    if (k.podDeletionCost) {
      for (const o of orders) {
        const pod = o.record?.host;
        if (!pod) continue;
        try {
          await this.core.patchNamespacedPod({ name: pod, namespace: k.namespace, body: deletionCostPatch() }, setHeaderOptions("Content-Type", PatchStrategy.MergePatch));
          this.counts.marked++;
        } catch (err) {
          // Not fatal: the ReplicaSet still prefers pods that are not ready, and a busy one drains on SIGTERM.
          this.ctx.log.warn({ pod, err: describe(err) }, "the pod's deletion cost was not set");
        }
      }
    }
    await this.scaleBy(-orders.length);
  }

  async abandon(ids: readonly string[]): Promise<void> {
    // Pods that never became ready are the ReplicaSet's first choice on scale-down.
    if (ids.length) await this.scaleBy(-ids.length);
  }

  ready(): void {}

  takeExits(): WorkerExit[] {
    return [];
  }

  status(): Record<string, unknown> {
    const k = this.ctx.pool.kubernetes!;
    return { deployment: `${k.namespace}/${k.deployment}`, replicas: this.lastReplicas, ...this.counts, ...(this.lastError ? { lastError: this.lastError } : {}) };
  }

  async close(): Promise<void> {}

  /** Changes the Deployment's replicas by `delta`, read-modify-write on the scale's resourceVersion. */
  async scaleBy(delta: number): Promise<number> {
    const k = this.ctx.pool.kubernetes!;
    const target = { name: k.deployment, namespace: k.namespace };
    try {
      const done = await retry(
        async () => {
          const current = await this.apps.readNamespacedDeploymentScale(target);
          const next = scaleAfter(current, delta);
          await this.apps.replaceNamespacedDeploymentScale({ ...target, body: next });
          return next.spec!.replicas!;
        },
        { attempts: SCALE_TRIES, backoff: Backoff.cas, retryIf: (err) => err instanceof ApiException && err.code === 409 },
      );
      this.lastReplicas = done;
      this.lastError = undefined;
      this.counts.scaled++;
      this.ctx.log.info({ deployment: `${k.namespace}/${k.deployment}`, delta, replicas: done }, "deployment scaled");
      return done;
    } catch (err) {
      this.counts.errors++;
      this.lastError = describe(err);
      throw new Error(`deployment ${k.namespace}/${k.deployment} could not be scaled by ${delta}: ${this.lastError}`, { cause: err });
    }
  }
}

/** An API error with its HTTP status and the server's message (RBAC: the scaler's ServiceAccount needs get/update on deployments/scale and patch on pods). */
function describe(err: unknown): string {
  if (err instanceof ApiException) {
    const body = err.body as { message?: string } | string | undefined;
    const msg = typeof body === "string" ? body : body?.message;
    return `HTTP ${err.code}${msg ? `: ${msg}` : ""}${err.code === 403 ? " (RBAC: see deploy/k8s/scaler-rbac.yaml)" : ""}`;
  }
  return errorMessage(err);
}
