// Runs the C++ unit-test executables that the native build produces
// (native/tests/*_test.cc → native/build/tests/*_test) and fails on any failure.
import t from "tap";
import { execFileSync } from "node:child_process";
import { existsSync, readdirSync } from "node:fs";
import { join, resolve } from "node:path";

const testsDir = resolve(import.meta.dirname, "../build/tests");
const sources = readdirSync(resolve(import.meta.dirname, "../tests")).filter((f) => f.endsWith("_test.cc"));

t.ok(sources.length > 0, "there are C++ unit tests");
for (const source of sources) {
  const name = source.replace(/\.cc$/, "");
  t.test(name, async (t) => {
    const exe = join(testsDir, name);
    t.ok(existsSync(exe), `${exe} was built by npm run build:native`);
    if (!existsSync(exe)) return;
    let output = "";
    let failed = false;
    try {
      output = execFileSync(exe, { encoding: "utf8", timeout: 240_000 });
    } catch (err) {
      const e = err as { stdout?: string; stderr?: string };
      output = `${e.stdout ?? ""}${e.stderr ?? ""}`;
      failed = true;
    }
    const summary = /(\d+) passed, (\d+) failed/.exec(output);
    t.ok(summary, "printed its summary line");
    t.equal(summary?.[2], "0", `no failures:\n${output.split("\n").filter((l) => !l.startsWith("ok ")).join("\n")}`);
    t.notOk(failed, "exited 0");
  });
}
