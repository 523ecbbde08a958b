import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { Metrics } from "../../src/runtime/metrics.js";

/**
 * deploy/grafana/ado.json is built on what /metrics exports: every metric name in every
 * panel's query is one the Metrics registry (the one /metrics serves) has, with the
 * series suffixes of its type, and every label a query groups or filters by is a label
 * of a metric it reads. A renamed metric or label fails here, not on a blank panel.
 */

const file = fileURLToPath(new URL("../../deploy/grafana/ado.json", import.meta.url));

interface Panel {
  type: string;
  title: string;
  targets?: { expr: string }[];
  panels?: Panel[];
}

/** The series names a registry's metrics expose, with the labels each has. */
function exported(): Map<string, Set<string>> {
  const out = new Map<string, Set<string>>();
  for (const m of new Metrics().registry.getMetricsAsArray() as unknown as { name: string; type: string; labelNames?: string[] }[]) {
    const labels = new Set(m.labelNames ?? []);
    if (m.type === "histogram") {
      out.set(`${m.name}_bucket`, new Set([...labels, "le"]));
      out.set(`${m.name}_sum`, labels);
      out.set(`${m.name}_count`, labels);
    } else if (m.type === "summary") {
      out.set(m.name, new Set([...labels, "quantile"]));
      out.set(`${m.name}_sum`, labels);
      out.set(`${m.name}_count`, labels);
    } else out.set(m.name, labels);
  }
  return out;
}

// PromQL words that look like names: functions, aggregations, keywords.
const PROMQL = new Set(
  "sum avg min max count stddev stdvar topk bottomk quantile count_values group by without on ignoring group_left group_right bool and or unless offset rate irate increase delta idelta deriv histogram_quantile clamp_min clamp_max clamp abs ceil floor round sqrt exp ln log2 log10 time vector scalar sort sort_desc label_replace label_join avg_over_time max_over_time min_over_time sum_over_time count_over_time last_over_time absent absent_over_time changes resets predict_linear timestamp".split(
    " ",
  ),
);
// Labels Prometheus adds to every scraped series.
const TARGET_LABELS = new Set(["instance", "job"]);

/** Metric names and label names an expression uses. */
function parseExpr(expr: string): { metrics: string[]; labels: string[] } {
  const labels: string[] = [];
  // by (...) / without (...) / on (...) / ignoring (...)
  for (const m of expr.matchAll(/\b(?:by|without|on|ignoring)\s*\(([^)]*)\)/g)) labels.push(...m[1]!.split(",").map((s) => s.trim()).filter(Boolean));
  // {label="value", ...}
  for (const m of expr.matchAll(/\{([^}]*)\}/g)) labels.push(...[...m[1]!.matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)/g)].map((x) => x[1]!));
  // Strip what is not a metric name: selectors' braces, grouping clauses, ranges, strings, numbers.
  const bare = expr
    .replace(/\{[^}]*\}/g, " ")
    .replace(/\b(?:by|without|on|ignoring)\s*\([^)]*\)/g, " ")
    .replace(/\[[^\]]*\]/g, " ")
    .replace(/"[^"]*"/g, " ");
  const metrics = [...bare.matchAll(/\b([a-zA-Z_:][a-zA-Z0-9_:]*)\b/g)].map((m) => m[1]!).filter((w) => !PROMQL.has(w) && !/^\d/.test(w) && !/^(e|inf|nan)$/i.test(w));
  return { metrics, labels };
}

function panelsOf(list: Panel[]): Panel[] {
  return list.flatMap((p) => [p, ...panelsOf(p.panels ?? [])]);
}

describe("deploy/grafana/ado.json", () => {
  const dashboard = JSON.parse(readFileSync(file, "utf8")) as { panels: Panel[]; uid: string; title: string };
  const panels = panelsOf(dashboard.panels).filter((p) => p.type !== "row");

  it("grafana - every query reads only metrics /metrics exports, by labels they have", () => {
    const have = exported();
    const problems: string[] = [];
    let queries = 0;
    const used = new Set<string>();
    for (const p of panels) {
      expect(p.targets?.length, `panel '${p.title}' has no query`).toBeGreaterThan(0);
      for (const { expr } of p.targets!) {
        queries++;
        const { metrics, labels } = parseExpr(expr);
        if (!metrics.length) problems.push(`'${p.title}': no metric in ${expr}`);
        for (const m of metrics) {
          used.add(m);
          if (!have.has(m)) problems.push(`'${p.title}': ${m} is not exported (${expr})`);
        }
        const known = new Set([...TARGET_LABELS, ...metrics.flatMap((m) => [...(have.get(m) ?? [])])]);
        for (const l of labels) if (!known.has(l)) problems.push(`'${p.title}': label ${l} is on none of ${metrics.join(", ")} (${expr})`);
      }
    }
    expect(problems).toEqual([]);
    expect(queries).toBeGreaterThan(20);
    // The list: states, durations, retries, failure classes, backlog, workers, HITL, cost, tokens, lag, consumer pending.
    for (const m of ["ado_tasks", "ado_task_duration_seconds_bucket", "ado_merge_duration_seconds_bucket", "ado_task_retries_total", "ado_task_failures_total", "ado_task_queue_length", "ado_ready_backlog", "ado_worker_running", "ado_worker_utilization", "ado_hitl_waiting", "ado_cost_usd_total", "ado_tokens_total", "ado_event_lag_seconds_bucket", "ado_jetstream_consumer_pending"]) {
      expect(used, `no panel shows ${m}`).toContain(m);
    }
  });

  it("grafana - the check itself refuses a name /metrics does not export, and a label a metric does not have", () => {
    const have = exported();
    const bad = parseExpr('sum by (state) (rate(ado_tasks_done_total{agent="claude"}[5m]))');
    expect(bad.metrics.filter((m) => !have.has(m))).toEqual(["ado_tasks_done_total"]);
    const wrongLabel = parseExpr("sum by (pool) (ado_worker_running)");
    expect(wrongLabel.labels.filter((l) => !have.get("ado_worker_running")!.has(l))).toEqual(["pool"]);
    expect(parseExpr("histogram_quantile(0.95, sum by (le) (rate(ado_merge_duration_seconds_bucket[15m])))")).toEqual({ metrics: ["ado_merge_duration_seconds_bucket"], labels: ["le"] });
  });

  it("grafana - it imports as a dashboard: a uid, a Prometheus data source variable, and panels that do not overlap", () => {
    expect(dashboard.uid).toBe("ado-overview");
    const all = panelsOf(dashboard.panels) as (Panel & { gridPos: { x: number; y: number; w: number; h: number }; datasource?: { uid: string } })[];
    for (const p of all) if (p.type !== "row") expect(p.datasource?.uid, p.title).toBe("${datasource}");
    const cells = new Set<string>();
    for (const p of all) {
      expect(p.gridPos.x + p.gridPos.w, p.title).toBeLessThanOrEqual(24);
      for (let x = p.gridPos.x; x < p.gridPos.x + p.gridPos.w; x++)
        for (let y = p.gridPos.y; y < p.gridPos.y + p.gridPos.h; y++) {
          const k = `${x},${y}`;
          expect(cells.has(k), `'${p.title}' overlaps another panel at ${k}`).toBe(false);
          cells.add(k);
        }
    }
  });
});
