/**
 * The prompt as a commit message carries it: the task's commit (worker) and its merge or
 * squash commit (merge coordinator, `ado hitl resolve`) say what the task was asked to do.
 * A squash commit is the only record of the task in the integration branch's history
 * (the task's own commit is not its parent), so it carries the same text.
 */

/** Bytes of the prompt a commit message carries (git takes a message as one argument: 128 KiB at most on Linux). */
export const PROMPT_IN_MESSAGE_BYTES = 8 * 1024;

/** The prompt cut at PROMPT_IN_MESSAGE_BYTES (on a character boundary), with a note saying so. */
export function promptInMessage(prompt: string): string {
  const bytes = Buffer.from(prompt);
  if (bytes.length <= PROMPT_IN_MESSAGE_BYTES) return prompt;
  const cut = bytes.subarray(0, PROMPT_IN_MESSAGE_BYTES).toString("utf8").replace(/\uFFFD$/, "");
  return `${cut}\n\n[prompt cut at ${PROMPT_IN_MESSAGE_BYTES / 1024} KiB of ${Math.ceil(bytes.length / 1024)} KiB]`;
}

/** `subject`, then the prompt as the message's body (none when the prompt is blank). */
export function withPrompt(subject: string, prompt: string | undefined): string {
  return `${subject}\n\n${promptInMessage(prompt ?? "")}`.trim();
}
