// Generates proto/gen/generate.ts from proto/generate.proto with the npm-packaged protoc
// and ts-proto (no download). With --check, fails if the committed file is stale.
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, existsSync, mkdirSync, copyFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { createRequire } from "node:module";

const root = resolve(import.meta.dirname, "..");
const require = createRequire(join(root, "package.json"));
const check = process.argv.includes("--check");
const outDir = mkdtempSync(join(tmpdir(), "proto-gen-"));
const plugin = join(root, "node_modules", ".bin", "protoc-gen-ts_proto");
const protocJs = require.resolve("protoc/protoc.cjs");

execFileSync(process.execPath, [protocJs,
  `--plugin=protoc-gen-ts_proto=${plugin}`,
  `--ts_proto_out=${outDir}`,
  "--ts_proto_opt=outputServices=grpc-js,esModuleInterop=true,env=node,forceLong=number,importSuffix=.js,outputJsonMethods=false,outputPartialMethods=false,useOptionals=messages",
  "-I", join(root, "proto"), join(root, "proto", "generate.proto")], { stdio: "inherit" });

const fresh = join(outDir, "generate.ts");
const committed = join(root, "proto", "gen", "generate.ts");
if (check) {
  const same = existsSync(committed) && readFileSync(committed, "utf8") === readFileSync(fresh, "utf8");
  rmSync(outDir, { recursive: true, force: true });
  if (!same) {
    console.error("proto/gen/generate.ts is stale: run `npm run build:proto` and commit the result");
    process.exit(1);
  }
  console.log("proto/gen/generate.ts is current");
} else {
  mkdirSync(join(root, "proto", "gen"), { recursive: true });
  copyFileSync(fresh, committed);
  rmSync(outDir, { recursive: true, force: true });
}
