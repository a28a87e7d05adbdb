// The analytics web page: plain JS, no build step, talks only to this service.
"use strict";

// Distinct box colours; the first one is also what tests look for on the canvas.
const PALETTE = ["#00c853", "#ff1744", "#2979ff", "#ffab00", "#d500f9", "#00b8d4",
                 "#ff6d00", "#aeea00", "#f50057", "#651fff"];
const BANNER = "#ffc400";  // background of the classification label banner
const $ = (id) => document.getElementById(id);

function colourFor(categoryId) {
  return PALETTE[Math.abs(categoryId | 0) % PALETTE.length];
}

function hexToRgb(hex) {
  const n = parseInt(hex.slice(1), 16);
  return [(n >> 16) & 255, (n >> 8) & 255, n & 255];
}

// The API key (when the service requires one) lives in this browser's localStorage and
// goes out as X-API-Key on every API call; the page itself and the probes need none.
const KEY_STORAGE = "transtic-api-key";

function apiFetch(url, options = {}) {
  const key = localStorage.getItem(KEY_STORAGE);
  const headers = { ...(options.headers || {}), ...(key ? { "X-API-Key": key } : {}) };
  return fetch(url, { cache: "no-store", ...options, headers });
}

function setupApiKey() {
  const input = $("api-key");
  input.value = localStorage.getItem(KEY_STORAGE) || "";
  input.addEventListener("change", () => {
    const key = input.value.trim();
    if (key) localStorage.setItem(KEY_STORAGE, key);
    else localStorage.removeItem(KEY_STORAGE);
    loadModels();
    refreshStreams();
  });
}

async function getJson(url) {
  const response = await apiFetch(url);
  const body = await response.json();
  if (!response.ok) {
    const error = new Error(body.detail || (body.error && body.error.message) || response.statusText);
    error.status = response.status;
    throw error;
  }
  return body;
}

// ------------------------------------------------------------------ service info

let modelLoads = 0;

async function loadModels() {
  try {
    const info = await getJson("/v1/models");
    const task = $("task");
    task.replaceChildren();
    for (const name of info.tasks) {
      const backend = info.models.find((m) => m.kind === "task" && m.task === name);
      const option = new Option(backend && !backend.ready ? `${name} (not ready)` : name, name);
      option.selected = name === info.default_task;
      task.append(option);
    }
    // Rebuilt, not appended to: this runs again whenever the API key changes.
    const quality = $("quality");
    const chosen = quality.value;
    quality.replaceChildren(new Option("default", ""),
      ...info.qualities.map((q) => new Option(String(q), String(q))));
    quality.value = info.qualities.map(String).includes(chosen) ? chosen : "";
    const ready = await fetch("/readyz", { cache: "no-store" });
    const status = $("service-status");
    status.textContent = ready.ok ? `ready on ${info.device}` : "not ready: no codec loaded";
    status.className = ready.ok ? "status ok" : "status bad";
    status.dataset.loads = String(++modelLoads);  // lets tests wait for a reload
  } catch (err) {
    $("service-status").textContent = err.status === 401
      ? "API key required: enter it on the right" : `unreachable: ${err.message}`;
    $("service-status").className = "status bad";
  }
}

// ------------------------------------------------------------------ drawing

// COCO compressed RLE (pycocotools' string form) -> run lengths, column-major.
function rleCounts(text) {
  const counts = [];
  let p = 0;
  while (p < text.length) {
    let x = 0, k = 0, more = true;
    while (more) {
      const c = text.charCodeAt(p) - 48;
      x |= (c & 0x1f) << (5 * k);
      more = (c & 0x20) !== 0;
      p += 1;
      k += 1;
      if (!more && (c & 0x10)) x |= -1 << (5 * k);
    }
    if (counts.length > 2) x += counts[counts.length - 2];
    counts.push(x);
  }
  return counts;
}

function drawMask(ctx, mask, colour, width, height) {
  const [h, w] = mask.size;
  const layer = document.createElement("canvas");
  layer.width = w;
  layer.height = h;
  const lctx = layer.getContext("2d");
  const pixels = lctx.createImageData(w, h);
  const [r, g, b] = hexToRgb(colour);
  let index = 0, on = false;
  for (const run of rleCounts(mask.counts)) {
    if (on) {
      for (let i = index; i < index + run; i++) {
        const y = i % h, x = (i / h) | 0;  // runs go down columns
        const o = (y * w + x) * 4;
        pixels.data[o] = r; pixels.data[o + 1] = g; pixels.data[o + 2] = b; pixels.data[o + 3] = 110;
      }
    }
    index += run;
    on = !on;
  }
  lctx.putImageData(pixels, 0, 0);
  ctx.drawImage(layer, 0, 0, width, height);
}

function drawTag(ctx, text, x, y, background, scale) {
  ctx.font = `${Math.round(14 * scale)}px system-ui, sans-serif`;
  const pad = 4 * scale, h = 18 * scale;
  const w = ctx.measureText(text).width + 2 * pad;
  const top = Math.max(0, y - h);
  ctx.fillStyle = background;
  ctx.fillRect(x, top, w, h);
  ctx.fillStyle = "#000";
  ctx.textBaseline = "middle";
  ctx.fillText(text, x + pad, top + h / 2);
}

function drawResult(canvas, image, result) {
  canvas.width = image.naturalWidth;
  canvas.height = image.naturalHeight;
  const ctx = canvas.getContext("2d");
  ctx.drawImage(image, 0, 0);
  // Lines and text keep a readable size whatever the image resolution.
  const scale = Math.max(1, Math.min(canvas.width, canvas.height) / 400);
  for (const det of result.detections || []) {
    const colour = colourFor(det.category_id);
    if (det.mask) drawMask(ctx, det.mask, colour, canvas.width, canvas.height);
    const [x1, y1, x2, y2] = det.box;
    ctx.strokeStyle = colour;
    ctx.lineWidth = 3 * scale;
    ctx.strokeRect(x1, y1, x2 - x1, y2 - y1);
    drawTag(ctx, `${det.label} ${(det.score * 100).toFixed(0)}%`, x1, y1, colour, scale);
  }
  const top = (result.labels || [])[0];
  if (top) drawTag(ctx, `${top.name} ${(top.score * 100).toFixed(1)}%`, 0, 20 * scale, BANNER, scale);
  canvas.dataset.drawn = String(Number(canvas.dataset.drawn || 0) + 1);
}

function drawOriginal(file) {
  const canvas = $("original-canvas");
  const ctx = canvas.getContext("2d");
  if (!file.type.startsWith("image/")) {
    canvas.width = canvas.height = 1;  // a bitstream has no original to show
    return;
  }
  const url = URL.createObjectURL(file);
  const image = new Image();
  image.onload = () => {
    canvas.width = image.naturalWidth;
    canvas.height = image.naturalHeight;
    ctx.drawImage(image, 0, 0);
    URL.revokeObjectURL(url);
  };
  image.src = url;
}

// ------------------------------------------------------------------ analysis

function row(cells) {
  const tr = document.createElement("tr");
  for (const cell of cells) {
    const td = document.createElement("td");
    if (cell instanceof Node) td.append(cell); else td.textContent = cell;
    if (typeof cell === "number") td.className = "num";
    tr.append(td);
  }
  return tr;
}

function fmt(value, digits) {
  return value === null || value === undefined ? "n/a" : Number(value).toFixed(digits);
}

function showResult(result) {
  $("stats").tBodies[0].replaceChildren(
    row(["task", result.task]),
    row(["bits per pixel", fmt(result.bits_per_pixel, 4)]),
    row(["compression ratio (vs. upload)", result.compression_ratio === null ? "n/a (bitstream)"
      : `${fmt(result.compression_ratio, 2)} : 1`]),
    row(["compression ratio (vs. raw RGB)", `${fmt(result.compression_ratio_raw, 1)} : 1`]),
    row(["upload / bitstream bytes", `${result.input.bytes} / ${result.bitstream_bytes}`]),
    row(["size", `${result.width} x ${result.height}`]),
    row(["codec", `${result.codec_id} (q${result.quality})`]),
    row(["task model", result.task_model_id]),
  );
  $("timings").tBodies[0].replaceChildren(
    ...Object.entries(result.timings_ms).map(([stage, ms]) => row([stage, Number(ms.toFixed(1))])),
  );
  $("labels").replaceChildren(...(result.labels || []).map((l) => {
    const li = document.createElement("li");
    li.textContent = `${l.name} (${(l.score * 100).toFixed(1)}%)`;
    return li;
  }));
  $("result").hidden = false;
  const image = new Image();
  image.onload = () => drawResult($("result-canvas"), image, result);
  image.src = `data:image/png;base64,${result.image_png_base64}`;
}

async function analyze(event) {
  event.preventDefault();
  const file = $("file").files[0];
  if (!file) return;
  const button = $("analyze-button");
  const error = $("error");
  error.hidden = true;
  button.disabled = true;
  drawOriginal(file);
  const params = new URLSearchParams({ return_image: "true", task: $("task").value });
  if ($("quality").value) params.set("quality", $("quality").value);
  const body = new FormData();
  body.append("file", file);
  try {
    const response = await apiFetch(`/v1/analyze?${params}`, { method: "POST", body });
    const result = await response.json();
    if (!response.ok) throw new Error(result.error ? result.error.message : response.statusText);
    showResult(result);
  } catch (err) {
    error.textContent = err.message;
    error.hidden = false;
  } finally {
    button.disabled = false;
  }
}

// ------------------------------------------------------------------ streams

function summary(result) {
  if (!result) return "";
  const bpp = `${fmt(result.bits_per_pixel, 3)} bpp`;
  if (result.labels && result.labels.length) return `${result.labels[0].name}, ${bpp}`;
  return `${(result.detections || []).length} objects, ${bpp}`;
}

function when(ms) {
  return new Date(ms).toLocaleTimeString();
}

let selectedStream = null;
// Per stream: the frames seen so far (the last FRAMES_KEPT) and where to poll from.
// Polling follows next_since, so a stream past any page size keeps moving.
const FRAMES_KEPT = 200;
const frameCache = new Map();

async function pollFrames(streamId, lastSequence) {
  let cache = frameCache.get(streamId);
  if (!cache) {
    // First look: only the newest frames, whatever the stream's length.
    cache = { since: Math.max(-1, lastSequence - FRAMES_KEPT), frames: [] };
    frameCache.set(streamId, cache);
  }
  for (;;) {
    const page = await getJson(`/v1/streams/${encodeURIComponent(streamId)}/frames` +
      `?since=${cache.since}&limit=1000`);
    cache.frames.push(...page.frames);
    cache.since = page.next_since;
    if (page.frames.length < 1000) break;
  }
  cache.frames = cache.frames.slice(-FRAMES_KEPT);
  return cache.frames;
}

function latencyMs(frame) {
  // Camera to stored result when the edge sent a capture time, else the service's own stages.
  if (frame.capture_time_ms) return frame.received_ms - frame.capture_time_ms;
  return Object.values(frame.result.timings_ms || {}).reduce((a, b) => a + b, 0);
}

function drawChart(canvas, values, colour, unit) {
  const ctx = canvas.getContext("2d");
  const { width, height } = canvas;
  ctx.clearRect(0, 0, width, height);
  ctx.fillStyle = "#6b7480";
  ctx.font = "11px system-ui, sans-serif";
  if (!values.length) return;
  const top = Math.max(...values) || 1;
  ctx.fillText(`${fmt(top, 3)} ${unit}`, 4, 12);
  ctx.fillText(`0`, 4, height - 4);
  ctx.strokeStyle = colour;
  ctx.lineWidth = 2;
  ctx.beginPath();
  values.forEach((v, i) => {
    const x = values.length === 1 ? width / 2 : (i / (values.length - 1)) * (width - 8) + 4;
    const y = height - 4 - (v / top) * (height - 20);
    if (i === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
  });
  ctx.stroke();
  canvas.dataset.points = String(values.length);
}

function thumbnail(frame) {
  const data = frame.result.thumbnail_jpeg_base64;
  if (!data) return "";
  const img = document.createElement("img");
  img.className = "thumb";
  img.alt = `frame ${frame.sequence}`;
  img.src = `data:image/jpeg;base64,${data}`;
  return img;
}

async function refreshFrames(lastSequence) {
  if (selectedStream === null) return;
  const frames = await pollFrames(selectedStream, lastSequence);
  $("frames-stream").textContent = selectedStream;
  $("frames-table").tBodies[0].replaceChildren(...frames.slice(-20).reverse().map((f) =>
    row([f.sequence, when(f.received_ms), f.task, fmt(f.result.bits_per_pixel, 3),
      summary(f.result), thumbnail(f)])));
  drawChart($("bpp-chart"), frames.map((f) => f.result.bits_per_pixel), "#0b6bcb", "bpp");
  drawChart($("latency-chart"), frames.map(latencyMs), "#b3261e", "ms");
  $("frames").hidden = false;
}

async function refreshStreams() {
  try {
    const data = await getJson("/v1/streams");
    const body = $("streams-table").tBodies[0];
    body.replaceChildren(...data.streams.map((s) => {
      const tr = row([s.stream_id, `${s.frames_stored} / ${s.frames_total}`, s.last_sequence,
        when(s.last_seen_ms), summary(s.latest && s.latest.result)]);
      tr.dataset.stream = s.stream_id;
      tr.addEventListener("click", () => {
        selectedStream = s.stream_id;
        refreshFrames(s.last_sequence);
      });
      return tr;
    }));
    $("streams-empty").hidden = data.streams.length > 0;
    const selected = data.streams.find((s) => s.stream_id === selectedStream);
    await refreshFrames(selected ? selected.last_sequence : -1);
  } catch (err) {
    $("streams-empty").textContent = `streams unavailable: ${err.message}`;
    $("streams-empty").hidden = false;
  }
}

// Grafana runs beside the service in the compose set-up, on port 3000 of the same host.
$("grafana-link").href = `${location.protocol}//${location.hostname}:3000/`;
$("analyze-form").addEventListener("submit", analyze);
setupApiKey();
loadModels();
refreshStreams();
setInterval(refreshStreams, 2000);
