import { spawn, execFileSync, type ChildProcess } from "node:child_process";
import { existsSync } from "node:fs";
import { chmod, copyFile, mkdir, writeFile } from "node:fs/promises";
import { createServer, type AddressInfo } from "node:net";
import { join } from "node:path";

/**
 * A real sshd (Debian's openssh-server) on a loopback port with a generated host key and
 * user key, for the ssh backend's tests and bench/ssh-burst.ts.
 */

/** Where Debian installs sshd. */
export const SSHD = "/usr/sbin/sshd";

/** A free TCP port on 127.0.0.1 (free when asked). */
export async function freePort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((r) => srv.listen(0, "127.0.0.1", r));
  const port = (srv.address() as AddressInfo).port;
  await new Promise<void>((r) => srv.close(() => r()));
  return port;
}

/** A running sshd and the user key it accepts. */
export interface Sshd {
  port: number;
  key: string;
  proc: ChildProcess;
  stop(): Promise<void>;
}

/** sshd on a loopback port, accepting one generated key for the current user; undefined (and why) when it cannot run. */
export async function startSshd(dir: string): Promise<Sshd | string> {
  if (!existsSync(SSHD)) return `${SSHD} is not installed (apt-get install openssh-server, or scripts/setup.sh)`;
  // Its privilege separation directory, which the Debian service creates at boot.
  if (!existsSync("/run/sshd")) {
    if (process.getuid?.() !== 0) return "sshd needs /run/sshd, which only root can create here";
    await mkdir("/run/sshd", { recursive: true, mode: 0o755 });
  }
  execFileSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", join(dir, "host_key")]);
  execFileSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", join(dir, "user_key")]);
  await copyFile(join(dir, "user_key.pub"), join(dir, "authorized_keys"));
  await chmod(join(dir, "authorized_keys"), 0o600);
  const port = await freePort();
  const config = join(dir, "sshd_config");
  await writeFile(
    config,
    [
      `Port ${port}`,
      "ListenAddress 127.0.0.1",
      `HostKey ${join(dir, "host_key")}`,
      `AuthorizedKeysFile ${join(dir, "authorized_keys")}`,
      "StrictModes no",
      "UsePAM no",
      "PasswordAuthentication no",
      "KbdInteractiveAuthentication no",
      "PubkeyAuthentication yes",
      "PermitRootLogin prohibit-password",
      `PidFile ${join(dir, "sshd.pid")}`,
      "",
    ].join("\n"),
  );
  const proc = spawn(SSHD, ["-D", "-e", "-f", config], { stdio: ["ignore", "ignore", "pipe"] });
  let err = "";
  proc.stderr!.on("data", (d) => (err += d));
  try {
    // Not the tests' eventually(): bench/ssh-burst.ts uses this outside vitest.
    const end = Date.now() + 10_000;
    while (!(err.includes("Server listening") || proc.exitCode !== null)) {
      if (Date.now() > end) throw new Error("sshd not listening within 10 s");
      await new Promise((r) => setTimeout(r, 50));
    }
  } catch {
    proc.kill("SIGKILL");
    return `sshd did not start: ${err.trim()}`;
  }
  if (proc.exitCode !== null) return `sshd did not start: ${err.trim()}`;
  return {
    port,
    key: join(dir, "user_key"),
    proc,
    stop: () =>
      new Promise<void>((r) => {
        if (proc.exitCode !== null) return r();
        proc.once("exit", () => r());
        proc.kill("SIGTERM");
      }),
  };
}

/** ssh client options for a throwaway host key. */
export const SSH_OPTIONS = ["StrictHostKeyChecking=no", "UserKnownHostsFile=/dev/null", "LogLevel=ERROR"];
