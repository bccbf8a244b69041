// The model's chat template: found where transformers looks for it, rendered
// with @huggingface/jinja into the prompt text of a chat request.
import { readFile } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import { Template } from "@huggingface/jinja";
import { readModelJson, TokenizerLoadError } from "./files.js";

/** A template that is missing or fails to render; the HTTP layer answers 422 `template_error`. */
export class ChatTemplateError extends Error {
  constructor(detail: string) {
    super(`Template error: ${detail}`);
    this.name = "ChatTemplateError";
  }
}

/** A message as templates read it: content flattened to a string. */
export interface TemplateMessage {
  role: string;
  content: string;
  [key: string]: unknown;
}

export interface RenderOptions {
  /** Handed to the template as `tools` (absent when undefined, so `tools is defined` stays false). */
  tools?: unknown[];
}

export class ChatTemplate {
  private readonly template: Template | null;
  private readonly parseError: string | null;

  constructor(
    source: string,
    readonly bosToken: string,
    readonly eosToken: string,
  ) {
    // Tags transformers uses to mark assistant spans for training; jinja here does not know them.
    const cleaned = source.replace(/\{%-?\s*(end)?generation\s*-?%\}/g, "");
    try {
      this.template = new Template(cleaned);
      this.parseError = null;
    } catch (err) {
      // Kept until a request needs it: a broken template must not stop /generate from serving.
      this.template = null;
      this.parseError = (err as Error).message;
    }
  }

  /**
   * The prompt for `messages`, ending in the assistant's turn. When the last
   * message is the assistant's, the prompt continues it instead (TGI's rule):
   * cut after its content, trailing whitespace dropped.
   */
  render(messages: TemplateMessage[], options: RenderOptions = {}): string {
    if (this.template === null) throw new ChatTemplateError(this.parseError!);
    // No strftime_now or raise_exception here: @huggingface/jinja defines them and refuses redefinitions.
    const context: Record<string, unknown> = {
      messages,
      bos_token: this.bosToken,
      eos_token: this.eosToken,
      add_generation_prompt: true,
    };
    if (options.tools !== undefined) context.tools = options.tools;
    let text: string;
    try {
      text = this.template.render(context);
    } catch (err) {
      throw new ChatTemplateError((err as Error).message);
    }
    const last = messages.at(-1);
    if (last?.role === "assistant" && last.content !== "") {
      const end = text.lastIndexOf(last.content);
      if (end >= 0) text = text.slice(0, end + last.content.length).trimEnd();
    }
    return text;
  }
}

/** A special token in tokenizer_config.json: a string or an AddedToken object `{content, ...}`. */
function tokenString(value: unknown): string {
  if (typeof value === "string") return value;
  if (value !== null && typeof value === "object" && typeof (value as { content?: unknown }).content === "string") {
    return (value as { content: string }).content;
  }
  return "";
}

/** `chat_template` as transformers stores it: a string, or a list of `{name, template}` of which "default" is used. */
function templateSource(value: unknown, file: string): string | null {
  if (value === undefined || value === null) return null;
  if (typeof value === "string") return value;
  if (Array.isArray(value)) {
    const named = value.find((t) => t !== null && typeof t === "object" && (t as { name?: unknown }).name === "default");
    const source = (named as { template?: unknown } | undefined)?.template;
    return typeof source === "string" ? source : null;
  }
  throw new TokenizerLoadError(`${file}: chat_template must be a string or a list of {name, template}, got ${typeof value}`);
}

async function readOptionalText(path: string): Promise<string | null> {
  try {
    return await readFile(path, "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return null;
    throw new TokenizerLoadError(`cannot read ${path}: ${(err as Error).message}`);
  }
}

/**
 * The chat template of a model dir, or null when it has none. Looked up as
 * transformers does: chat_template.jinja, chat_template.json, then
 * tokenizer_config.json's chat_template.
 */
export async function loadChatTemplate(dir: string, tokenizerConfigPath?: string): Promise<ChatTemplate | null> {
  // --tokenizer-config-path replaces the dir's tokenizer_config.json; its template wins over the dir's files.
  const config = ((tokenizerConfigPath !== undefined
    ? await readModelJson(dirname(tokenizerConfigPath), basename(tokenizerConfigPath), true)
    : await readModelJson(dir, "tokenizer_config.json", false)) ?? {}) as Record<string, unknown>;
  const bos = tokenString(config.bos_token);
  const eos = tokenString(config.eos_token);
  const explicit = tokenizerConfigPath === undefined ? null : templateSource(config.chat_template, tokenizerConfigPath);
  if (explicit !== null) return new ChatTemplate(explicit, bos, eos);
  const jinja = await readOptionalText(join(dir, "chat_template.jinja"));
  if (jinja !== null) return new ChatTemplate(jinja, bos, eos);
  const separate = (await readModelJson(dir, "chat_template.json", false)) as Record<string, unknown> | undefined;
  const source =
    templateSource(separate?.chat_template, "chat_template.json") ?? templateSource(config.chat_template, "tokenizer_config.json");
  return source === null ? null : new ChatTemplate(source, bos, eos);
}
