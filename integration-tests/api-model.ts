// A chat-capable copy of models/stories260k for the API tests: the same files,
// with a chat template that renders BOS followed by the messages' contents, so a
// chat request and /generate on the user's text see the same prompt tokens.
import { cp, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { STORIES } from "./harness.js";

export const CHAT_TEMPLATE = "{{ bos_token }}{% for message in messages %}{{ message['content'] }}{% endfor %}";

interface Teardownable {
  teardown(fn: () => unknown): void;
}

/** The model dir, removed when `t` ends. */
export async function chatModelDir(t: Teardownable): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), "api-stories260k-"));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  await cp(STORIES, dir, { recursive: true });
  const configPath = join(dir, "tokenizer_config.json");
  const config = JSON.parse(await readFile(configPath, "utf8")) as Record<string, unknown>;
  await writeFile(configPath, JSON.stringify({ ...config, chat_template: CHAT_TEMPLATE }, null, 2));
  return dir;
}
