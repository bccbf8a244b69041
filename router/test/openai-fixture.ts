// Chat-capable fixtures for the OpenAI tests: stories260k has no chat template,
// so these copy its tokenizer files next to a tokenizer_config.json that has one.
import { copyFile, mkdtemp, readFile, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { InferBackend, InferEvent, ValidRequest } from "../infer/types.js";
import { ChatTemplate, loadChatTemplate } from "../tokenizer/chat-template.js";
import { FakeBackend, startFakeServer, STORIES_DIR, type FakeOptions, type FakeServer } from "./fake-backend.js";

/** ChatML, as Qwen2 ships it (simplified: no default system prompt). */
export const CHATML =
  "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}" +
  "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

/** A Llama-3-like template: BOS first, headers per turn, a tool list when given. */
export const LLAMA3_LIKE =
  "{{ bos_token }}{% if tools is defined %}<|tools|>{{ tools | length }}{% endif %}" +
  "{% for message in messages %}<|start_header_id|>{{ message.role }}<|end_header_id|>\n\n{{ message.content | trim }}<|eot_id|>{% endfor %}" +
  "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}";

/** A copy of stories260k's tokenizer files whose tokenizer_config.json has `chatTemplate` (omitted when undefined). */
export async function chatModelDir(chatTemplate: unknown, extraConfig: Record<string, unknown> = {}): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), "openai-model-"));
  for (const name of ["tokenizer.json", "config.json", "generation_config.json"]) await copyFile(join(STORIES_DIR, name), join(dir, name));
  const config = JSON.parse(await readFile(join(STORIES_DIR, "tokenizer_config.json"), "utf8")) as Record<string, unknown>;
  if (chatTemplate !== undefined) config.chat_template = chatTemplate;
  await writeFile(join(dir, "tokenizer_config.json"), JSON.stringify({ ...config, ...extraConfig }));
  return dir;
}

/** A router over the fake backend whose model has `template` (ChatML by default; null: none). */
export async function startChatServer(options: FakeOptions = {}, template: string | null = CHATML): Promise<FakeServer> {
  const chatTemplate = template === null ? null : await loadChatTemplate(await chatModelDir(template));
  return startFakeServer(options, { chatTemplate });
}

export const chatTemplateOf = (source: string) => new ChatTemplate(source, "<s>", "</s>");

// ---- a fake backend that honours stop sequences as the real scheduler does ----

/**
 * FakeBackend's tokens, ended early with finish reason stop_sequence once the
 * text ends with a stop sequence (kept in generatedText, as TGI keeps it).
 */
export class StopAwareBackend implements InferBackend {
  constructor(readonly inner: FakeBackend) {}

  health() {
    return this.inner.health();
  }

  stats() {
    return this.inner.stats();
  }

  async *generate(request: ValidRequest, signal: AbortSignal): AsyncGenerator<InferEvent> {
    let text = "";
    let count = 0;
    for await (const event of this.inner.generate(request, signal)) {
      if (event.type === "prefill" || event.type === "error") {
        yield event;
        continue;
      }
      text += event.token.text;
      count++;
      if (event.type === "token" && request.parameters.stop.some((s) => text.endsWith(s))) {
        yield {
          type: "end",
          token: event.token,
          topTokens: event.topTokens,
          generatedText: text,
          finishReason: "stop_sequence",
          generatedTokens: count,
          seed: request.parameters.doSample ? request.parameters.seed : null,
          inputLength: request.inputIds.length,
          timings: { queuedAt: 0, batchedAt: 0, finishedAt: 0 },
        };
        return;
      }
      yield event;
    }
  }
}

/** startChatServer over a StopAwareBackend; `backend` is the FakeBackend inside. */
export async function startStopAwareServer(options: FakeOptions = {}): Promise<FakeServer> {
  const inner = new FakeBackend(options);
  const chatTemplate = await loadChatTemplate(await chatModelDir(CHATML));
  const server = await startFakeServer(options, { chatTemplate, backend: new StopAwareBackend(inner) });
  return { ...server, backend: inner };
}
