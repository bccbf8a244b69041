#!/usr/bin/env node
// text-gen-launcher: parses flags, resolves the model, then supervises the shards and the router.
import { helpText, parseArgs } from "./args.js";
import { LauncherError } from "./errors.js";
import { createLogger, logLevelFromEnv, type Logger } from "./logger.js";
import { makePlan } from "./plan.js";
import { Supervisor } from "./supervisor.js";

const STOP_SIGNALS = ["SIGINT", "SIGTERM", "SIGHUP"] as const;

function stopRequested(logger: () => Logger | undefined): Promise<string> {
  return new Promise((resolve) => {
    let seen = false;
    for (const sig of STOP_SIGNALS) {
      process.on(sig, () => {
        if (seen) logger()?.warn({ signal: sig }, "already shutting down");
        seen = true;
        resolve(sig);
      });
    }
  });
}

async function main(): Promise<number> {
  let logger: Logger | undefined;
  // Installed first, so a signal during model resolution is not fatal by default.
  const stop = stopRequested(() => logger);
  const level = logLevelFromEnv(process.env);
  try {
    const args = parseArgs(process.argv.slice(2), process.env);
    if (args.help) {
      process.stdout.write(helpText());
      return 0;
    }
    logger = createLogger(args.jsonOutput, level);
    const plan = makePlan(args, process.env, level);
    return await new Supervisor(plan, logger, process.env, stop).run();
  } catch (e) {
    if (!(e instanceof LauncherError)) throw e;
    // Before --json-output is known, argument errors go out as plain text.
    if (logger) logger.error(e.message);
    else process.stderr.write(`text-gen-launcher: ${e.message}\n`);
    return 1;
  }
}

main().then(
  (code) => process.exit(code),
  (e: unknown) => {
    process.stderr.write(`text-gen-launcher: internal error: ${(e as Error)?.stack ?? String(e)}\n`);
    process.exit(1);
  },
);
