// One supervised child process (a shard or the router): spawned with execa, its stdout read line by
// line for the JSON ready line, its stderr pino lines relayed through the launcher's logger.
import { execa, type ResultPromise } from "execa";
import { createInterface } from "node:readline";
import { relayChildLine, type Logger } from "./logger.js";
import { parentWatchNodeArgs, PARENT_PID_ENV } from "./parent-watch.js";

export interface ChildSpec {
  /** "shard 0", "router": how logs and errors name it. */
  name: string;
  script: string;
  args: string[];
  env: Record<string, string>;
  /** SIGTERM → SIGKILL delay when stopping. */
  killAfterMs: number;
}

export interface ChildExit {
  code?: number;
  signal?: string;
  /** Spawn failure (e.g. ENOENT), when there was no exit code. */
  error?: string;
}

export type ReadyLine = Record<string, unknown> & { ready: true };

export class Child {
  readonly name: string;
  readonly pid: number | undefined;
  /** Resolves with the ready line; never rejects (watch `exited` for failures). */
  readonly ready: Promise<ReadyLine>;
  readonly exited: Promise<ChildExit>;
  lastError: string | undefined;
  lastLine: string | undefined;
  private readonly proc: ResultPromise;
  private hasExited = false;

  constructor(spec: ChildSpec, logger: Logger) {
    this.name = spec.name;
    this.proc = execa(process.execPath, [...parentWatchNodeArgs(), spec.script, ...spec.args], {
      env: { ...spec.env, [PARENT_PID_ENV]: String(process.pid) },
      extendEnv: false,
      cleanup: true,
      detached: false,
      forceKillAfterDelay: spec.killAfterMs,
      stdin: "ignore",
      stdout: "pipe",
      stderr: "pipe",
      buffer: false,
      reject: false,
    });
    this.pid = this.proc.pid;
    this.exited = this.proc.then((r) => {
      this.hasExited = true;
      if (r.exitCode !== undefined) return { code: r.exitCode };
      if (r.signal) return { signal: r.signal };
      return { error: r.shortMessage };
    });
    const stderr = createInterface({ input: this.proc.stderr! });
    stderr.on("line", (line) => {
      const relayed = relayChildLine(logger, this.name, line);
      if (!relayed) return;
      this.lastLine = relayed.msg;
      if (relayed.level === "error" || relayed.level === "fatal") this.lastError = relayed.msg;
    });
    this.ready = new Promise((resolve) => {
      const stdout = createInterface({ input: this.proc.stdout! });
      let ready = false;
      stdout.on("line", (line) => {
        if (!ready) {
          const parsed = parseJsonObject(line);
          if (parsed?.ready === true) {
            ready = true;
            resolve(parsed as ReadyLine);
            return;
          }
        }
        if (line.trim() !== "") logger.info({ child: this.name, stdout: true }, line);
      });
    });
  }

  get running(): boolean {
    return !this.hasExited;
  }

  /**
   * SIGTERM, then SIGKILL after the spec's killAfterMs, or after `killAfterMs` when given
   * (sooner); resolves when the process is gone.
   */
  async stop(killAfterMs?: number): Promise<ChildExit> {
    if (this.hasExited) return this.exited;
    this.proc.kill("SIGTERM");
    if (killAfterMs !== undefined) {
      const timer = setTimeout(() => this.proc.kill("SIGKILL"), killAfterMs);
      void this.exited.then(() => clearTimeout(timer));
    }
    return this.exited;
  }

  /** "exited with code 1" / "exited with signal SIGKILL" / "failed to start: …" */
  static describeExit(e: ChildExit): string {
    if (e.code !== undefined) return `exited with code ${e.code}`;
    if (e.signal) return `exited with signal ${e.signal}`;
    return `failed to start: ${e.error ?? "unknown error"}`;
  }
}

function parseJsonObject(line: string): Record<string, unknown> | undefined {
  try {
    const v = JSON.parse(line) as unknown;
    return v !== null && typeof v === "object" && !Array.isArray(v) ? (v as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}
