// Summarizes a V8 .cpuprofile (node --cpu-prof): self time by function and by
// source file or package, idle excluded, so the top costs of a process can be
// read without DevTools.
//
//   node --import tsx bench/profile-summary.ts FILE.cpuprofile [--top 25]
import { readFileSync } from "node:fs";
import { pathToFileURL } from "node:url";

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}

interface CpuProfile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
}

export interface CostLine {
  name: string;
  ms: number;
  share: number;
}

/** Where a frame's code lives: a package name, a node: module, or a repository path. */
function place(url: string): string {
  if (url === "") return "(native/V8)";
  const nm = url.lastIndexOf("node_modules/");
  if (nm >= 0) {
    const rest = url.slice(nm + "node_modules/".length).split("/");
    return rest[0]!.startsWith("@") ? `${rest[0]}/${rest[1]}` : rest[0]!;
  }
  if (url.startsWith("node:")) return url;
  const repo = url.search(/\/(router|shard|bench|proto|launcher|dist)\//);
  return repo >= 0 ? url.slice(repo + 1) : url;
}

export function summarizeProfile(profile: CpuProfile, top = 25): { busyMs: number; byFunction: CostLine[]; byPlace: CostLine[] } {
  const self = new Map<number, number>();
  profile.samples.forEach((id, i) => self.set(id, (self.get(id) ?? 0) + (profile.timeDeltas[i] ?? 0)));
  const fn = new Map<string, number>();
  const where = new Map<string, number>();
  let busy = 0;
  for (const node of profile.nodes) {
    const us = self.get(node.id) ?? 0;
    const { functionName, url, lineNumber } = node.callFrame;
    if (functionName === "(idle)" || us === 0) continue;
    busy += us;
    const p = place(url);
    const key = `${functionName || "(anonymous)"} ${p}${url ? `:${lineNumber + 1}` : ""}`;
    fn.set(key, (fn.get(key) ?? 0) + us);
    where.set(p, (where.get(p) ?? 0) + us);
  }
  const lines = (m: Map<string, number>) =>
    [...m.entries()]
      .sort((a, b) => b[1] - a[1])
      .slice(0, top)
      .map(([name, us]) => ({ name, ms: us / 1000, share: us / busy }));
  return { busyMs: busy / 1000, byFunction: lines(fn), byPlace: lines(where) };
}

export function profileTable(lines: CostLine[]): string {
  return lines.map((l) => `${(l.share * 100).toFixed(1).padStart(5)}%  ${l.ms.toFixed(0).padStart(7)} ms  ${l.name}`).join("\n");
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const file = process.argv[2];
  if (!file) {
    process.stderr.write("usage: profile-summary FILE.cpuprofile [--top N]\n");
    process.exit(2);
  }
  const topAt = process.argv.indexOf("--top");
  const top = topAt > 0 ? Number(process.argv[topAt + 1]) : 25;
  const s = summarizeProfile(JSON.parse(readFileSync(file, "utf8")) as CpuProfile, top);
  process.stdout.write(`busy ${s.busyMs.toFixed(0)} ms\n\nby file or package (self time):\n${profileTable(s.byPlace)}\n\nby function (self time):\n${profileTable(s.byFunction)}\n`);
}
