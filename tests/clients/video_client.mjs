// Submit, poll and download with Node's built-in fetch (undici), no packages.
// Usage: node video_client.mjs API_BASE KEY BODY_JSON_FILE OUT_MP4
// Prints the last task query body on stdout; exits non-zero on any failure.
import { readFile, writeFile } from "node:fs/promises";

const [api, key, bodyFile, out] = process.argv.slice(2);
const auth = { Authorization: `Bearer ${key}` };
const timeout = () => AbortSignal.timeout(30_000);

async function ok(what, rsp) {
  if (rsp.status !== 200) {
    throw new Error(`${what}: HTTP ${rsp.status} ${await rsp.text()}`);
  }
  return rsp;
}

const submit = await ok(
  "submit",
  await fetch(`${api}/services/aigc/video-generation/video-synthesis`, {
    method: "POST",
    headers: { ...auth, "X-DashScope-Async": "enable", "Content-Type": "application/json" },
    body: await readFile(bodyFile, "utf8"),
    signal: timeout(),
  }),
);
const taskId = (await submit.json()).output.task_id;

const deadline = Date.now() + 120_000;
let result;
for (;;) {
  const rsp = await ok("query", await fetch(`${api}/tasks/${taskId}`, { headers: auth, signal: timeout() }));
  result = await rsp.json();
  const status = result.output.task_status;
  if (status !== "PENDING" && status !== "RUNNING") break;
  if (Date.now() > deadline) throw new Error(`task still ${status}`);
  await new Promise((resolve) => setTimeout(resolve, 200));
}
if (result.output.task_status === "SUCCEEDED") {
  const video = await ok("download", await fetch(result.output.video_url, { signal: timeout() }));
  await writeFile(out, Buffer.from(await video.arrayBuffer()));
}
console.log(JSON.stringify(result));
