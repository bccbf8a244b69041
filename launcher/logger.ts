// The launcher's pino logger (stderr; JSON with --json-output, else pretty) and the re-emission of
// children's pino JSON lines at their own level, tagged with the child's name.
import { pino, type Logger, type Level } from "pino";
import PinoPretty from "pino-pretty";

export type { Logger };

const LEVELS: Level[] = ["trace", "debug", "info", "warn", "error", "fatal"];

/** LOG_LEVEL as a pino level; TGI-style filter strings fall back to info. */
export function logLevelFromEnv(env: NodeJS.ProcessEnv): Level {
  const v = (env.LOG_LEVEL ?? "info").trim().toLowerCase();
  return (LEVELS as string[]).includes(v) ? (v as Level) : "info";
}

export function createLogger(json: boolean, level: Level): Logger {
  const opts = { level, base: undefined };
  if (json) return pino(opts, pino.destination({ fd: 2, sync: true }));
  return pino(opts, PinoPretty({ destination: 2, sync: true, colorize: process.stderr.isTTY }));
}

function levelName(n: unknown): Level {
  if (typeof n !== "number") return "info";
  if (n >= 60) return "fatal";
  if (n >= 50) return "error";
  if (n >= 40) return "warn";
  if (n >= 30) return "info";
  if (n >= 20) return "debug";
  return "trace";
}

export interface RelayedLine {
  level: Level;
  msg: string;
}

const DROPPED = new Set(["level", "time", "pid", "hostname", "msg", "v"]);

/** Logs one stderr line of a child through `logger`; returns its level and message. */
export function relayChildLine(logger: Logger, child: string, line: string): RelayedLine | undefined {
  if (line.trim() === "") return undefined;
  let parsed: unknown;
  try {
    parsed = JSON.parse(line);
  } catch {
    parsed = undefined;
  }
  if (parsed === null || typeof parsed !== "object" || Array.isArray(parsed)) {
    logger.info({ child }, line);
    return { level: "info", msg: line };
  }
  const obj = parsed as Record<string, unknown>;
  const level = levelName(obj.level);
  const msg = typeof obj.msg === "string" ? obj.msg : "";
  const fields: Record<string, unknown> = { child };
  for (const [k, v] of Object.entries(obj)) if (!DROPPED.has(k)) fields[k] = v;
  logger[level](fields, msg);
  const err = obj.err as { message?: string } | undefined;
  return { level, msg: msg || err?.message || line };
}
