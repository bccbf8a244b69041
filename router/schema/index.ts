// Request and response schemas: one definition validates a body and documents
// it in docs/openapi.json.
//
// Usage (e.g. router/openai/schemas.ts):
//
//   import { nullable, ref, struct, type SchemaComponents } from "../schema/index.js";
//   export const openaiSchemas: SchemaComponents = {
//     ChatRequest: struct("ChatRequest", { messages: { type: "array", items: ref("Message") }, ... }, ["messages"]),
//     ...
//   };
//   // in a handler: throws a 422 InferError with serde's message ("messages[0].role: missing field ...")
//   import { checkBody } from "../validation/request.js";
//   checkBody(ref("ChatRequest"), body, openaiSchemas);
//
// `check` throws SchemaError (path + detail) when the HTTP layer is not involved.
// Keywords check() enforces are listed in check.ts; value rules with TGI's
// messages (temperature > 0 …) stay in router/validation/.
export { check, describeValue, SchemaError } from "./check.js";
export { nullable, ref, struct, type JsonSchema, type JsonType, type SchemaComponents } from "./types.js";
export { tgiSchemas } from "./tgi.js";
