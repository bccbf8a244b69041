// Builds the OpenAPI 3.1 document from the server's route table, the per-route
// docs (operations.ts) and the request/response schemas the routes validate
// with. Deterministic (tables in source order): the same inputs give the same bytes (docs/openapi.json
// is checked in and compared by router/test/openapi-document.test.ts).
import { openaiSchemas } from "../openai/schemas.js";
import type { SchemaComponents } from "../schema/index.js";
import { tgiSchemas } from "../schema/tgi.js";
import { OPERATIONS, type ResponseDoc } from "./operations.js";

export interface RouteKey {
  method: string;
  path: string;
}

const schemaRef = (name: string) => ({ $ref: `#/components/schemas/${name}` });

/** Document-only unions: /invocations dispatches on the keys, then the target route checks its own schema. */
const extraSchemas: SchemaComponents = {
  SagemakerRequest: {
    title: "SagemakerRequest",
    description: "`inputs`: CompatGenerateRequest; `messages`: ChatRequest; `prompt`: CompletionRequest.",
    oneOf: [schemaRef("CompatGenerateRequest"), schemaRef("ChatRequest"), schemaRef("CompletionRequest")],
  },
  SagemakerResponse: {
    title: "SagemakerResponse",
    oneOf: [{ type: "array", items: schemaRef("GenerateResponse") }, { type: "object", description: "chat.completion or text_completion" }],
  },
};

function response(doc: ResponseDoc): object {
  const out: Record<string, unknown> = { description: doc.description };
  if (doc.headers !== undefined) {
    out.headers = Object.fromEntries(Object.entries(doc.headers).map(([name, description]) => [name, { description, schema: { type: "string" } }]));
  }
  if (doc.schema !== undefined || doc.example !== undefined) {
    const media: Record<string, unknown> = {};
    if (doc.schema !== undefined) media.schema = typeof doc.schema === "string" ? schemaRef(doc.schema) : doc.schema;
    if (doc.example !== undefined) media.example = doc.example;
    out.content = { [doc.contentType ?? "application/json"]: media };
  }
  return out;
}

/** The document for `routes`; throws when a route has no doc in operations.ts. */
export function buildOpenApiDocument(routes: RouteKey[], version: string): object {
  const paths: Record<string, Record<string, object>> = {};
  for (const { method, path } of routes) {
    const key = `${method} ${path}`;
    const op = OPERATIONS[key];
    if (op === undefined) throw new Error(`route ${key} has no OpenAPI description in router/openapi/operations.ts`);
    const operation: Record<string, unknown> = {
      tags: [op.tag],
      operationId: op.operationId,
      summary: op.summary,
      ...(op.description !== undefined ? { description: op.description } : {}),
      ...(op.requestBody !== undefined
        ? { requestBody: { required: true, content: { "application/json": { schema: schemaRef(op.requestBody) } } } }
        : {}),
      responses: Object.fromEntries(Object.entries(op.responses).map(([status, doc]) => [status, response(doc)])),
      ...(op.public ? { security: [] } : {}),
    };
    (paths[path] ??= {})[method.toLowerCase()] = operation;
  }
  return {
    openapi: "3.1.0",
    info: {
      title: "text-gen",
      description: "A TGI-compatible text generation server: TGI's routes, OpenAI's routes and a WebSocket stream.",
      license: { name: "Apache 2.0", identifier: "Apache-2.0" },
      version,
    },
    paths,
    components: {
      schemas: { ...tgiSchemas, ...openaiSchemas, ...extraSchemas },
      securitySchemes: { bearer: { type: "http", scheme: "bearer", description: "Required with --api-key on every route but the health checks and /metrics." } },
    },
    // Only enforced when the server runs with --api-key.
    security: [{ bearer: [] }],
    tags: [
      { name: "Text Generation Inference", description: "TGI's routes" },
      { name: "OpenAI", description: "OpenAI-compatible routes" },
      { name: "WebSocket", description: "Streaming over one socket" },
    ],
  };
}

/** The document as served and checked in: 2-space JSON with a final newline. */
export function openApiJson(routes: RouteKey[], version: string): string {
  return `${JSON.stringify(buildOpenApiDocument(routes, version), null, 2)}\n`;
}
