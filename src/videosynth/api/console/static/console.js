// The videosynth web console: a client of this origin's public DashScope wire (/api/v1/...), nothing else.
// The API key lives in sessionStorage and is sent only as the Authorization header of those calls.

import { STRINGS } from "./i18n.js";

const KEY_STORE = "videosynth.apiKey";
const LANG_STORE = "videosynth.lang";
const SUBMIT_PATH = "/api/v1/services/aigc/video-generation/video-synthesis";
const ACTIVE = new Set(["PENDING", "RUNNING"]);
const IMAGE_TYPES = new Set(["image/png", "image/jpeg", "image/webp"]);
const POLL_ACTIVE_MS = 2000;
const POLL_IDLE_MS = 5000;
const PAGE_SIZE = 20;
// As the server reads a prompt (src/videosynth/engines/markers.py): [Image 1], 【图片1】, character1, ...
const MARKER = /[[【［]\s*(?:image|img|ｉｍａｇｅ|图片|图像|图)\s*(\d{1,3})\s*[\]】］]|\bcharacter(\d{1,3})\b/giu;

const $ = (id) => document.getElementById(id);

const state = {
  lang: "en",
  models: [],
  images: [], // {file, url}: url is the thumbnail's blob: URL
  tasks: new Map(), // task_id -> {id, model, status, created, detail, error, canceling}
  rows: new Map(), // task_id -> the <li> and its parts
  lastRequest: null, // {url, headers, body}
  snippetKind: "curl",
  pollTimer: 0,
  polling: false,
  pollAgain: false,
  playing: null,
};

// --- words -----------------------------------------------------------------------------------------------

function t(key, vars = {}) {
  const text = STRINGS[state.lang]?.[key] ?? STRINGS.en[key] ?? key;
  return text.replace(/\{(\w+)\}/g, (whole, name) => (name in vars ? String(vars[name]) : whole));
}

const said = new Map(); // element -> [key, vars]: status lines said again when the language changes

function say(el, key, vars = {}) {
  if (key === null) {
    said.delete(el);
    el.textContent = "";
    return;
  }
  said.set(el, [key, vars]);
  el.textContent = t(key, vars);
}

function statusWord(status) {
  return STRINGS.en[`status_${status}`] ? t(`status_${status}`) : status;
}

function stageWord(stage) {
  const key = `stage_${stage}`;
  return STRINGS.en[key] ? t(key) : stage;
}

function applyLanguage() {
  document.documentElement.lang = state.lang === "zh" ? "zh-CN" : "en";
  document.title = t("title");
  for (const el of document.querySelectorAll("[data-i18n]")) el.textContent = t(el.dataset.i18n);
  for (const el of document.querySelectorAll("[data-i18n-placeholder]")) {
    el.placeholder = t(el.dataset.i18nPlaceholder);
  }
  for (const el of document.querySelectorAll("[data-i18n-aria-label]")) {
    el.setAttribute("aria-label", t(el.dataset.i18nAriaLabel));
  }
  $("lang-toggle").lang = state.lang === "zh" ? "en" : "zh-CN";
  for (const [el, [key, vars]] of said) el.textContent = t(key, vars);
  renderThumbs();
  updateWarning();
  for (const record of state.tasks.values()) updateRow(record);
  if (state.lastRequest) showSnippet(state.snippetKind);
}

function initialLanguage() {
  const chosen = localStorage.getItem(LANG_STORE);
  if (chosen === "en" || chosen === "zh") return chosen;
  return (navigator.language || "en").toLowerCase().startsWith("zh") ? "zh" : "en";
}

// --- the wire ---------------------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(message, code, status) {
    super(message);
    this.code = code;
    this.status = status;
  }

  words() {
    return this.code ? t("error", { message: this.message, code: this.code }) : this.message;
  }
}

function apiKey() {
  return sessionStorage.getItem(KEY_STORE) || "";
}

async function call(method, url, { body, headers = {}, auth = true } = {}) {
  const sent = { ...headers };
  if (auth) sent.Authorization = `Bearer ${apiKey()}`;
  let response;
  try {
    response = await fetch(url, { method, headers: sent, body, credentials: "omit", cache: "no-store" });
  } catch (err) {
    throw new ApiError(t("networkError", { message: err.message }), "", 0);
  }
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!response.ok) {
    const message = (data && (data.message || data.msg)) || text.slice(0, 300) || response.statusText;
    throw new ApiError(message, (data && data.code) || `HTTP ${response.status}`, response.status);
  }
  return data ?? {};
}

// --- models and parameters --------------------------------------------------------------------------------

function fillSelect(select, values, wanted, label = (v) => String(v)) {
  const previous = select.value;
  select.replaceChildren(
    ...values.map((v) => {
      const option = document.createElement("option");
      option.value = String(v);
      option.textContent = label(v);
      return option;
    }),
  );
  const keep = [previous, wanted].map(String).find((v) => values.map(String).includes(v));
  if (keep !== undefined) select.value = keep;
}

function currentModel() {
  return state.models.find((m) => m.model === $("model").value);
}

function onModelChange(useDefaults) {
  const model = currentModel();
  if (!model) return;
  const unique = (xs) => [...new Set(xs)];
  const d = model.defaults || {};
  const keepOr = (select, fallback) => (useDefaults ? fallback : select.value || fallback);
  fillSelect($("resolution"), unique(model.sizes.map((s) => s.resolution)), keepOr($("resolution"), d.resolution));
  fillSelect($("ratio"), unique(model.sizes.map((s) => s.ratio)), keepOr($("ratio"), d.ratio));
  fillSelect($("duration"), model.durations, keepOr($("duration"), d.duration));
  if (useDefaults) $("watermark").checked = Boolean(d.watermark);
  renderThumbs();
  updateWarning();
}

async function loadModels() {
  try {
    const data = await call("GET", "/api/v1/models", { auth: false });
    state.models = data.data || [];
    fillSelect(
      $("model"),
      state.models.map((m) => m.model),
      state.models[0]?.model,
    );
    onModelChange(true);
  } catch (err) {
    say($("submit-status"), "modelsError", { message: err.words ? err.words() : err.message });
  }
}

function maxImages() {
  return currentModel()?.references?.max ?? 9;
}

// --- images -----------------------------------------------------------------------------------------------

function isImage(file) {
  if (IMAGE_TYPES.has(file.type)) return true;
  return !file.type && /\.(png|jpe?g|webp)$/i.test(file.name);
}

function addFiles(files) {
  const room = maxImages() - state.images.length;
  const wanted = [...files];
  const bad = wanted.filter((f) => !isImage(f));
  const good = wanted.filter(isImage);
  for (const file of good.slice(0, Math.max(room, 0))) {
    state.images.push({ file, url: URL.createObjectURL(file) });
  }
  if (bad.length) say($("submit-status"), "notAnImage", { name: bad.map((f) => f.name).join(", ") });
  else if (good.length > room) {
    say($("submit-status"), "tooManyImages", { max: maxImages(), extra: good.length - Math.max(room, 0) });
  }
  $("file-input").value = "";
  renderThumbs();
  updateWarning();
}

function removeImage(index) {
  const [gone] = state.images.splice(index, 1);
  if (gone) URL.revokeObjectURL(gone.url);
  renderThumbs();
  updateWarning();
  const buttons = $("thumbs").querySelectorAll(".insert");
  (buttons[Math.min(index, buttons.length - 1)] || $("file-input")).focus();
}

function moveImageUp(index) {
  if (index < 1) return;
  const [image] = state.images.splice(index, 1);
  state.images.splice(index - 1, 0, image);
  renderThumbs();
  $("thumbs").querySelectorAll(".insert")[index - 1]?.focus();
}

function button(text, className, onClick, ariaLabel) {
  const b = document.createElement("button");
  b.type = "button";
  b.className = className;
  b.textContent = text;
  if (ariaLabel) b.setAttribute("aria-label", ariaLabel);
  b.addEventListener("click", onClick);
  return b;
}

function renderThumbs() {
  const list = $("thumbs");
  list.replaceChildren(
    ...state.images.map((image, i) => {
      const n = i + 1;
      const li = document.createElement("li");
      li.className = "thumb";
      const img = document.createElement("img");
      img.src = image.url;
      img.alt = `${t("imageLabel", { n })} ${image.file.name}`;
      const caption = document.createElement("span");
      caption.className = "thumb-label";
      caption.textContent = t("imageLabel", { n });
      const actions = document.createElement("div");
      actions.className = "thumb-actions";
      actions.append(
        button(t("insertImage", { n }), "insert small", () => insertMarker(n), t("insertImageLabel", { n })),
        button(
          t("removeImage"),
          "remove small ghost",
          () => removeImage(i),
          t("removeImageLabel", { n, name: image.file.name }),
        ),
      );
      if (i > 0) actions.append(button("↑", "up small ghost", () => moveImageUp(i), t("moveImageUp", { n })));
      li.append(img, caption, actions);
      return li;
    }),
  );
}

function insertMarker(n) {
  const box = $("prompt");
  const marker = t("imageLabel", { n });
  const start = box.selectionStart ?? box.value.length;
  const end = box.selectionEnd ?? start;
  box.focus();
  box.setRangeText(marker, start, end, "end");
  updateWarning();
}

function referencedNumbers(prompt) {
  const numbers = new Set();
  for (const match of prompt.matchAll(MARKER)) numbers.add(Number(match[1] ?? match[2]));
  return [...numbers].sort((a, b) => a - b);
}

function updateWarning() {
  const warning = $("prompt-warning");
  const count = state.images.length;
  const missing = referencedNumbers($("prompt").value).filter((n) => n < 1 || n > count);
  if (missing.length) {
    const refs = missing.map((n) => t("imageLabel", { n })).join(state.lang === "zh" ? "、" : ", ");
    say(warning, "missingRefs", { refs, count });
    warning.hidden = false;
    $("prompt").setAttribute("aria-invalid", "true");
  } else {
    say(warning, null);
    warning.hidden = true;
    $("prompt").removeAttribute("aria-invalid");
  }
}

function readAsDataURL(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(String(reader.result));
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

function plainName(name, n) {
  // One plain file name inside the policy's upload_dir: no slashes, no control characters, at most 255
  // UTF-8 bytes (60 characters are at most 240).
  const cleaned = [...name.replace(/[/\\\p{Cc}]/gu, "_")].slice(-60).join("") || "image";
  return `${n}-${cleaned}`;
}

async function uploadAll(model, status) {
  const policy = (await call("GET", `/api/v1/uploads?action=getPolicy&model=${encodeURIComponent(model)}`)).data;
  const host = new URL(policy.upload_host, location.href);
  if (host.origin !== location.origin) {
    // The page may reach its own origin only (connect-src 'self').
    say(status, "uploadFallback", { host: host.origin });
    return null;
  }
  const urls = [];
  for (const [i, image] of state.images.entries()) {
    say(status, "uploading", { n: i + 1, count: state.images.length });
    const key = `${policy.upload_dir}/${plainName(image.file.name, i + 1)}`;
    const form = new FormData();
    form.append("OSSAccessKeyId", policy.oss_access_key_id);
    form.append("Signature", policy.signature);
    form.append("policy", policy.policy);
    form.append("key", key);
    form.append("x-oss-object-acl", policy.x_oss_object_acl);
    form.append("x-oss-forbid-overwrite", policy.x_oss_forbid_overwrite);
    form.append("success_action_status", "200");
    form.append("x-oss-content-type", image.file.type || "application/octet-stream");
    form.append("file", image.file, image.file.name);
    // No Authorization here: the signed policy is the upload's credential.
    await call("POST", host.href, { body: form, auth: false });
    urls.push(`oss://${key}`);
  }
  return urls;
}

// --- submit -----------------------------------------------------------------------------------------------

async function submit(event) {
  event.preventDefault();
  const status = $("submit-status");
  const prompt = $("prompt").value.trim();
  const seedText = $("seed").value.trim();
  if (!apiKey()) return fail(status, "needKey", $("api-key"));
  if (!state.images.length) return fail(status, "needImages", $("file-input"));
  if (!prompt) return fail(status, "needPrompt", $("prompt"));
  if (seedText && !(/^\d+$/.test(seedText) && Number(seedText) <= 2147483647)) {
    return fail(status, "badSeed", $("seed"));
  }
  const submitButton = $("submit");
  submitButton.disabled = true;
  submitButton.setAttribute("aria-busy", "true");
  say(status, "submitting");
  try {
    const model = $("model").value;
    let urls = $("send-as").value === "upload" ? await uploadAll(model, status) : null;
    const uploaded = urls !== null;
    if (!uploaded) urls = await Promise.all(state.images.map((image) => readAsDataURL(image.file)));
    const parameters = {
      resolution: $("resolution").value,
      ratio: $("ratio").value,
      duration: Number($("duration").value),
      watermark: $("watermark").checked,
    };
    if (seedText) parameters.seed = Number(seedText);
    const body = {
      model,
      input: { prompt, media: urls.map((url) => ({ type: "reference_image", url })) },
      parameters,
    };
    const headers = { "Content-Type": "application/json", "X-DashScope-Async": "enable" };
    if (uploaded) headers["X-DashScope-OssResourceResolve"] = "enable";
    say(status, "submitting");
    state.lastRequest = { url: new URL(SUBMIT_PATH, location.href).href, headers, body };
    $("copy-curl").disabled = false;
    $("copy-python").disabled = false;
    showSnippet(state.snippetKind);
    const answer = await call("POST", SUBMIT_PATH, { body: JSON.stringify(body), headers });
    const id = answer.output.task_id;
    say(status, "submitted", { id });
    const record = taskRecord(id);
    record.model = model;
    record.created = Date.now();
    record.status = answer.output.task_status || "PENDING";
    renderTasks();
    schedulePoll(300);
  } catch (err) {
    status.textContent = err.words ? err.words() : String(err.message || err);
    said.delete(status);
  } finally {
    submitButton.disabled = false;
    submitButton.removeAttribute("aria-busy");
  }
}

function fail(status, key, focus) {
  say(status, key);
  focus.focus();
}

// --- copy as curl / Python --------------------------------------------------------------------------------

function shellQuote(text) {
  return `'${text.replaceAll("'", `'\\''`)}'`;
}

function curlSnippet({ url, headers, body }) {
  const lines = [`curl -sS ${shellQuote(url)}`, `  -H "Authorization: Bearer $DASHSCOPE_API_KEY"`];
  for (const [name, value] of Object.entries(headers)) lines.push(`  -H ${shellQuote(`${name}: ${value}`)}`);
  // The body on standard input: inline images make it longer than a shell argument may be. No line of
  // indented JSON is the bare delimiter.
  lines.push("  --data-binary @- <<'JSON'");
  return `${lines.join(" \\\n")}\n${JSON.stringify(body, null, 2)}\nJSON`;
}

function pythonLiteral(value, depth = 0) {
  const pad = "    ".repeat(depth + 1);
  const end = "    ".repeat(depth);
  if (value === null || value === undefined) return "None";
  if (value === true) return "True";
  if (value === false) return "False";
  if (typeof value === "number") return String(value);
  if (typeof value === "string") return JSON.stringify(value); // a JSON string is a Python string literal
  if (Array.isArray(value)) {
    if (!value.length) return "[]";
    return `[\n${value.map((v) => `${pad}${pythonLiteral(v, depth + 1)},\n`).join("")}${end}]`;
  }
  const entries = Object.entries(value);
  if (!entries.length) return "{}";
  return `{\n${entries.map(([k, v]) => `${pad}${JSON.stringify(k)}: ${pythonLiteral(v, depth + 1)},\n`).join("")}${end}}`;
}

function pythonSnippet({ url, headers, body }) {
  const headerLines = [`        "Authorization": f"Bearer {os.environ['DASHSCOPE_API_KEY']}",`];
  for (const [name, value] of Object.entries(headers)) {
    headerLines.push(`        ${JSON.stringify(name)}: ${JSON.stringify(value)},`);
  }
  return [
    "import os",
    "",
    "import requests",
    "",
    "response = requests.post(",
    `    ${JSON.stringify(url)},`,
    "    headers={",
    ...headerLines,
    "    },",
    `    json=${pythonLiteral(body, 1)},`,
    "    timeout=60,",
    ")",
    "print(response.status_code, response.text)",
  ].join("\n");
}

function showSnippet(kind) {
  state.snippetKind = kind;
  const pre = $("snippet");
  delete pre.dataset.i18n;
  pre.textContent = kind === "python" ? pythonSnippet(state.lastRequest) : curlSnippet(state.lastRequest);
  pre.dataset.kind = kind;
  $("copy-curl").setAttribute("aria-pressed", String(kind === "curl"));
  $("copy-python").setAttribute("aria-pressed", String(kind === "python"));
}

async function copySnippet(kind) {
  if (!state.lastRequest) return;
  showSnippet(kind);
  const text = $("snippet").textContent;
  try {
    await navigator.clipboard.writeText(text);
    say($("copy-status"), "copied");
  } catch {
    const range = document.createRange();
    range.selectNodeContents($("snippet"));
    const selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
    say($("copy-status"), "copyManually");
  }
}

// --- tasks ------------------------------------------------------------------------------------------------

function taskRecord(id) {
  let record = state.tasks.get(id);
  if (!record) {
    record = { id, model: "", status: "PENDING", created: 0, detail: null, error: "", canceling: false };
    state.tasks.set(id, record);
  }
  return record;
}

// The live region: what screen readers say as it happens (a task's new status, a cancel asked for).
function speak(text) {
  const live = $("live");
  const line = document.createElement("p");
  line.textContent = text;
  live.append(line);
  while (live.childElementCount > 5) live.firstElementChild.remove();
}

function announce(record, before) {
  if (before !== record.status) speak(t("statusChanged", { id: record.id, status: statusWord(record.status) }));
}

async function fetchDetail(record) {
  const data = await call("GET", `/api/v1/tasks/${encodeURIComponent(record.id)}`);
  const before = record.status;
  record.error = "";
  record.detail = data.output || {};
  record.status = record.detail.task_status || record.status;
  if (!ACTIVE.has(record.status)) record.canceling = false;
  announce(record, before);
}

async function refreshTasks() {
  window.clearTimeout(state.pollTimer);
  state.pollTimer = 0;
  if (!apiKey()) {
    renderTasks();
    return;
  }
  if (state.polling) {
    state.pollAgain = true; // asked for while one is under way: another right after it
    return;
  }
  state.polling = true;
  state.pollAgain = false;
  const status = $("tasks-status");
  const key = apiKey();
  try {
    const page = await call("GET", `/api/v1/tasks?page_no=1&page_size=${PAGE_SIZE}`);
    if (key === apiKey()) {
      // (else the key changed meanwhile: this page is another account's)
      await mergePage(page);
      say(status, "tasksUpdated", { time: new Date().toLocaleTimeString(state.lang === "zh" ? "zh-CN" : "en") });
    }
  } catch (err) {
    say(status, "tasksError", { message: err.words ? err.words() : err.message });
  } finally {
    state.polling = false;
  }
  renderTasks();
  const active = [...state.tasks.values()].some((r) => ACTIVE.has(r.status));
  schedulePoll(state.pollAgain || key !== apiKey() ? 0 : active ? POLL_ACTIVE_MS : POLL_IDLE_MS);
}

async function mergePage(page) {
  const listed = new Set();
  for (const entry of page.data || []) {
    listed.add(entry.task_id);
    const record = taskRecord(entry.task_id);
    const before = record.detail ? record.status : null;
    record.model = entry.model_name || record.model;
    record.created = entry.gmt_create || record.created;
    record.status = entry.status || record.status;
    if (before !== null) announce(record, before);
  }
  for (const [id, record] of state.tasks) {
    // Only a task submitted here a moment ago may be missing from the page: keep it while it is active.
    if (!listed.has(id) && !ACTIVE.has(record.status)) state.tasks.delete(id);
  }
  // Details (progress, stage, queue position, video link, error) of the active tasks, and once of the others.
  const stale = [...state.tasks.values()].filter(
    (r) => ACTIVE.has(r.status) || !r.detail || r.detail.task_status !== r.status,
  );
  await Promise.all(stale.map((r) => fetchDetail(r).catch((err) => (r.error = err.words()))));
}

function schedulePoll(ms) {
  window.clearTimeout(state.pollTimer);
  state.pollTimer = window.setTimeout(refreshTasks, ms);
}

function makeRow(record) {
  const li = document.createElement("li");
  li.className = "task";
  li.dataset.taskId = record.id;
  const head = document.createElement("div");
  head.className = "task-head";
  const id = document.createElement("code");
  id.className = "task-id";
  id.textContent = record.id;
  const badge = document.createElement("span");
  badge.className = "badge";
  head.append(badge, id);
  const meta = document.createElement("p");
  meta.className = "task-meta";
  const bar = document.createElement("div");
  bar.className = "task-progress";
  const progress = document.createElement("progress");
  progress.max = 100;
  const pct = document.createElement("span");
  pct.className = "pct";
  bar.append(progress, pct);
  const stage = document.createElement("p");
  stage.className = "task-stage";
  const error = document.createElement("p");
  error.className = "task-error";
  const actions = document.createElement("div");
  actions.className = "task-actions";
  const play = button("", "play", () => playTask(record.id));
  const cancel = button("", "cancel danger", () => cancelTask(record.id));
  actions.append(play, cancel);
  li.append(head, meta, bar, stage, error, actions);
  const row = { li, badge, meta, progress, pct, stage, error, play, cancel };
  state.rows.set(record.id, row);
  return row;
}

function updateRow(record) {
  const row = state.rows.get(record.id);
  if (!row) return;
  const d = record.detail && record.detail.task_status === record.status ? record.detail : {};
  row.li.dataset.status = record.status;
  row.badge.textContent = statusWord(record.status);
  row.badge.dataset.status = record.status;
  const when = record.created
    ? t("submittedAt", { time: new Date(record.created).toLocaleString(state.lang === "zh" ? "zh-CN" : "en") })
    : "";
  row.meta.textContent = [record.model, when].filter(Boolean).join(" · ");
  const percent = record.status === "SUCCEEDED" ? 100 : Number(d.progress ?? 0);
  row.progress.value = percent;
  row.progress.setAttribute("aria-label", `${t("progress")} ${record.id}`);
  row.pct.textContent = `${percent}%`;
  const stageParts = [];
  if (ACTIVE.has(record.status) && d.stage) stageParts.push(stageWord(d.stage));
  if (record.status === "PENDING" && d.queue_position !== undefined) {
    stageParts.push(d.queue_position > 0 ? t("queuePosition", { n: d.queue_position }) : t("queueNext"));
  }
  row.stage.textContent = stageParts.join(" · ");
  row.stage.hidden = !stageParts.length;
  const failure = d.message ? t("error", { message: d.message, code: d.code || "" }) : "";
  row.error.textContent = record.error || failure;
  row.error.hidden = !row.error.textContent;
  row.play.textContent = t("play");
  row.play.setAttribute("aria-label", t("playLabel", { id: record.id }));
  row.play.hidden = record.status !== "SUCCEEDED";
  row.cancel.textContent = record.canceling ? t("canceling") : t("cancel");
  row.cancel.setAttribute("aria-label", t("cancelLabel", { id: record.id }));
  row.cancel.hidden = !ACTIVE.has(record.status);
  row.cancel.disabled = record.canceling;
}

function renderTasks() {
  const list = $("tasks");
  const records = [...state.tasks.values()].sort((a, b) => b.created - a.created);
  for (const [id, row] of state.rows) {
    if (!state.tasks.has(id)) {
      row.li.remove();
      state.rows.delete(id);
    }
  }
  records.forEach((record, i) => {
    const row = state.rows.get(record.id) || makeRow(record);
    updateRow(record);
    // Moved only when out of place, so that a focused button keeps its focus across polls.
    if (list.children[i] !== row.li) list.insertBefore(row.li, list.children[i] || null);
  });
  $("tasks-empty").hidden = records.length > 0 || !apiKey();
}

async function cancelTask(id) {
  const record = state.tasks.get(id);
  if (!record) return;
  record.canceling = true;
  record.error = "";
  updateRow(record);
  try {
    await call("POST", `/api/v1/tasks/${encodeURIComponent(id)}/cancel`);
    say($("tasks-status"), "cancelRequested", { id });
    speak(t("cancelRequested", { id }));
  } catch (err) {
    record.canceling = false;
    record.error = err.words();
  }
  updateRow(record);
  schedulePoll(300);
}

async function playTask(id) {
  const record = state.tasks.get(id);
  if (!record) return;
  const player = $("player");
  try {
    await fetchDetail(record); // a fresh signed link
  } catch (err) {
    record.error = err.words();
    updateRow(record);
    return;
  }
  const url = record.detail.video_url;
  if (!url) return;
  state.playing = id;
  player.src = url;
  const download = $("download");
  download.href = url;
  download.setAttribute("download", `${id}.mp4`);
  download.hidden = false;
  say($("player-caption"), "playerShowing", { id });
  player.scrollIntoView({ block: "nearest" });
  player.play().catch(() => {}); // a refused autoplay leaves the controls to the user
}

function onPlayerError() {
  const player = $("player");
  if (!state.playing || !player.error) return;
  const detail = `${player.error.code}${player.error.message ? `: ${player.error.message}` : ""}`;
  say($("player-caption"), "playerFailed", { detail });
}

// --- key, language, drop zone -----------------------------------------------------------------------------

function setKey(value) {
  const key = value.trim();
  const changed = key !== apiKey();
  if (key) sessionStorage.setItem(KEY_STORE, key);
  else sessionStorage.removeItem(KEY_STORE);
  if (changed) {
    state.tasks.clear();
    renderTasks();
    if (key) schedulePoll(0);
  }
}

function wireDropzone() {
  const zone = $("dropzone");
  const over = (event) => {
    event.preventDefault();
    zone.classList.add("over");
  };
  zone.addEventListener("dragenter", over);
  zone.addEventListener("dragover", over);
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    if (event.dataTransfer?.files?.length) addFiles(event.dataTransfer.files);
  });
  // A file dropped beside the zone must not navigate the page away.
  window.addEventListener("dragover", (event) => event.preventDefault());
  window.addEventListener("drop", (event) => event.preventDefault());
}

function start() {
  state.lang = initialLanguage();
  const keyInput = $("api-key");
  keyInput.value = apiKey();
  let typing = 0;
  keyInput.addEventListener("input", () => {
    window.clearTimeout(typing);
    typing = window.setTimeout(() => setKey(keyInput.value), 400);
  });
  keyInput.addEventListener("change", () => setKey(keyInput.value));
  $("forget-key").addEventListener("click", () => {
    keyInput.value = "";
    setKey("");
    keyInput.focus();
  });
  $("lang-toggle").addEventListener("click", () => {
    state.lang = state.lang === "zh" ? "en" : "zh";
    localStorage.setItem(LANG_STORE, state.lang);
    applyLanguage();
  });
  $("file-input").addEventListener("change", (event) => addFiles(event.target.files));
  wireDropzone();
  $("prompt").addEventListener("input", updateWarning);
  $("model").addEventListener("change", () => onModelChange(true));
  $("request-form").addEventListener("submit", submit);
  $("copy-curl").addEventListener("click", () => copySnippet("curl"));
  $("copy-python").addEventListener("click", () => copySnippet("python"));
  $("refresh").addEventListener("click", () => refreshTasks());
  $("player").addEventListener("error", onPlayerError);
  applyLanguage();
  loadModels();
  refreshTasks();
  document.body.dataset.ready = "true";
}

start();
