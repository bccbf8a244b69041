// docs/openapi.json: current with the code, structurally valid OpenAPI 3.1,
// every route described, every $ref resolving; served at /api-doc/openapi.json.
import { readFileSync } from "node:fs";
import t from "tap";
import { routeList } from "../http/server.js";
import { generatedOpenApi } from "../openapi/write.js";
import { check, ref, SchemaError } from "../schema/index.js";
import { startFakeServer } from "./fake-backend.js";

const checkedIn = readFileSync(new URL("../../docs/openapi.json", import.meta.url), "utf8");
const doc = JSON.parse(checkedIn) as {
  openapi: string;
  info: { title: string; version: string };
  paths: Record<string, Record<string, { operationId: string; responses: Record<string, unknown>; requestBody?: unknown }>>;
  components: { schemas: Record<string, object> };
};

t.test("docs/openapi.json is what the code generates", async (t) => {
  t.ok(checkedIn === generatedOpenApi(), "docs/openapi.json is out of date: regenerate it with `npm run build:openapi`");
});

t.test("structure: OpenAPI 3.1, every route, unique operation ids, responses", async (t) => {
  t.equal(doc.openapi, "3.1.0");
  t.ok(doc.info.title && doc.info.version);
  const ids = new Set<string>();
  for (const { method, path } of routeList()) {
    const op = doc.paths[path]?.[method.toLowerCase()];
    t.ok(op, `${method} ${path} is documented`);
    if (!op) continue;
    t.notOk(ids.has(op.operationId), `operationId ${op.operationId} unique`);
    ids.add(op.operationId);
    t.ok(Object.keys(op.responses).length > 0, `${method} ${path} has responses`);
    for (const status of Object.keys(op.responses)) t.match(status, /^[1-5]\d\d$/);
  }
  const documented = Object.entries(doc.paths).flatMap(([path, ops]) => Object.keys(ops).map((m) => `${m.toUpperCase()} ${path}`));
  t.same(documented.sort(), routeList().map((r) => `${r.method} ${r.path}`).sort(), "nothing documented that is not served");
  for (const path of ["/generate", "/generate_stream", "/", "/invocations", "/tokenize", "/info", "/health", "/metrics", "/api-doc/openapi.json", "/docs", "/v1/ws"]) {
    t.ok(doc.paths[path], path);
  }
  t.match(doc.paths["/generate"]!.post!.responses, { "422": { content: { "application/json": { example: { error_type: "validation" } } } } }, "errors with examples");
});

t.test("every $ref resolves", async (t) => {
  const refs: string[] = [];
  const walk = (v: unknown): void => {
    if (Array.isArray(v)) return v.forEach(walk);
    if (v === null || typeof v !== "object") return;
    for (const [k, x] of Object.entries(v)) {
      if (k === "$ref" && typeof x === "string") refs.push(x);
      else walk(x);
    }
  };
  walk(doc);
  t.ok(refs.length > 20);
  for (const r of new Set(refs)) {
    t.match(r, /^#\/components\/schemas\/[A-Za-z0-9_]+$/, r);
    t.ok(doc.components.schemas[r.split("/").pop()!], `${r} resolves`);
  }
});

t.test("the documented examples pass the schemas the router checks with", async (t) => {
  const schemas = doc.components.schemas as Parameters<typeof check>[2];
  check(ref("GenerateRequest"), { inputs: "My name is Olivier and I", parameters: { max_new_tokens: 20, stop: ["photographer"] } }, schemas);
  check(ref("CompatGenerateRequest"), { inputs: "x", stream: true }, schemas);
  t.throws(() => check(ref("GenerateRequest"), { inputs: "x", parameters: { top_k: "x" } }, schemas), SchemaError);
  t.throws(() => check(ref("GenerateRequest"), { inputs: "x", parameters: { top_k: "x" } }, schemas), {
    message: 'parameters.top_k: invalid type: string "x", expected i32',
  });
});

t.test("GET /api-doc/openapi.json serves the same document", async (t) => {
  const s = await startFakeServer();
  t.teardown(() => s.close());
  const res = await fetch(`${s.url}/api-doc/openapi.json`);
  t.equal(res.status, 200);
  t.equal(res.headers.get("content-type"), "application/json");
  t.equal(await res.text(), checkedIn);
});

t.test("responses fit their documented schemas", async (t) => {
  const s = await startFakeServer();
  t.teardown(() => s.close());
  const schemas = doc.components.schemas as Parameters<typeof check>[2];
  const post = async (path: string, body: unknown) =>
    (await fetch(`${s.url}${path}`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) })).text();
  check(ref("Info"), await (await fetch(`${s.url}/info`)).json(), schemas);
  const details = { max_new_tokens: 2, details: true, decoder_input_details: true, top_n_tokens: 2 };
  check(ref("GenerateResponse"), JSON.parse(await post("/generate", { inputs: "Once", parameters: details })), schemas);
  check(ref("GenerateResponse"), JSON.parse(await post("/generate", { inputs: "Once", parameters: { ...details, best_of: 2, do_sample: true } })), schemas);
  check(ref("TokenizeResponse"), JSON.parse(await post("/tokenize", { inputs: "Once upon" })), schemas);
  check(ref("ErrorResponse"), JSON.parse(await post("/generate", { inputs: "" })), schemas);
  const events = (await post("/generate_stream", { inputs: "Once", parameters: { max_new_tokens: 3, details: true, top_n_tokens: 1 } }))
    .split("\n\n")
    .filter((e) => e !== "");
  t.equal(events.length, 3);
  for (const e of events) check(ref("StreamResponse"), JSON.parse(e.slice("data:".length)), schemas);
  t.pass("every response fits");
});
