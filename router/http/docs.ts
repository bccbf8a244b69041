// GET /docs: Swagger UI from the swagger-ui-dist package's own files (no CDN),
// pointed at GET /api-doc/openapi.json. Only the four files the page loads are
// served, by exact name.
import { readFile } from "node:fs/promises";
import type { ServerResponse } from "node:http";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";

const ASSETS: Record<string, string> = {
  "swagger-ui.css": "text/css; charset=utf-8",
  "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
  "swagger-ui-standalone-preset.js": "text/javascript; charset=utf-8",
  "favicon-32x32.png": "image/png",
};

const PAGE = `<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>text-gen API</title>
  <link rel="stylesheet" href="/docs/swagger-ui.css">
  <link rel="icon" type="image/png" href="/docs/favicon-32x32.png">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="/docs/swagger-ui-bundle.js"></script>
  <script src="/docs/swagger-ui-standalone-preset.js"></script>
  <script>
    window.onload = () => {
      window.ui = SwaggerUIBundle({
        url: "/api-doc/openapi.json",
        dom_id: "#swagger-ui",
        presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset],
        layout: "StandaloneLayout",
      });
    };
  </script>
</body>
</html>
`;

let assetDir: string | undefined;
const cache = new Map<string, Buffer>();

export function sendDocsPage(res: ServerResponse): void {
  res.writeHead(200, { "content-type": "text/html; charset=utf-8", "content-length": Buffer.byteLength(PAGE) });
  res.end(PAGE);
}

/** The asset routes, "/docs/<file>", each serving one swagger-ui-dist file. */
export const docsAssetPaths = Object.keys(ASSETS).map((name) => `/docs/${name}`);

export async function sendDocsAsset(res: ServerResponse, path: string): Promise<void> {
  const name = path.slice("/docs/".length);
  const contentType = ASSETS[name];
  if (contentType === undefined) throw new Error(`not a docs asset: ${path}`);
  let body = cache.get(name);
  if (body === undefined) {
    assetDir ??= dirname(createRequire(import.meta.url).resolve("swagger-ui-dist/package.json"));
    body = await readFile(join(assetDir, name));
    cache.set(name, body);
  }
  res.writeHead(200, { "content-type": contentType, "content-length": body.length, "cache-control": "public, max-age=3600" });
  res.end(body);
}
