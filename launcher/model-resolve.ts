// Turns --model-id into a local model directory: a directory as given, or a hub id looked up in
// the local Hugging Face cache (<cache>/models--org--name/snapshots/<commit>). Nothing is downloaded.
import { existsSync, readFileSync, readdirSync, statSync } from "node:fs";
import { homedir } from "node:os";
import { isAbsolute, join, resolve } from "node:path";
import { LauncherError } from "./errors.js";

/** The hub cache folder, with the precedence huggingface_hub uses. */
export function hubCacheDir(env: NodeJS.ProcessEnv): string {
  if (env.HF_HUB_CACHE) return env.HF_HUB_CACHE;
  if (env.HUGGINGFACE_HUB_CACHE) return env.HUGGINGFACE_HUB_CACHE;
  const hfHome = env.HF_HOME ?? join(env.XDG_CACHE_HOME ?? join(homedir(), ".cache"), "huggingface");
  return join(hfHome, "hub");
}

function isDir(p: string): boolean {
  try {
    return statSync(p).isDirectory();
  } catch {
    return false;
  }
}

function requireConfig(dir: string, what: string): string {
  if (!existsSync(join(dir, "config.json"))) throw new LauncherError(`${what} ${dir} has no config.json`);
  return dir;
}

const HUB_ID = /^[A-Za-z0-9][\w.-]*(\/[\w.-]+)?$/;

export function resolveModelDir(modelId: string, revision: string | undefined, env: NodeJS.ProcessEnv, cwd = process.cwd()): string {
  const asPath = resolve(cwd, modelId);
  if (isDir(asPath)) return requireConfig(asPath, "model dir");
  const looksLikePath = isAbsolute(modelId) || modelId.startsWith(".") || modelId.startsWith("~") || modelId.split("/").length > 2;
  if (looksLikePath || !HUB_ID.test(modelId)) {
    throw new LauncherError(`--model-id ${modelId}: no such directory (give a model directory or a hub id in the local Hugging Face cache)`);
  }
  const cache = hubCacheDir(env);
  const repoDir = join(cache, `models--${modelId.replace(/\//g, "--")}`);
  if (!isDir(repoDir)) {
    throw new LauncherError(`--model-id ${modelId} is not a local directory and is not in the Hugging Face cache ` +
      `(${repoDir} does not exist); text-gen does not download models: download it first or pass a directory`);
  }
  const rev = revision ?? "main";
  const refFile = join(repoDir, "refs", rev);
  const commit = existsSync(refFile) ? readFileSync(refFile, "utf8").trim() : rev;
  const snapshot = join(repoDir, "snapshots", commit);
  if (!isDir(snapshot)) {
    const have = isDir(join(repoDir, "snapshots")) ? readdirSync(join(repoDir, "snapshots")) : [];
    throw new LauncherError(`--model-id ${modelId}: revision "${rev}" is not in the Hugging Face cache ` +
      `(${repoDir}; cached snapshots: ${have.length ? have.join(", ") : "none"})`);
  }
  return requireConfig(snapshot, `cached snapshot of ${modelId},`);
}
