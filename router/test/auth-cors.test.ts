// --api-key and --cors-allow-origin: which routes need the key, the 401 bytes,
// CORS headers and preflights that allow `authorization`.
import t from "tap";
import { parseRouterConfig } from "../config.js";
import { startFakeServer } from "./fake-backend.js";

const json = { "content-type": "application/json" };
const body = JSON.stringify({ inputs: "Once upon a time", parameters: { max_new_tokens: 1 } });
const UNAUTHORIZED = '{"error":"Unauthorized: send the API key as `Authorization: Bearer <key>`","error_type":"unauthorized"}';

t.test("the API key guards every route but the health checks and /metrics", async (t) => {
  const s = await startFakeServer({}, { apiKey: "s3cret" });
  t.teardown(() => s.close());
  const guarded: [string, string][] = [
    ["POST", "/generate"],
    ["POST", "/generate_stream"],
    ["POST", "/"],
    ["POST", "/invocations"],
    ["POST", "/tokenize"],
    ["GET", "/info"],
    ["GET", "/api-doc/openapi.json"],
    ["GET", "/docs"],
  ];
  for (const [method, path] of guarded) {
    const res = await fetch(s.url + path, { method, headers: json, body: method === "POST" ? body : undefined });
    t.equal(res.status, 401, `${method} ${path} without a key`);
    t.equal(await res.text(), UNAUTHORIZED);
    for (const wrong of ["Bearer S3CRET", "Bearer s3cretX", "bearer s3cret", "s3cret", "Basic s3cret"]) {
      const r = await fetch(s.url + path, { method, headers: { ...json, authorization: wrong }, body: method === "POST" ? body : undefined });
      t.equal(r.status, 401, `${method} ${path} with "${wrong}"`);
      await r.arrayBuffer();
    }
    const ok = await fetch(s.url + path, { method, headers: { ...json, authorization: "Bearer s3cret" }, body: method === "POST" ? body : undefined });
    t.equal(ok.status, 200, `${method} ${path} with the key`);
    await ok.arrayBuffer();
  }
  for (const path of ["/health", "/ping", "/", "/metrics"]) {
    const res = await fetch(s.url + path);
    t.equal(res.status, 200, `GET ${path} is public`);
    await res.arrayBuffer();
  }
  t.equal(s.backend.requests.length, 4, "only the four authorized generations ran");
});

t.test("CORS: any origin by default, preflight allows content-type and authorization", async (t) => {
  const s = await startFakeServer();
  t.teardown(() => s.close());
  const res = await fetch(`${s.url}/generate`, { method: "POST", headers: { ...json, origin: "http://chat.example" }, body });
  t.equal(res.headers.get("access-control-allow-origin"), "*");
  t.match(res.headers.get("access-control-expose-headers"), /x-compute-time.*x-generated-tokens/);
  await res.arrayBuffer();

  const pre = await fetch(`${s.url}/generate`, {
    method: "OPTIONS",
    headers: { origin: "http://chat.example", "access-control-request-method": "POST", "access-control-request-headers": "content-type, authorization" },
  });
  t.equal(pre.status, 204);
  t.equal(pre.headers.get("access-control-allow-origin"), "*");
  t.equal(pre.headers.get("access-control-allow-methods"), "POST");
  t.equal(pre.headers.get("access-control-allow-headers"), "content-type, authorization");
  t.equal((await fetch(`${s.url}/nowhere`, { method: "OPTIONS" })).status, 404);
});

t.test("CORS with --cors-allow-origin: listed origins only; preflight needs no key", async (t) => {
  const s = await startFakeServer({}, { corsAllowOrigin: ["http://a.example", "http://b.example"], apiKey: "k" });
  t.teardown(() => s.close());
  const pre = await fetch(`${s.url}/v1/chat/completions`, { method: "OPTIONS", headers: { origin: "http://b.example", "access-control-request-method": "POST" } });
  t.equal(pre.status, 204, "no key on a preflight");
  t.equal(pre.headers.get("access-control-allow-origin"), "http://b.example");
  t.equal(pre.headers.get("vary"), "origin");
  t.equal(pre.headers.get("access-control-allow-headers"), "content-type, authorization");

  const other = await fetch(`${s.url}/generate`, { method: "OPTIONS", headers: { origin: "http://evil.example", "access-control-request-method": "POST" } });
  t.equal(other.headers.get("access-control-allow-origin"), null, "an unlisted origin gets no CORS headers");

  const res = await fetch(`${s.url}/generate`, { method: "POST", headers: { ...json, origin: "http://a.example", authorization: "Bearer k" }, body });
  t.equal(res.status, 200);
  t.equal(res.headers.get("access-control-allow-origin"), "http://a.example");
  await res.arrayBuffer();
  const denied = await fetch(`${s.url}/generate`, { method: "POST", headers: { ...json, origin: "http://a.example" }, body });
  t.equal(denied.status, 401);
  t.equal(denied.headers.get("access-control-allow-origin"), "http://a.example", "a browser can read the 401");
  await denied.arrayBuffer();
});

t.test("config: --api-key, --cors-allow-origin (repeatable, env comma list), --tokenizer-config-path", async (t) => {
  const base = ["--tokenizer-name", "/m"];
  let c = parseRouterConfig([...base, "--api-key", "k", "--cors-allow-origin", "http://a", "--cors-allow-origin", "http://b", "--tokenizer-config-path", "/t.json"], {});
  t.equal(c.apiKey, "k");
  t.same(c.corsAllowOrigin, ["http://a", "http://b"]);
  t.equal(c.tokenizerConfigPath, "/t.json");
  c = parseRouterConfig(base, { API_KEY: "e", CORS_ALLOW_ORIGIN: "http://a, http://b", TOKENIZER_CONFIG_PATH: "/x" });
  t.equal(c.apiKey, "e");
  t.same(c.corsAllowOrigin, ["http://a", "http://b"]);
  t.equal(c.tokenizerConfigPath, "/x");
  c = parseRouterConfig(base, {});
  t.equal(c.apiKey, undefined);
  t.same(c.corsAllowOrigin, []);
  t.throws(() => parseRouterConfig([...base, "--api-key", ""], {}), { message: "--api-key must not be empty" });
});

t.test("--tokenizer-config-path: its chat template replaces the model dir's", async (t) => {
  const { mkdtempSync, writeFileSync } = await import("node:fs");
  const { tmpdir } = await import("node:os");
  const { join } = await import("node:path");
  const { loadChatTemplate } = await import("../tokenizer/chat-template.js");
  const { STORIES_DIR } = await import("./fake-backend.js");
  const dir = mkdtempSync(join(tmpdir(), "tok-config-"));
  const path = join(dir, "alt_tokenizer_config.json");
  writeFileSync(path, JSON.stringify({ bos_token: "<s>", chat_template: "{% for m in messages %}[{{ m.content }}]{% endfor %}" }));
  const template = await loadChatTemplate(STORIES_DIR, path);
  t.equal(template?.render([{ role: "user", content: "hi" }]), "[hi]", "the template of the given file");
  await t.rejects(loadChatTemplate(STORIES_DIR, join(dir, "missing.json")), { message: /has no missing\.json/ });
});
