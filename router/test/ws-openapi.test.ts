// What router/ws/openapi.ts gives the OpenAPI generator: every schema it refers
// to exists, and its message schemas accept the messages the server sends.
import t from "tap";
import { openaiSchemas } from "../openai/schemas.js";
import { check, tgiSchemas } from "../schema/index.js";
import { wsOperation, wsSchemas } from "../ws/openapi.js";
import { cancelledMessage, endMessage, errorMessage, eventMessage } from "../ws/protocol.js";

const components = { ...tgiSchemas, ...openaiSchemas, ...wsSchemas };

function refs(value: unknown, out: string[] = []): string[] {
  if (Array.isArray(value)) value.forEach((v) => refs(v, out));
  else if (typeof value === "object" && value !== null) {
    for (const [k, v] of Object.entries(value)) {
      if (k === "$ref" && typeof v === "string") out.push(v);
      else refs(v, out);
    }
  }
  return out;
}

t.test("every reference resolves", async (t) => {
  const names = [...refs(wsSchemas), ...refs(wsOperation)].map((r) => r.replace("#/components/schemas/", ""));
  t.ok(names.length > 0);
  for (const name of names) t.ok(Object.hasOwn(components, name), `${name} exists`);
  for (const doc of Object.values(wsOperation.responses)) t.ok(Object.hasOwn(components, doc.schema), `${doc.schema} exists`);
});

t.test("the schemas describe what the server sends and takes", async (t) => {
  const event = { index: 1, token: { id: 5, text: " a", logprob: -0.5, special: false }, generated_text: null, details: null };
  const sent = [
    eventMessage("a", event),
    endMessage("a"),
    cancelledMessage("a"),
    errorMessage(null, 400, { error: "bad", error_type: "invalid_json" }),
  ];
  for (const json of sent) t.doesNotThrow(() => check({ $ref: "#/components/schemas/WsServerMessage" }, JSON.parse(json), components), json);
  const taken = [
    { type: "generate", id: "a", request: { inputs: "x", parameters: { max_new_tokens: 2 } } },
    { type: "chat", id: "b", request: { messages: [{ role: "user", content: "hi" }] } },
    { type: "completion", id: "c", request: { prompt: "x" } },
    { type: "cancel", id: "a" },
  ];
  for (const m of taken) t.doesNotThrow(() => check({ $ref: "#/components/schemas/WsClientMessage" }, m, components), m.type);
});
