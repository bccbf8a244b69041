// Starts the shards, waits for each ready line, starts the router, then watches them all.
// A stop signal shuts down router-then-shards and exits 0; any child exiting on its own stops the
// rest and exits 1 after one error line naming that child.
import { rmSync } from "node:fs";
import { Child, type ChildExit, type ReadyLine } from "./child.js";
import { routerCommand, shardCommand } from "./command-lines.js";
import type { Logger } from "./logger.js";
import { socketPath, type LaunchPlan } from "./plan.js";

type Event =
  | { kind: "ready"; lines: ReadyLine[] }
  | { kind: "signal"; signal: string }
  | { kind: "exit"; child: Child; exit: ChildExit }
  | { kind: "timeout"; message: string };

export class Supervisor {
  private shards: Child[] = [];
  private router: Child | undefined;
  private timers: NodeJS.Timeout[] = [];

  constructor(
    private readonly plan: LaunchPlan,
    private readonly logger: Logger,
    private readonly env: NodeJS.ProcessEnv,
    /** Resolves with the signal name when the user asks to stop. */
    private readonly stopRequested: Promise<string>,
  ) {}

  /** Runs until shutdown; resolves with the launcher's exit code. */
  async run(): Promise<number> {
    const { plan, logger } = this;
    this.removeLeftovers();
    try {
      logger.info({ launchId: plan.launchId, modelDir: plan.modelDir, numShard: plan.derived.numShard,
        maxBatchPrefillTokens: plan.derived.maxBatchPrefillTokens }, "starting text-gen");
      if (plan.args.trustRemoteCode) logger.warn("--trust-remote-code has no effect: text-gen never runs model code");
      for (let rank = 0; rank < plan.derived.numShard; rank++) this.shards.push(this.spawnShard(rank));
      const shardsReady = await this.next(
        Promise.all(this.shards.map((s) => s.ready)),
        (pending) => `${pending.map((c) => c.name).join(", ")} not ready after ${plan.args.startupTimeout} s`,
      );
      if (shardsReady.kind !== "ready") return await this.finish(shardsReady, true);

      const master = typeof shardsReady.lines[0]?.socket === "string" ? shardsReady.lines[0].socket : socketPath(plan.udsBase, 0);
      const router = this.spawnRouter(master);
      const routerReady = await this.next(router.ready.then((l) => [l]), () => `router not ready after ${plan.args.startupTimeout} s`);
      if (routerReady.kind !== "ready") return await this.finish(routerReady, true);

      const line = routerReady.lines[0]!;
      logger.info({ port: line.port, hostname: line.hostname, url: `http://${String(line.hostname)}:${String(line.port)}`, launchId: plan.launchId },
        "text-gen ready");
      return await this.finish(await Promise.race([this.anyExit(), this.signal()]), false);
    } finally {
      for (const t of this.timers) clearTimeout(t);
      this.removeLeftovers();
    }
  }

  private spawnShard(rank: number): Child {
    const { args, env } = shardCommand(this.plan, rank, this.env);
    return this.spawn(`shard ${rank}`, this.plan.shardScript, args, env);
  }

  private spawnRouter(masterSocket: string): Child {
    const { args, env } = routerCommand(this.plan, masterSocket, this.env);
    this.router = this.spawn("router", this.plan.routerScript, args, env);
    return this.router;
  }

  private spawn(name: string, script: string, args: string[], env: Record<string, string>): Child {
    const child = new Child({ name, script, args, env, killAfterMs: this.plan.args.gracefulTerminationTimeout * 1000 }, this.logger);
    this.logger.info({ child: name, pid: child.pid }, `started ${name}`);
    return child;
  }

  private get children(): Child[] {
    return this.router ? [...this.shards, this.router] : [...this.shards];
  }

  private anyExit(): Promise<Event> {
    return Promise.race(this.children.map((child) => child.exited.then((exit): Event => ({ kind: "exit", child, exit }))));
  }

  private signal(): Promise<Event> {
    return this.stopRequested.then((signal): Event => ({ kind: "signal", signal }));
  }

  /** Waits for `ready`, a child exit, a stop signal, or the startup timeout, whichever comes first. */
  private next(ready: Promise<ReadyLine[]>, timeoutMessage: (pending: Child[]) => string): Promise<Event> {
    const readyNames = new Set<Child>();
    for (const c of this.children) void c.ready.then(() => readyNames.add(c));
    const timeout = new Promise<Event>((resolve) => {
      this.timers.push(setTimeout(() => {
        resolve({ kind: "timeout", message: timeoutMessage(this.children.filter((c) => !readyNames.has(c))) });
      }, this.plan.args.startupTimeout * 1000));
    });
    return Promise.race([ready.then((lines): Event => ({ kind: "ready", lines })), this.anyExit(), this.signal(), timeout]);
  }

  private async finish(event: Event, starting: boolean): Promise<number> {
    if (event.kind === "ready") throw new Error("unreachable: finish() with a ready event");
    if (event.kind === "signal") {
      this.logger.info({ signal: event.signal }, "received stop signal, shutting down");
      await this.stopAll();
      this.logger.info("shutdown complete");
      return 0;
    }
    let message: string;
    if (event.kind === "timeout") {
      message = event.message;
    } else {
      const { child, exit } = event;
      const detail = child.lastError ? `: ${child.lastError}` : child.lastLine ? ` (last log line: ${child.lastLine})` : "";
      message = `${child.name} ${Child.describeExit(exit)}${starting ? " during startup" : ""}${detail}`;
    }
    await this.stopAll();
    this.logger.error(message);
    return 1;
  }

  /** Router first (so it stops taking requests), then every shard at once. */
  private async stopAll(): Promise<void> {
    if (this.router) await this.router.stop();
    await Promise.all(this.shards.map((s) => s.stop()));
  }

  /** Sockets, and the shared-memory communicator a kill during rendezvous can leave behind. */
  private removeLeftovers(): void {
    for (let rank = 0; rank < this.plan.derived.numShard; rank++) rmSync(socketPath(this.plan.udsBase, rank), { force: true });
    if (this.plan.derived.numShard > 1) rmSync(`/dev/shm/${this.plan.commName}`, { force: true });
  }
}
