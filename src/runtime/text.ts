/**
 * Text as a person reads it on one line: shared by the terminal views (src/cli) and
 * whatever keeps a task's latest activity (run snapshots, the dashboard).
 */

/** Removes what would move a terminal's cursor or colour it: a task's output is shown on one line. */
export function oneLine(text: string): string {
  // After a carriage return a terminal overwrites the line: keep what a person would see.
  const line = text.split("\r").filter((s) => s.trim() !== "").pop() ?? "";
  return line
    .replace(/\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(\x07|\x1b\\)?|\x1b[@-Z\\-_]/g, "")
    .replace(/\t/g, "  ")
    .replace(/[\x00-\x08\x0b-\x1f\x7f-\x9f]/g, "")
    .trim();
}

/** The last line of a chunk of output that shows anything, as oneLine() cleans it ("" if none). */
export function lastShownLine(chunk: string): string {
  const lines = chunk.split("\n");
  for (let i = lines.length - 1; i >= 0; i--) {
    const clean = oneLine(lines[i]!);
    if (clean) return clean;
  }
  return "";
}

/** `text` cut to `max` characters, with an ellipsis when cut. */
export const cutText = (text: string, max: number): string => (text.length <= max ? text : `${text.slice(0, max - 1)}…`);
