// Chat templates: where they are found, how messages render, and the errors.
import t from "tap";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { ChatTemplateError, loadChatTemplate } from "../tokenizer/chat-template.js";
import { templateMessages } from "../openai/chat.js";
import { STORIES_DIR } from "./fake-backend.js";
import { chatModelDir, chatTemplateOf, CHATML, LLAMA3_LIKE } from "./openai-fixture.js";

t.test("system, user, assistant and tool turns with the generation prompt", async (t) => {
  const template = chatTemplateOf(CHATML);
  const messages = templateMessages([
    { role: "system", content: "Be brief." },
    { role: "user", content: "Weather?" },
    { role: "assistant", content: null, tool_calls: [{ id: "1", type: "function", function: { name: "w", arguments: '{"city":"Paris"}' } }] },
    { role: "tool", content: "sunny", tool_call_id: "1" },
  ]);
  t.equal(
    template.render(messages),
    "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nWeather?<|im_end|>\n<|im_start|>assistant\n<|im_end|>\n" +
      "<|im_start|>tool\nsunny<|im_end|>\n<|im_start|>assistant\n",
  );
  t.same(messages[2]!.tool_calls, [{ id: "1", type: "function", function: { name: "w", arguments: { city: "Paris" } } }], "arguments parsed for templates");
  t.equal(messages[3]!.tool_call_id, "1");
  t.notOk("name" in messages[0]!, "null and absent fields stay absent");
});

t.test("content parts, developer role, bos token, tools", async (t) => {
  const template = chatTemplateOf(LLAMA3_LIKE);
  const messages = templateMessages([
    { role: "developer", content: [{ type: "text", text: "Be " }, { type: "text", text: "brief." }] },
    { role: "user", content: "Hi" },
  ]);
  t.equal(
    template.render(messages),
    "<s><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>" +
      "<|start_header_id|>assistant<|end_header_id|>\n\n",
  );
  t.match(template.render(messages, { tools: [{}, {}] }), /^<s><\|tools\|>2<\|start_header_id\|>system/);
  t.throws(() => templateMessages([{ role: "user", content: [{ type: "image_url", image_url: { url: "x" } }] }]), {
    message: "Input validation error: messages[0]: image content is not supported: this server serves text models",
  });
});

t.test("a final assistant message is continued, not closed", async (t) => {
  const template = chatTemplateOf(CHATML);
  const text = template.render(templateMessages([{ role: "user", content: "Count" }, { role: "assistant", content: "1, 2, " }]));
  t.equal(text, "<|im_start|>user\nCount<|im_end|>\n<|im_start|>assistant\n1, 2,");
});

t.test("template errors", async (t) => {
  const broken = chatTemplateOf("{% for m in messages %}");
  t.throws(() => broken.render([{ role: "user", content: "x" }]), ChatTemplateError);
  const raising = chatTemplateOf("{{ raise_exception('roles must alternate') }}");
  t.throws(() => raising.render([{ role: "user", content: "x" }]), { message: "Template error: roles must alternate" });
  // strftime_now is built in; the context must not redefine it.
  t.match(chatTemplateOf("{{ strftime_now('%Y') }}").render([]), /^\d{4}$/);
});

t.test("loading: tokenizer_config.json, named lists, chat_template.json/.jinja, none", async (t) => {
  t.equal(await loadChatTemplate(STORIES_DIR), null, "stories260k has none");
  let dir = await chatModelDir(CHATML);
  t.equal((await loadChatTemplate(dir))!.render([{ role: "user", content: "x" }]), "<|im_start|>user\nx<|im_end|>\n<|im_start|>assistant\n");
  dir = await chatModelDir(
    [
      { name: "tool_use", template: "TOOLS" },
      { name: "default", template: "{{ bos_token }}{{ eos_token }}" },
    ],
    { bos_token: { content: "<s>", special: true }, eos_token: "</s>" },
  );
  t.equal((await loadChatTemplate(dir))!.render([]), "<s></s>", "the template named default; AddedToken objects");
  await writeFile(join(dir, "chat_template.json"), JSON.stringify({ chat_template: "JSON" }));
  t.equal((await loadChatTemplate(dir))!.render([]), "JSON", "chat_template.json wins over tokenizer_config.json");
  await writeFile(join(dir, "chat_template.jinja"), "JINJA");
  t.equal((await loadChatTemplate(dir))!.render([]), "JINJA", "chat_template.jinja wins over both");
  dir = await chatModelDir(42);
  await t.rejects(loadChatTemplate(dir), /chat_template must be a string or a list/);
});
