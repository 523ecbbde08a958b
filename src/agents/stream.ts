/**
 * Reading an agent CLI's output: chunks into lines, lines into JSON objects, and the
 * small defensive readers every parser uses (a CLI's fields are checked where read, so a
 * line of an unexpected shape is skipped, never a crash).
 */

/** Longest line kept whole; a longer one is passed on in pieces of this size (it cannot be JSON we read). */
export const MAX_LINE_CHARS = 8 * 1024 * 1024;

/**
 * Splits a stream of text chunks into lines (`\n`, with a trailing `\r` dropped). The
 * last line, without its newline, comes out at end().
 */
export class LineSplitter {
  private buf = "";

  constructor(
    private readonly onLine: (line: string) => void,
    private readonly maxLine = MAX_LINE_CHARS,
  ) {}

  push(chunk: string): void {
    let text = this.buf + chunk;
    let nl = text.indexOf("\n");
    while (nl !== -1) {
      this.emit(text.slice(0, nl));
      text = text.slice(nl + 1);
      nl = text.indexOf("\n");
    }
    // A line that never ends (a binary dump, a runaway print) must not grow without bound.
    while (text.length > this.maxLine) {
      this.onLine(text.slice(0, this.maxLine));
      text = text.slice(this.maxLine);
    }
    this.buf = text;
  }

  /** Flushes a last line that had no newline (a CLI killed mid-write). */
  end(): void {
    if (this.buf) this.emit(this.buf);
    this.buf = "";
  }

  private emit(line: string): void {
    this.onLine(line.endsWith("\r") ? line.slice(0, -1) : line);
  }
}

export type Json = Record<string, unknown>;

/** The line as a JSON object, or undefined when it is not one (text, garbage, an array). */
export function parseJsonLine(line: string): Json | undefined {
  const t = line.trim();
  if (!t.startsWith("{") || !t.endsWith("}")) return undefined;
  try {
    const v: unknown = JSON.parse(t);
    return v && typeof v === "object" && !Array.isArray(v) ? (v as Json) : undefined;
  } catch {
    return undefined;
  }
}

export const str = (v: unknown): string | undefined => (typeof v === "string" ? v : undefined);
export const num = (v: unknown): number | undefined => (typeof v === "number" && Number.isFinite(v) ? v : undefined);
/** A non-negative integer count (tokens), 0 when absent or malformed. */
export const count = (v: unknown): number => {
  const n = num(v);
  return n !== undefined && n > 0 ? Math.round(n) : 0;
};
export const obj = (v: unknown): Json | undefined => (v && typeof v === "object" && !Array.isArray(v) ? (v as Json) : undefined);
export const arr = (v: unknown): unknown[] => (Array.isArray(v) ? v : []);

/** Longest text an event carries; the whole output stays in `task.output`. */
export const MAX_EVENT_TEXT = 8 * 1024;
/** Longest tool summary (a command line, a few paths). */
export const MAX_SUMMARY = 200;

/** `text` cut to `max` characters, and whether it was cut. */
export function clip(text: string, max: number): { text: string; truncated: boolean } {
  return text.length <= max ? { text, truncated: false } : { text: text.slice(0, max - 1) + "…", truncated: true };
}

/** One line of at most MAX_SUMMARY characters. */
export function summaryOf(text: string): string {
  return clip(text.replace(/\s+/g, " ").trim(), MAX_SUMMARY).text;
}

/** The last `max` lines seen: a CLI's stderr, kept to explain a failure. */
export class Tail {
  private readonly lines: string[] = [];
  constructor(private readonly max = 40) {}
  push(line: string): void {
    if (!line.trim()) return;
    this.lines.push(line.length > 1_000 ? line.slice(0, 1_000) : line);
    if (this.lines.length > this.max) this.lines.shift();
  }
  get text(): string {
    return this.lines.join("\n");
  }
  /** The last line that matches, or undefined. */
  find(re: RegExp): string | undefined {
    for (let i = this.lines.length - 1; i >= 0; i--) if (re.test(this.lines[i]!)) return this.lines[i];
    return undefined;
  }
  get last(): string | undefined {
    return this.lines[this.lines.length - 1];
  }
}
