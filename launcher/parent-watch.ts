// Children spawned by the launcher preload this snippet (node --import data:...). It polls the
// launcher's pid and stops the child when the launcher is gone, which covers the one case execa's
// `cleanup` cannot: the launcher itself killed with SIGKILL. The child gets SIGTERM (its own graceful
// shutdown), then exits for certain 10 s later. Residual risk: a child wedged in native code that
// never returns to the event loop is not stopped by this timer.
export const PARENT_PID_ENV = "TEXT_GEN_PARENT_PID";

const SNIPPET = [
  `const p = Number(process.env.${PARENT_PID_ENV});`,
  "if (p > 0) {",
  "  const t = setInterval(() => {",
  "    let alive = process.ppid === p;",
  "    if (alive) { try { process.kill(p, 0); } catch (e) { alive = e.code === 'EPERM'; } }",
  "    if (alive) return;",
  "    clearInterval(t);",
  "    setTimeout(() => process.exit(1), 10000).unref();",
  "    process.kill(process.pid, 'SIGTERM');",
  "  }, 1000);",
  "  t.unref();",
  "}",
].join("\n");

/** Node arguments that preload the watcher. */
export function parentWatchNodeArgs(): string[] {
  return ["--import", `data:text/javascript,${encodeURIComponent(SNIPPET)}`];
}
