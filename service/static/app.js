// The mmembed page: search by text, file or microphone; add and delete items.
// Plain JavaScript against the service's own HTTP API; no framework, no build step.
"use strict";

const KEY_STORAGE = "mmembed.apiKey";
const DEFAULTS = { q: "", dims: "512", mode: "exact", modality: "", k: "12" };
const UPLOAD_CONCURRENCY = 2;
const MAX_RECORDING_S = 30;
const WAV_RATE = 16000;

const $ = (id) => document.getElementById(id);
const objectUrls = [];
let describeOn = false; // /readyz says whether /describe is served
let lastQueryFile = null; // the file last searched with, for "describe this file"

// ---- talking to the API ----------------------------------------------------------

class ApiError extends Error {
  constructor(message, status = 0, type = "error") {
    super(message);
    this.status = status;
    this.type = type;
  }
}

function authHeaders() {
  const key = sessionStorage.getItem(KEY_STORAGE);
  return key ? { Authorization: `Bearer ${key}` } : {};
}

/** A readable message from an error answer: the API's own message, never raw JSON. */
function errorMessage(status, statusText, bodyText) {
  try {
    const body = JSON.parse(bodyText);
    if (body && body.error && body.error.message) return body.error.message;
    if (body && typeof body.detail === "string") return body.detail;
  } catch (_) {
    /* not JSON: fall through */
  }
  if (status === 413) return "the file is too large for this server";
  return `the server answered ${status} ${statusText || ""}`.trim();
}

let keyPrompt = null;

/** Ask once for an API key (several requests failing together share one dialog). */
function askForKey(reason) {
  if (keyPrompt) return keyPrompt;
  const dialog = $("key-dialog");
  $("key-error").textContent = reason || "";
  $("key-input").value = "";
  keyPrompt = new Promise((resolve) => {
    const finish = (ok) => {
      $("key-form").removeEventListener("submit", onSubmit);
      $("key-cancel").removeEventListener("click", onCancel);
      dialog.removeEventListener("cancel", onCancel);
      if (dialog.open) dialog.close();
      keyPrompt = null;
      resolve(ok);
    };
    const onSubmit = (event) => {
      event.preventDefault();
      const key = $("key-input").value.trim();
      if (!key) {
        $("key-error").textContent = "Enter a key, or cancel.";
        return;
      }
      sessionStorage.setItem(KEY_STORAGE, key);
      finish(true);
    };
    const onCancel = (event) => {
      event.preventDefault();
      finish(false);
    };
    $("key-form").addEventListener("submit", onSubmit);
    $("key-cancel").addEventListener("click", onCancel);
    dialog.addEventListener("cancel", onCancel);
    dialog.showModal();
    $("key-input").focus();
  });
  return keyPrompt;
}

/** fetch() with the API key; asks for a key on 401 and retries; ApiError on failure. */
async function api(path, options = {}) {
  for (;;) {
    let response;
    try {
      response = await fetch(path, { ...options, headers: { ...authHeaders(), ...(options.headers || {}) } });
    } catch (err) {
      throw new ApiError(`cannot reach the server (${err.message})`, 0, "network");
    }
    if (response.ok) return response;
    const message = errorMessage(response.status, response.statusText, await response.text());
    if (response.status === 401) {
      sessionStorage.removeItem(KEY_STORAGE);
      if (await askForKey(message)) continue;
    }
    throw new ApiError(message, response.status);
  }
}

/** POST a form with upload progress (fetch has none); resolves with the JSON answer. */
function upload(path, form, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", path);
    for (const [name, value] of Object.entries(authHeaders())) xhr.setRequestHeader(name, value);
    xhr.upload.onprogress = (event) => {
      if (event.lengthComputable) onProgress(event.loaded / event.total);
    };
    xhr.onerror = () => reject(new ApiError("cannot reach the server", 0, "network"));
    xhr.onload = async () => {
      if (xhr.status >= 200 && xhr.status < 300) {
        resolve(JSON.parse(xhr.responseText));
        return;
      }
      const message = errorMessage(xhr.status, xhr.statusText, xhr.responseText);
      if (xhr.status === 401) {
        sessionStorage.removeItem(KEY_STORAGE);
        if (await askForKey(message)) {
          upload(path, form, onProgress).then(resolve, reject);
          return;
        }
      }
      reject(new ApiError(message, xhr.status));
    };
    xhr.send(form);
  });
}

const itemPath = (id) => `/items/${encodeURIComponent(id)}`;

// ---- messages --------------------------------------------------------------------

function showError(context, err) {
  const box = $("error");
  box.textContent = "";
  const text = document.createElement("p");
  const strong = document.createElement("strong");
  strong.textContent = `${context}: `;
  text.append(strong, err instanceof Error ? err.message : String(err));
  box.append(text);
  const close = document.createElement("button");
  close.type = "button";
  close.className = "dismiss";
  close.textContent = "Dismiss";
  close.addEventListener("click", clearError);
  box.append(close);
  box.hidden = false;
}

function clearError() {
  $("error").hidden = true;
  $("error").textContent = "";
}

// ---- server facts ------------------------------------------------------------------

async function refreshServerInfo() {
  try {
    const response = await fetch("/readyz");
    const body = await response.json();
    if (!response.ok) {
      $("server-info").textContent = "The server is still loading…";
      return;
    }
    const counts = (body.index && body.index.counts) || {};
    const total = Object.values(counts).reduce((a, b) => a + b, 0);
    const parts = [["image", "image"], ["audio", "sound"], ["text", "text"]]
      .filter(([key]) => counts[key])
      .map(([key, word]) => `${counts[key]} ${word}${counts[key] === 1 ? "" : "s"}`);
    const model = body.model
      ? `${body.model} ${body.version || ""}`.trim()
      : body.checkpoint
        ? "trained checkpoint"
        : `${body.preset} preset`;
    $("server-info").textContent =
      `${total} item${total === 1 ? "" : "s"}${parts.length ? ` (${parts.join(", ")})` : ""} · ${model}`;
    describeOn = Boolean(body.describe && body.describe.available);
    document.querySelectorAll(".card .describe").forEach((b) => {
      b.hidden = !describeOn || b.closest(".card").dataset.modality === "text";
    });
    $("describe-query").hidden = !describeOn || !lastQueryFile;
    const banner = $("model-warning");
    banner.hidden = !body.warning;
    banner.textContent = body.warning || "";
  } catch (_) {
    $("server-info").textContent = "Cannot reach the server.";
  }
}

// ---- cards -------------------------------------------------------------------------

function releaseObjectUrls() {
  while (objectUrls.length) URL.revokeObjectURL(objectUrls.pop());
}

function noPreview(media, modality) {
  media.textContent = "";
  const box = document.createElement("div");
  box.className = "no-preview";
  box.textContent = `no preview for this ${modality === "audio" ? "sound" : "image"}`;
  media.append(box);
}

/** Point an <img> or <audio> at the item's preview (through a blob when a key is needed). */
async function attachPreview(element, id, media, modality) {
  const url = `/previews/${encodeURIComponent(id)}`; // never hidden by an item "<id>/preview"
  element.addEventListener("error", () => noPreview(media, modality), { once: true });
  if (!sessionStorage.getItem(KEY_STORAGE)) {
    element.src = url;
    return;
  }
  try {
    const blob = await (await api(url)).blob();
    const objectUrl = URL.createObjectURL(blob);
    objectUrls.push(objectUrl);
    element.src = objectUrl;
  } catch (_) {
    noPreview(media, modality);
  }
}

function formatValue(value) {
  return typeof value === "string" ? value : JSON.stringify(value);
}

/** The item's stored text: `text`, or `metadata.text` where items were added before the
 * server kept texts; null when it has none (or keeps none). */
function storedText(item) {
  if (typeof item.text === "string") return item.text;
  const legacy = item.metadata && item.metadata.text;
  return typeof legacy === "string" ? legacy : null;
}

function buildCard(item, score) {
  const node = $("card-template").content.firstElementChild.cloneNode(true);
  const media = node.querySelector(".media");
  const metadata = item.metadata || {};
  const text = storedText(item);
  node.dataset.id = item.id;
  node.dataset.modality = item.modality;
  if (item.modality === "image") {
    const img = document.createElement("img");
    img.alt = `Preview of ${metadata.source || item.id}`;
    img.decoding = "async";
    media.append(img);
    attachPreview(img, item.id, media, "image");
  } else if (item.modality === "audio") {
    const audio = document.createElement("audio");
    audio.controls = true;
    audio.preload = "metadata";
    audio.setAttribute("aria-label", `Preview of ${metadata.source || item.id}`);
    media.append(audio);
    attachPreview(audio, item.id, media, "audio");
  } else {
    const quote = document.createElement("blockquote");
    if (text === null) {
      quote.textContent = "(text not stored)";
      quote.classList.add("missing");
    } else {
      quote.textContent = text;
    }
    media.append(quote);
    media.classList.add("text");
  }
  if (item.modality !== "text" && text !== null) {
    const caption = node.querySelector(".caption");
    caption.textContent = text;
    caption.hidden = false;
  }
  if (score !== undefined) {
    const box = node.querySelector(".score");
    box.hidden = false;
    node.querySelector(".score-fill").style.width = `${Math.max(0, Math.min(1, score)) * 100}%`;
    node.querySelector(".score-value").textContent = `score ${score.toFixed(3)}`;
  }
  node.querySelector(".badge").textContent = item.modality;
  node.querySelector("code").textContent = item.id;
  const list = node.querySelector(".meta");
  for (const [key, value] of Object.entries(metadata)) {
    if (key === "text" && value === text) continue; // shown above already
    const dt = document.createElement("dt");
    dt.textContent = key;
    const dd = document.createElement("dd");
    dd.textContent = formatValue(value);
    list.append(dt, dd);
  }
  const describe = node.querySelector(".describe");
  describe.hidden = !describeOn || item.modality === "text";
  describe.setAttribute("aria-label", `Describe ${item.id} in words`);
  describe.addEventListener("click", () =>
    describeItem(describe, node.querySelector(".description"), item.id),
  );
  const remove = node.querySelector(".delete");
  remove.setAttribute("aria-label", `Delete ${item.id}`);
  remove.addEventListener("click", () => deleteItem(node, remove, item.id));
  return node;
}

function render(heading, items, scores) {
  releaseObjectUrls();
  $("results-heading").textContent = heading;
  const cards = $("cards");
  cards.textContent = "";
  items.forEach((item, n) => cards.append(buildCard(item, scores ? scores[n] : undefined)));
  const empty = $("empty");
  empty.hidden = items.length > 0;
  empty.textContent = scores
    ? "Nothing found. Add some items below, or try another query or filter."
    : "No items yet. Add images, sounds or texts below.";
}

// ---- describe (a language model reads the latents) ---------------------------------

/** POST a file to /describe and show what the language model writes in `out`. */
async function describeFile(file, button, out) {
  button.disabled = true;
  out.hidden = false;
  out.textContent = "Describing…";
  try {
    const form = new FormData();
    form.append("file", file, file.name || "input");
    const body = await (await api("/describe", { method: "POST", body: form })).json();
    out.textContent = `“${body.text}” (${body.model}, ${body.tokens} tokens in ${body.seconds.toFixed(1)} s)`;
  } catch (err) {
    out.hidden = true;
    showError("Could not describe it", err);
  } finally {
    button.disabled = false;
  }
}

/** Describe a stored item from its preview (the bytes the server kept). */
async function describeItem(button, out, id) {
  try {
    const blob = await (await api(`/previews/${encodeURIComponent(id)}`)).blob();
    await describeFile(new File([blob], id), button, out);
  } catch (err) {
    showError(`Could not read the preview of ${id}`, err);
  }
}

async function deleteItem(node, button, id) {
  if (!button.classList.contains("armed")) {
    button.classList.add("armed");
    button.textContent = "Really delete?";
    setTimeout(() => {
      button.classList.remove("armed");
      button.textContent = "Delete";
    }, 4000);
    return;
  }
  button.disabled = true;
  try {
    await api(itemPath(id), { method: "DELETE" });
    node.remove();
    $("timing").textContent = `Deleted ${id}.`;
    refreshServerInfo();
  } catch (err) {
    button.disabled = false;
    showError(`Could not delete ${id}`, err);
  }
}

// ---- searching -------------------------------------------------------------------

function formValues() {
  return {
    q: $("q").value.trim(),
    dims: $("dims").value,
    mode: $("mode").value,
    modality: $("modality").value,
    k: $("k").value,
  };
}

function setForm(values) {
  for (const name of Object.keys(DEFAULTS)) {
    const wanted = values[name] ?? DEFAULTS[name];
    const field = $(name);
    if (field.tagName === "SELECT" && ![...field.options].some((o) => o.value === wanted)) {
      field.value = DEFAULTS[name];
    } else {
      field.value = wanted;
    }
  }
}

/** The page's own URL for a search: only what differs from the defaults (q always first). */
function pageUrl(values) {
  const params = new URLSearchParams();
  for (const name of Object.keys(DEFAULTS)) {
    if (values[name] && values[name] !== DEFAULTS[name]) params.set(name, values[name]);
  }
  const query = params.toString();
  return query ? `/?${query}` : "/";
}

function apiParams(values) {
  const params = new URLSearchParams({ dims: values.dims, k: values.k, mode: values.mode });
  if (values.modality) params.set("modality", values.modality);
  return params;
}

function serverTiming(response) {
  const header = response.headers.get("Server-Timing") || "";
  const parts = {};
  for (const entry of header.split(",")) {
    const [name, dur] = entry.trim().split(";dur=");
    if (name && dur) parts[name] = Number(dur);
  }
  return parts;
}

function showTiming(count, timing, total) {
  const bits = [`${count} result${count === 1 ? "" : "s"}`];
  if (timing.embed !== undefined) bits.push(`model ${timing.embed.toFixed(1)} ms`);
  if (timing.search !== undefined) bits.push(`index ${timing.search.toFixed(1)} ms`);
  bits.push(`${Math.round(total)} ms in all`);
  $("timing").textContent = bits.join(" · ");
}

let searchSerial = 0;

async function runSearch(request, heading) {
  const serial = ++searchSerial;
  const started = performance.now();
  $("results").setAttribute("aria-busy", "true");
  try {
    const response = await api(request.url, request.options);
    const body = await response.json();
    if (serial !== searchSerial) return;
    clearError();
    render(heading, body.results, body.results.map((hit) => hit.score));
    showTiming(body.results.length, serverTiming(response), performance.now() - started);
  } catch (err) {
    if (serial === searchSerial) showError("Search failed", err);
  } finally {
    if (serial === searchSerial) $("results").removeAttribute("aria-busy");
  }
}

async function browse(values) {
  const serial = ++searchSerial;
  const filter = values.modality ? `&modality=${encodeURIComponent(values.modality)}` : "";
  try {
    const first = await (await api(`/items?limit=1${filter}`)).json();
    const k = Number(values.k);
    const offset = Math.max(0, first.total - k);
    const page = await (await api(`/items?limit=${k}&offset=${offset}${filter}`)).json();
    if (serial !== searchSerial) return;
    clearError();
    render("Latest items", page.items.reverse());
    $("timing").textContent = first.total ? `${page.items.length} of ${first.total}` : "";
  } catch (err) {
    if (serial === searchSerial) showError("Could not list the items", err);
  }
}

/** Run what the form (or URL) says: a text search, or the latest items without a query. */
function runFromValues(values) {
  if (!values.q) return browse(values);
  const params = apiParams(values);
  params.set("q", values.q);
  return runSearch({ url: `/search?${params}`, options: {} }, `Results for “${values.q}”`);
}

function searchFromForm(event) {
  if (event) event.preventDefault();
  const values = formValues();
  const url = pageUrl(values);
  if (url !== location.pathname + location.search) history.pushState(values, "", url);
  runFromValues(values);
}

function searchByFile(file, label) {
  lastQueryFile = file;
  $("describe-query").hidden = !describeOn;
  $("query-description").hidden = true;
  const values = formValues();
  $("q").value = "";
  history.pushState({ ...values, q: "" }, "", pageUrl({ ...values, q: "" }));
  $("query-file-status").textContent = `Searching with ${label}.`;
  const form = new FormData();
  form.append("file", file, file.name || "query");
  runSearch(
    { url: `/search?${apiParams(values)}`, options: { method: "POST", body: form } },
    `Results for ${label}`,
  );
}

// ---- recording -----------------------------------------------------------------------

/** 16-bit mono PCM WAV bytes from float samples. */
function encodeWav(samples, rate) {
  const buffer = new ArrayBuffer(44 + samples.length * 2);
  const view = new DataView(buffer);
  const text = (offset, s) => [...s].forEach((c, i) => view.setUint8(offset + i, c.charCodeAt(0)));
  text(0, "RIFF");
  view.setUint32(4, 36 + samples.length * 2, true);
  text(8, "WAVE");
  text(12, "fmt ");
  view.setUint32(16, 16, true);
  view.setUint16(20, 1, true); // PCM
  view.setUint16(22, 1, true); // mono
  view.setUint32(24, rate, true);
  view.setUint32(28, rate * 2, true);
  view.setUint16(32, 2, true);
  view.setUint16(34, 16, true);
  text(36, "data");
  view.setUint32(40, samples.length * 2, true);
  samples.forEach((s, i) => view.setInt16(44 + i * 2, Math.max(-1, Math.min(1, s)) * 0x7fff, true));
  return new Blob([buffer], { type: "audio/wav" });
}

/** What MediaRecorder made (WebM/Ogg, which the server does not read) as 16 kHz mono WAV. */
async function recordingToWav(blob) {
  const context = new AudioContext();
  let decoded;
  try {
    decoded = await context.decodeAudioData(await blob.arrayBuffer());
  } finally {
    context.close();
  }
  const length = Math.max(1, Math.ceil(decoded.duration * WAV_RATE));
  const offline = new OfflineAudioContext(1, length, WAV_RATE);
  const source = offline.createBufferSource();
  source.buffer = decoded;
  source.connect(offline.destination);
  source.start();
  const rendered = await offline.startRendering();
  return encodeWav(rendered.getChannelData(0), WAV_RATE);
}

let recorder = null;

async function toggleRecording() {
  const button = $("record");
  if (recorder) {
    recorder.stop();
    return;
  }
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({ audio: true });
  } catch (err) {
    showError("Cannot use the microphone", err.message || err);
    return;
  }
  const chunks = [];
  recorder = new MediaRecorder(stream);
  const started = Date.now();
  const tick = setInterval(() => {
    const seconds = Math.floor((Date.now() - started) / 1000);
    button.textContent = `stop recording (${seconds} s)`;
    if (seconds >= MAX_RECORDING_S && recorder) recorder.stop();
  }, 250);
  recorder.addEventListener("dataavailable", (event) => chunks.push(event.data));
  recorder.addEventListener("stop", async () => {
    clearInterval(tick);
    stream.getTracks().forEach((track) => track.stop());
    recorder = null;
    button.setAttribute("aria-pressed", "false");
    button.textContent = "record from the microphone";
    try {
      const wav = await recordingToWav(new Blob(chunks, { type: chunks[0] ? chunks[0].type : "" }));
      searchByFile(new File([wav], "recording.wav", { type: "audio/wav" }), "your recording");
    } catch (err) {
      showError("Could not use the recording", err.message || err);
    }
  });
  recorder.start();
  button.setAttribute("aria-pressed", "true");
  button.textContent = "stop recording (0 s)";
}

// ---- adding ------------------------------------------------------------------------

function uploadRow(label) {
  const row = document.createElement("li");
  const name = document.createElement("span");
  name.className = "upload-name";
  name.textContent = label;
  const bar = document.createElement("progress");
  bar.max = 100;
  bar.value = 0;
  bar.setAttribute("aria-label", `Upload of ${label}`);
  const status = document.createElement("span");
  status.className = "upload-status";
  status.textContent = "waiting";
  row.append(name, bar, status);
  $("uploads").append(row);
  return {
    progress(fraction) {
      bar.value = Math.round(fraction * 100);
      status.textContent = fraction < 1 ? `${bar.value}%` : "embedding…";
    },
    done(created) {
      bar.value = 100;
      row.classList.add("ok");
      status.textContent = `added as ${created.modality} ${created.id}`;
    },
    failed(err) {
      row.classList.add("failed");
      status.textContent = err.message;
    },
  };
}

function parseMetadata() {
  const text = $("add-metadata").value.trim();
  if (!text) return {};
  let value;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new ApiError(`the metadata is not valid JSON (${err.message})`);
  }
  if (value === null || typeof value !== "object" || Array.isArray(value)) {
    throw new ApiError('the metadata must be a JSON object, like {"album": "holidays"}');
  }
  return value;
}

async function addOneFile(file, metadata, caption) {
  const row = uploadRow(file.name);
  const form = new FormData();
  form.append("file", file, file.name);
  // a `text` beside a file is its caption: stored and shown with hits, not embedded
  if (caption) form.append("text", caption);
  form.append("metadata", JSON.stringify({ source: file.name, ...metadata }));
  try {
    row.done(await upload("/items", form, (f) => row.progress(f)));
    return true;
  } catch (err) {
    row.failed(err);
    return false;
  }
}

async function addText(text, metadata) {
  const row = uploadRow(text.length > 40 ? `${text.slice(0, 40)}…` : text);
  try {
    const response = await api("/items", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ text, metadata }),
    });
    row.done(await response.json());
    return true;
  } catch (err) {
    row.failed(err);
    return false;
  }
}

let pendingFiles = [];

function setPendingFiles(files) {
  pendingFiles = [...files];
  const names = pendingFiles.map((f) => f.name).join(", ");
  $("add-drop").querySelector("span").textContent = pendingFiles.length
    ? `${pendingFiles.length} file${pendingFiles.length === 1 ? "" : "s"} ready: ${names}. Drop more, or`
    : "Drop images and sounds here, or";
  // one optional caption per file, typed before Add
  const list = $("pending-files");
  list.textContent = "";
  pendingFiles.forEach((file, i) => {
    const item = document.createElement("li");
    const label = document.createElement("label");
    label.htmlFor = `caption-${i}`;
    label.className = "upload-name";
    label.textContent = `Caption for ${file.name}`;
    const input = document.createElement("input");
    input.type = "text";
    input.id = `caption-${i}`;
    input.dataset.name = file.name;
    input.placeholder = "optional: kept and shown with the file, not searched";
    item.append(label, input);
    list.append(item);
  });
  list.hidden = !pendingFiles.length;
}

const captionOf = (i) => $(`caption-${i}`)?.value.trim() || "";

async function addItems(event) {
  event.preventDefault();
  let metadata;
  try {
    metadata = parseMetadata();
  } catch (err) {
    showError("Cannot add", err);
    $("add-metadata").focus();
    return;
  }
  const text = $("add-text").value.trim();
  const files = pendingFiles;
  if (!files.length && !text) {
    showError("Nothing to add", "drop or choose files, or type a text");
    return;
  }
  clearError();
  $("uploads").textContent = "";
  $("uploads").dataset.state = "running";
  $("add-submit").disabled = true;
  const captions = files.map((_, i) => captionOf(i));
  const jobs = files.map((file, i) => () => addOneFile(file, metadata, captions[i]));
  if (text) jobs.push(() => addText(text, metadata));
  let added = 0;
  const worker = async () => {
    while (jobs.length) if (await jobs.shift()()) added += 1;
  };
  await Promise.all(Array.from({ length: UPLOAD_CONCURRENCY }, worker));
  $("add-submit").disabled = false;
  setPendingFiles([]);
  $("add-text").value = "";
  $("add-files").value = "";
  refreshServerInfo();
  await runFromValues(formValues());
  const failed = files.length + (text ? 1 : 0) - added;
  if (failed) showError("Some items were not added", `${failed} failed; see the list below`);
  $("uploads").dataset.state = "done";
}

// ---- drag and drop -----------------------------------------------------------------

function dropZone(zone, onFiles) {
  zone.addEventListener("dragover", (event) => {
    event.preventDefault();
    zone.classList.add("over");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    if (event.dataTransfer.files.length) onFiles(event.dataTransfer.files);
  });
}

// ---- start -------------------------------------------------------------------------

function start() {
  $("search-form").addEventListener("submit", searchFromForm);
  $("describe-query").addEventListener("click", () =>
    describeFile(lastQueryFile, $("describe-query"), $("query-description")),
  );
  for (const name of ["dims", "mode", "modality", "k"]) {
    $(name).addEventListener("change", () => searchFromForm());
  }
  const queryFile = (files) => searchByFile(files[0], files[0].name);
  $("query-file").addEventListener("change", (e) => e.target.files.length && queryFile(e.target.files));
  dropZone($("query-drop"), queryFile);
  $("add-form").addEventListener("submit", addItems);
  $("add-files").addEventListener("change", (e) => setPendingFiles(e.target.files));
  dropZone($("add-drop"), (files) => setPendingFiles(files));
  if (navigator.mediaDevices && navigator.mediaDevices.getUserMedia && window.MediaRecorder) {
    $("record").hidden = false;
    $("record").addEventListener("click", toggleRecording);
  }
  window.addEventListener("popstate", () => {
    const values = Object.fromEntries(new URLSearchParams(location.search));
    setForm(values);
    runFromValues(formValues());
  });
  setForm(Object.fromEntries(new URLSearchParams(location.search)));
  refreshServerInfo();
  runFromValues(formValues());
}

start();
