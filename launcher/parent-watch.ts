// Children spawned by the launcher preload this snippet (node --import data:...). It polls the
// launcher's pid and stops the child when the launcher is gone, which covers the one case execa's
// `cleanup` cannot: the launcher itself killed with SIGKILL. The child gets SIGTERM (its own graceful
// shutdown), then SIGKILLs itself 10 s later: not process.exit(), whose teardown can wait forever
// on a GPU kernel that a dead NCCL peer left spinning. Engine steps and loads run on worker
// threads, so the event loop that runs this timer stays free; a child whose main thread is wedged
// in native code would not be stopped by it.
export const PARENT_PID_ENV = "TEXT_GEN_PARENT_PID";

const SNIPPET = [
  `const p = Number(process.env.${PARENT_PID_ENV});`,
  "if (p > 0) {",
  "  const t = setInterval(() => {",
  "    let alive = process.ppid === p;",
  "    if (alive) { try { process.kill(p, 0); } catch (e) { alive = e.code === 'EPERM'; } }",
  "    if (alive) return;",
  "    clearInterval(t);",
  "    setTimeout(() => process.kill(process.pid, 'SIGKILL'), 10000).unref();",
  "    process.kill(process.pid, 'SIGTERM');",
  "  }, 1000);",
  "  t.unref();",
  "}",
].join("\n");

/** Node arguments that preload the watcher. */
export function parentWatchNodeArgs(): string[] {
  return ["--import", `data:text/javascript,${encodeURIComponent(SNIPPET)}`];
}
