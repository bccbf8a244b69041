// Stand-in router for the launcher's tests: listens on --port (0 = any) and prints the ready line.
import { createServer } from "node:http";
import { writeFileSync } from "node:fs";
import { join } from "node:path";

const argv = process.argv.slice(2);
const arg = (name) => argv[argv.indexOf(name) + 1];
if (process.env.STUB_RECORD_DIR) {
  writeFileSync(join(process.env.STUB_RECORD_DIR, "router.json"), JSON.stringify({ argv, pid: process.pid }));
}
const server = createServer((_req, res) => res.end("ok"));
server.listen(Number(arg("--port")), arg("--hostname"), () => {
  const { port } = server.address();
  process.stdout.write(JSON.stringify({ ready: true, hostname: arg("--hostname"), port }) + "\n");
});
process.on("SIGTERM", () => server.close(() => process.exit(0)));
