// Runs the real router (dist/router/main.js, or router/main.ts through tsx) as a
// child process against a fake shard, for the router benchmark and the load
// generator's validation. The router is a separate process so that its CPU time
// can be read from /proc/<pid>/stat apart from the load generator's.
import { spawn, execFileSync, type ChildProcess } from "node:child_process";
import { closeSync, existsSync, mkdtempSync, openSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { basename, dirname, join, resolve } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { BenchFakeShard, type FakeShardOptions } from "./fake-shard.js";

const HERE = dirname(fileURLToPath(import.meta.url));
/** The repository root, from bench/ or from the compiled dist/bench/. */
export const ROOT = resolve(HERE, basename(resolve(HERE, "..")) === "dist" ? "../.." : "..");
export const STORIES = join(ROOT, "models", "stories260k");

/** dist: compiled; source: router/main.ts through tsx; custom: another main.ts (a patched copy, to measure a fix). */
export type RouterEntry = "dist" | "source" | "custom";

/**
 * The compiled router (what users run) when it is built, else the sources through tsx;
 * BENCH_ROUTER_ENTRY=dist|source chooses. Rebuild (npm run build:ts) to measure new router code.
 */
export function defaultRouterEntry(env: NodeJS.ProcessEnv = process.env): RouterEntry {
  const chosen = env.BENCH_ROUTER_ENTRY;
  if (chosen === "dist" || chosen === "source") return chosen;
  if (chosen !== undefined) throw new Error(`BENCH_ROUTER_ENTRY must be dist or source, got "${chosen}"`);
  return existsSync(join(ROOT, "dist", "router", "main.js")) ? "dist" : "source";
}

function routerCommand(entry: RouterEntry, customMain?: string): string[] {
  if (entry === "custom") return ["--import", "tsx", customMain!];
  return entry === "dist" ? [join(ROOT, "dist", "router", "main.js")] : ["--import", "tsx", join(ROOT, "router", "main.ts")];
}

/** CPU seconds a process has used in user and kernel mode, from /proc (Linux only). */
let ticks: number | undefined;
export function processCpu(pid: number): { user: number; system: number } {
  ticks ??= Number(execFileSync("getconf", ["CLK_TCK"]).toString().trim()) || 100;
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  // Fields after the ")" that closes the command name: state is field 3, utime 14, stime 15.
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return { user: Number(fields[11]) / ticks, system: Number(fields[12]) / ticks };
}

export interface RouterUnderTest {
  url: string;
  pid: number;
  entry: RouterEntry;
  /** The fake shard when it runs in this process (fakeShard: "in-process"). */
  shard?: BenchFakeShard;
  shardPid?: number;
  logFile: string;
  stop(): Promise<void>;
}

export interface StartOptions {
  fake?: Partial<FakeShardOptions>;
  /** "in-process": the shard runs in this process (its trace is readable); "child": its own process. */
  fakeShard?: "in-process" | "child";
  entry?: RouterEntry;
  /** With entry "custom": the router main.ts to run. */
  customMain?: string;
  routerArgs?: string[];
  /** Extra node flags for the router (e.g. --cpu-prof). */
  nodeFlags?: string[];
  cwd?: string;
}

function waitForReady(child: ChildProcess, what: string, logFile: string, timeoutMs = 60_000): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${what} not ready after ${timeoutMs} ms; log: ${logFile}`)), timeoutMs);
    const lines = createInterface({ input: child.stdout! });
    lines.on("line", (line) => {
      try {
        const v = JSON.parse(line) as Record<string, unknown>;
        if (v.ready === true) {
          clearTimeout(timer);
          resolve(v);
        }
      } catch {
        /* not the ready line */
      }
    });
    child.once("exit", (code) => {
      clearTimeout(timer);
      const tail = existsSync(logFile) ? readFileSync(logFile, "utf8").split("\n").slice(-15).join("\n") : "";
      reject(new Error(`${what} exited with code ${code} before it was ready:\n${tail}`));
    });
  });
}

function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const kill = setTimeout(() => child.kill("SIGKILL"), 5000);
    child.once("exit", () => {
      clearTimeout(kill);
      resolve();
    });
    child.kill("SIGTERM");
  });
}

export async function startRouterWithFakeShard(options: StartOptions = {}): Promise<RouterUnderTest> {
  const dir = mkdtempSync(join(tmpdir(), "tg-bench-"));
  const socket = join(dir, "shard-0");
  const logFile = join(dir, "router.log");
  const children: ChildProcess[] = [];
  let shard: BenchFakeShard | undefined;
  const cleanup = async () => {
    for (const c of children.reverse()) await stopChild(c);
    shard?.close();
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    let shardPid: number | undefined;
    if ((options.fakeShard ?? "in-process") === "in-process") {
      shard = new BenchFakeShard(socket, options.fake);
      await shard.listen();
    } else {
      const f = options.fake ?? {};
      const args = ["--import", "tsx", join(ROOT, "bench", "cli.ts"), "fake-shard", "--uds", socket];
      if (f.delayMs !== undefined) args.push("--delay-ms", String(f.delayMs));
      if (f.kvTokens !== undefined) args.push("--kv-tokens", String(f.kvTokens));
      if (f.token !== undefined) args.push("--token", String(f.token));
      if (f.supportChunking === false) args.push("--no-chunking");
      if (f.fixedPeriod) args.push("--fixed-period");
      const shardLog = openSync(join(dir, "shard.log"), "w");
      const child = spawn(process.execPath, args, { cwd: ROOT, stdio: ["ignore", "pipe", shardLog] });
      closeSync(shardLog);
      children.push(child);
      await waitForReady(child, "fake shard", join(dir, "shard.log"));
      shardPid = child.pid;
    }
    const entry = options.customMain ? "custom" : (options.entry ?? defaultRouterEntry());
    const args = [
      ...(options.nodeFlags ?? []),
      ...routerCommand(entry, options.customMain),
      "--master-shard-uds-path", socket,
      "--tokenizer-name", STORIES,
      "--hostname", "127.0.0.1",
      "--port", "0",
      "--max-concurrent-requests", "100000",
      ...(options.routerArgs ?? []),
    ];
    const log = openSync(logFile, "w");
    const router = spawn(process.execPath, args, { cwd: options.cwd ?? ROOT, stdio: ["ignore", "pipe", log] });
    closeSync(log);
    children.push(router);
    const ready = await waitForReady(router, "router", logFile);
    return {
      url: `http://127.0.0.1:${ready.port}`,
      pid: router.pid!,
      entry,
      shard,
      shardPid,
      logFile,
      stop: cleanup,
    };
  } catch (e) {
    await cleanup();
    throw e;
  }
}
