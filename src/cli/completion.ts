import type { Command } from "commander";
import { AGENT_NAMES } from "../agents/index.js";
import { MERGE_MODES } from "../runtime/graph.js";
import { CliError } from "./common.js";

/** What can follow a command path (`hitl resolve`): its subcommands, options and argument choices. */
interface Node {
  path: string;
  words: string[];
}

/** Completions for the values of some options; the other options that take a value complete file names. */
const VALUES: Record<string, readonly string[]> = {
  "--agent": AGENT_NAMES,
  "--merge-mode": MERGE_MODES,
  "--choose": ["ours", "theirs", "agent"],
};

function walk(cmd: Command, path: string, out: Node[], valueOptions: Set<string>): void {
  const words: string[] = [];
  for (const sub of cmd.commands) if (sub.name() !== "help") words.push(sub.name());
  for (const o of cmd.options) {
    if (o.long) words.push(o.long);
    if (o.required || o.optional) for (const flag of [o.long, o.short]) if (flag) valueOptions.add(flag);
  }
  for (const a of cmd.registeredArguments) words.push(...(a.argChoices ?? []));
  words.push("--help");
  out.push({ path, words: [...new Set(words)] });
  for (const sub of cmd.commands) walk(sub, path ? `${path} ${sub.name()}` : sub.name(), out, valueOptions);
}

/** A shell alternation of quoted words, for a `case` pattern. */
const alternation = (words: Iterable<string>) => [...words].map((w) => `"${w}"`).join("|") || '""';

function bash(nodes: Node[], valueOptions: Set<string>): string {
  const paths = nodes.filter((n) => n.path).map((n) => n.path);
  return `# bash completion for ado. Enable it for this shell:    source <(ado completion bash)
# or for good: ado completion bash > ~/.local/share/bash-completion/completions/ado
_ado_complete() {
  local cur="\${COMP_WORDS[COMP_CWORD]}" prev="\${COMP_WORDS[COMP_CWORD-1]}" path="" w next i
  for ((i = 1; i < COMP_CWORD; i++)); do
    w="\${COMP_WORDS[i]}"
    case "$w" in -*) continue ;; esac
    case "\${COMP_WORDS[i-1]}" in ${alternation(valueOptions)}) continue ;; esac
    next="\${path:+$path }$w"
    case "$next" in ${alternation(paths)}) path="$next" ;; esac
  done
  case "$prev" in
${Object.entries(VALUES)
  .map(([flag, values]) => `    "${flag}") COMPREPLY=($(compgen -W "${values.join(" ")}" -- "$cur")); return ;;`)
  .join("\n")}
    ${alternation(valueOptions)}) COMPREPLY=($(compgen -f -- "$cur")); return ;;
  esac
  local words=""
  case "$path" in
${nodes.map((n) => `    "${n.path}") words="${n.words.join(" ")}" ;;`).join("\n")}
  esac
  COMPREPLY=($(compgen -W "$words" -- "$cur"))
}
complete -o default -F _ado_complete ado
`;
}

function zsh(nodes: Node[], valueOptions: Set<string>): string {
  const paths = nodes.filter((n) => n.path).map((n) => n.path);
  return `# zsh completion for ado. Enable it (after compinit):    source <(ado completion zsh)
_ado() {
  local path_="" w next prev i
  for ((i = 2; i < CURRENT; i++)); do
    w=\${words[i]}
    [[ $w == -* ]] && continue
    case \${words[i-1]} in (${alternation(valueOptions)}) continue ;; esac
    next="\${path_:+$path_ }$w"
    case $next in (${alternation(paths)}) path_=$next ;; esac
  done
  prev=\${words[CURRENT-1]}
  case $prev in
${Object.entries(VALUES)
  .map(([flag, values]) => `    ("${flag}") compadd -- ${values.join(" ")}; return ;;`)
  .join("\n")}
    (${alternation(valueOptions)}) _files; return ;;
  esac
  local -a opts
  case $path_ in
${nodes.map((n) => `    ("${n.path}") opts=(${n.words.join(" ")}) ;;`).join("\n")}
  esac
  compadd -- $opts
}
compdef _ado ado
`;
}

/** `ado completion bash|zsh`: a completion script for the shell, from the command tree itself. */
export function completionScript(program: Command, shell: string): string {
  const nodes: Node[] = [];
  const valueOptions = new Set<string>();
  walk(program, "", nodes, valueOptions);
  if (shell === "bash") return bash(nodes, valueOptions);
  if (shell === "zsh") return zsh(nodes, valueOptions);
  throw new CliError(`ado completion: '${shell}' is not a shell it knows: bash or zsh`);
}
