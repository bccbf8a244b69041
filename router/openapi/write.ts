// `npm run build:openapi`: writes docs/openapi.json from the server's route
// table and schemas. With --check, exits 1 when the checked-in file differs.
import { readFileSync, writeFileSync } from "node:fs";
import { resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { routeList } from "../http/server.js";
import { openApiJson } from "./document.js";

const root = new URL("../../", import.meta.url);
const target = new URL("docs/openapi.json", root);

/** The document as the server at this version serves it. */
export function generatedOpenApi(): string {
  const { version } = JSON.parse(readFileSync(new URL("package.json", root), "utf8")) as { version: string };
  return openApiJson(routeList(), version);
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) {
  const text = generatedOpenApi();
  if (process.argv.includes("--check")) {
    const current = readFileSync(target, "utf8");
    if (current !== text) {
      console.error("docs/openapi.json is out of date: run `npm run build:openapi`");
      process.exit(1);
    }
  } else {
    writeFileSync(target, text);
    console.error(`wrote ${target.pathname}`);
  }
}
