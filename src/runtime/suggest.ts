/**
 * Words for people: "did you mean" suggestions and long lists cut short. A leaf module
 * (graph validation and the CLI use it).
 */

/**
 * Edit distance with adjacent transpositions counted as one edit (optimal string
 * alignment), so `lables` is one edit from `labels`, as a person counts it.
 */
export function editDistance(a: string, b: string): number {
  const rows = a.length + 1;
  const cols = b.length + 1;
  const d: number[][] = Array.from({ length: rows }, (_, i) => Array.from({ length: cols }, (_, j) => (i === 0 ? j : j === 0 ? i : 0)));
  for (let i = 1; i < rows; i++) {
    for (let j = 1; j < cols; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let v = Math.min(d[i - 1]![j]! + 1, d[i]![j - 1]! + 1, d[i - 1]![j - 1]! + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) v = Math.min(v, d[i - 2]![j - 2]! + 1);
      d[i]![j] = v;
    }
  }
  return d[a.length]![b.length]!;
}

/**
 * The candidate closest to `word`, when it is close enough to be a likely typo (at most
 * a third of the word's letters off, and at least one), else undefined. Case is ignored.
 */
export function closest(word: string, candidates: Iterable<string>): string | undefined {
  const w = word.toLowerCase();
  const limit = Math.max(1, Math.floor(w.length / 3));
  let best: string | undefined;
  let bestDistance = Infinity;
  for (const c of candidates) {
    const dist = editDistance(w, c.toLowerCase());
    if (dist < bestDistance) {
      best = c;
      bestDistance = dist;
    }
  }
  return bestDistance <= limit ? best : undefined;
}

/** ` (did you mean 'x'?)` when there is a likely intended word, else "". */
export function didYouMean(word: string, candidates: Iterable<string>): string {
  const c = closest(word, candidates);
  return c === undefined ? "" : ` (did you mean '${c}'?)`;
}

/** Items joined by ", ", at most `max` of them, then "and N more". */
export function shortList(items: readonly string[], max = 8): string {
  if (items.length <= max) return items.join(", ");
  return `${items.slice(0, max).join(", ")} and ${items.length - max} more`;
}

/**
 * A path of ids (a dependency cycle) joined by " -> ", with its middle left out when
 * it is long: the first `head` and the last `tail` ids stay.
 */
export function shortPath(ids: readonly string[], head = 4, tail = 3): string {
  if (ids.length <= head + tail + 1) return ids.join(" -> ");
  const left = ids.length - head - tail;
  return [...ids.slice(0, head), `... (${left} more) ...`, ...ids.slice(-tail)].join(" -> ");
}
