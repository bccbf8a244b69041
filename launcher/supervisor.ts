// Starts this node's shards, waits for each ready line, starts the router (node 0 only), then
// watches them all. A stop signal shuts down router-then-shards and exits 0; any child exiting on
// its own (or a startup timeout) stops the rest and exits 1 after one error line naming that child.
import { rmSync } from "node:fs";
import { Child, type ChildExit, type ReadyLine } from "./child.js";
import { routerCommand, shardCommand } from "./command-lines.js";
import type { Logger } from "./logger.js";
import { rendezvousSocketPath, socketPath, type LaunchPlan } from "./plan.js";

/**
 * SIGTERM → SIGKILL delay for the survivors once a child died or startup timed out. Short, since
 * nothing in flight can finish: a rank whose peer died stays blocked in an NCCL collective, in
 * native code that never returns to its event loop, so only SIGKILL stops it.
 */
export const FAILURE_KILL_AFTER_MS = 5000;

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
      for (const rank of this.localRanks()) this.shards.push(this.spawnShard(rank));
      const shardsReady = await this.next(
        Promise.all(this.shards.map((s) => s.ready)),
        (pending) => `${pending.map((c) => c.name).join(", ")} not ready after ${plan.args.startupTimeout} s`,
      );
      if (shardsReady.kind !== "ready") return await this.finish(shardsReady, true);
      if (plan.derived.firstRank > 0) {
        // Node 0 runs the router; the other nodes only keep their ranks up.
        logger.info({ ranks: this.localRanks(), nodeRank: plan.args.nodeRank, launchId: plan.launchId }, "text-gen shards ready");
        return await this.finish(await Promise.race([this.anyExit(), this.signal()]), false);
      }

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

  private localRanks(): number[] {
    const { firstRank, localShards } = this.plan.derived;
    return Array.from({ length: localShards }, (_, i) => firstRank + i);
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
    await this.stopAll(Math.min(FAILURE_KILL_AFTER_MS, this.plan.args.gracefulTerminationTimeout * 1000));
    this.logger.error(message);
    return 1;
  }

  /**
   * Router first (so it stops taking requests), then every shard at once. After a failure
   * (killAfterMs given, see Child.stop) nothing in flight can finish: all of them at once.
   */
  private async stopAll(killAfterMs?: number): Promise<void> {
    if (killAfterMs !== undefined) {
      await Promise.all(this.children.map((c) => c.stop(killAfterMs)));
      return;
    }
    if (this.router) await this.router.stop();
    await Promise.all(this.shards.map((s) => s.stop()));
  }

  /** Sockets, and what a kill during rendezvous can leave behind: the shared-memory communicator, NCCL's id socket. */
  private removeLeftovers(): void {
    for (const rank of this.localRanks()) rmSync(socketPath(this.plan.udsBase, rank), { force: true });
    if (this.plan.derived.numShard > 1) {
      rmSync(`/dev/shm/${this.plan.commName}`, { force: true });
      rmSync(rendezvousSocketPath(this.plan.udsBase), { force: true });
    }
  }
}
