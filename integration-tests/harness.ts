// Starts the real text-gen-launcher for end-to-end tests: --port 0, waits for the "text-gen ready"
// log line to learn the port, keeps every log line for diagnostics, and always kills what it started.
import { spawn, type ChildProcess } from "node:child_process";
import { dirname, join, resolve } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..");
export const STORIES = join(ROOT, "models", "stories260k");
/** The compiled launcher, as users run it. */
export const COMPILED_LAUNCHER = [join(ROOT, "dist", "launcher", "main.js")];
/** The launcher from sources (for the launcher's own tests). */
export const SOURCE_LAUNCHER = ["--import", "tsx", join(ROOT, "launcher", "main.ts")];

export interface LogLine {
  level?: number;
  msg?: string;
  child?: string;
  pid?: number;
  port?: number;
  [k: string]: unknown;
}

export interface LaunchOptions {
  args?: string[];
  /** Added to (and overriding) the test process's environment. */
  env?: Record<string, string | undefined>;
  /** Node arguments that start the launcher; default the compiled one. */
  entry?: string[];
  readyTimeoutMs?: number;
  /** Do not wait for "text-gen ready" (for launches expected to fail). */
  noWait?: boolean;
}

export interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export class LaunchedServer {
  readonly lines: string[] = [];
  readonly logs: LogLine[] = [];
  readonly exited: Promise<Exit>;
  port = 0;
  private exitValue: Exit | undefined;

  constructor(readonly proc: ChildProcess) {
    this.exited = new Promise((res) => proc.once("exit", (code, signal) => {
      this.exitValue = { code, signal };
      res(this.exitValue);
    }));
    for (const stream of [proc.stdout!, proc.stderr!]) {
      createInterface({ input: stream }).on("line", (line) => {
        this.lines.push(line);
        try {
          const v = JSON.parse(line) as unknown;
          if (v && typeof v === "object" && !Array.isArray(v)) this.logs.push(v as LogLine);
        } catch {
          /* plain text line */
        }
      });
    }
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  get running(): boolean {
    return this.exitValue === undefined;
  }

  /** Pids of the shards and router, from the launcher's "started …" lines. */
  childPids(): Map<string, number> {
    const m = new Map<string, number>();
    for (const l of this.logs) if (typeof l.msg === "string" && l.msg.startsWith("started ") && l.child && l.pid) m.set(l.child, l.pid);
    return m;
  }

  tail(n = 40): string {
    return this.lines.slice(-n).join("\n");
  }

  async waitForLog(pred: (l: LogLine) => boolean, timeoutMs: number): Promise<LogLine> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const hit = this.logs.find(pred);
      if (hit) return hit;
      if (!this.running) throw new Error(`launcher exited (${JSON.stringify(this.exitValue)}) before the expected log line:\n${this.tail()}`);
      if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for a log line:\n${this.tail()}`);
      await sleep(50);
    }
  }

  /** Sends `signal` and waits for the launcher to exit (SIGKILL after timeoutMs). */
  async stop(signal: NodeJS.Signals = "SIGTERM", timeoutMs = 30_000): Promise<Exit> {
    if (this.running) this.proc.kill(signal);
    const timer = setTimeout(() => this.proc.kill("SIGKILL"), timeoutMs);
    try {
      return await this.exited;
    } finally {
      clearTimeout(timer);
    }
  }

  /** Last resort for teardown: the launcher and every child it reported, killed outright. */
  async destroy(): Promise<void> {
    if (this.running) await this.stop("SIGTERM", 20_000);
    for (const pid of this.childPids().values()) if (isAlive(pid)) process.kill(pid, "SIGKILL");
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === "EPERM";
  }
}

/** Waits until none of `pids` exists; returns those still alive at the deadline. */
export async function waitGone(pids: number[], timeoutMs: number): Promise<number[]> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const alive = pids.filter(isAlive);
    if (alive.length === 0 || Date.now() > deadline) return alive;
    await sleep(50);
  }
}

/** Starts the launcher; unless noWait, resolves once it logged "text-gen ready" (port set). */
export async function startLauncher(opts: LaunchOptions = {}): Promise<LaunchedServer> {
  const args = opts.args ?? [];
  const withDefaults = [
    ...(args.includes("--port") ? [] : ["--port", "0"]),
    ...(args.includes("--hostname") ? [] : ["--hostname", "127.0.0.1"]),
    ...(args.includes("--json-output") ? [] : ["--json-output"]),
    ...args,
  ];
  const env = { ...process.env, ...opts.env };
  for (const [k, v] of Object.entries(env)) if (v === undefined) delete env[k];
  const proc = spawn(process.execPath, [...(opts.entry ?? COMPILED_LAUNCHER), ...withDefaults], {
    cwd: ROOT,
    env,
    stdio: ["ignore", "pipe", "pipe"],
  });
  const server = new LaunchedServer(proc);
  if (opts.noWait) return server;
  try {
    const ready = await server.waitForLog((l) => l.msg === "text-gen ready", opts.readyTimeoutMs ?? 120_000);
    server.port = Number(ready.port);
  } catch (e) {
    await server.destroy();
    throw e;
  }
  return server;
}

interface Teardownable {
  teardown(fn: () => unknown): void;
}

/** startLauncher, with the launch torn down when the test `t` ends. */
export async function launch(t: Teardownable, opts: LaunchOptions = {}): Promise<LaunchedServer> {
  const server = await startLauncher(opts);
  t.teardown(() => server.destroy());
  return server;
}
