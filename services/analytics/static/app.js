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
  // A bitstream has no original to show: hide its figure rather than show an empty box.
  $("original-figure").hidden = !file.type.startsWith("image/");
  if (!file.type.startsWith("image/")) return;
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
  $("analyze-hint").hidden = true;
  const image = new Image();
  image.onload = () => {
    drawResult($("result-canvas"), image, result);
    // Shown once there is something in them: empty canvases look like broken images.
    $("images").hidden = false;
  };
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

// The stream whose frames are shown. The page opens on the most recently active one;
// a click picks another, and the choice is kept while that stream is listed.
let selectedStream = null;
// Per stream and session: the frames seen so far (the last FRAMES_KEPT) and where to
// poll from. A rebooted camera starts a new session at sequence 0, so a cursor of the
// old session would skip its frames: each session gets its own.
const FRAMES_KEPT = 200;
const frameCache = new Map();

function cacheFor(stream) {
  const key = JSON.stringify([stream.stream_id, stream.session]);
  let cache = frameCache.get(key);
  if (!cache) {
    // First look: only the newest frames, whatever the stream's length.
    cache = { since: Math.max(-1, stream.last_sequence - FRAMES_KEPT), frames: [],
              polling: Promise.resolve() };
    frameCache.set(key, cache);
  }
  return cache;
}

async function fetchNewFrames(stream, cache) {
  const base = `/v1/streams/${encodeURIComponent(stream.stream_id)}/frames` +
    `?session=${encodeURIComponent(stream.session)}&limit=1000`;
  // Polling follows next_since, so a stream past any page size keeps moving.
  for (;;) {
    const page = await getJson(`${base}&since=${cache.since}`);
    cache.frames.push(...page.frames);
    cache.since = page.next_since;
    if (page.frames.length < 1000) break;
  }
  cache.frames = cache.frames.slice(-FRAMES_KEPT);
}

function pollFrames(stream) {
  const cache = cacheFor(stream);
  // One poll at a time per session: the timer and a click may ask together, and two
  // polls from the same cursor would store every new frame twice.
  cache.polling = cache.polling.catch(() => {}).then(() => fetchNewFrames(stream, cache));
  return cache.polling.then(() => cache.frames);
}

function latencyMs(frame) {
  // Camera to stored result when the edge sent a capture time, else the service's own stages.
  if (frame.capture_time_unix_ms) return frame.received_ms - frame.capture_time_unix_ms;
  return Object.values(frame.result.timings_ms || {}).reduce((a, b) => a + b, 0);
}

function drawChart(canvas, values, colour, unit, digits) {
  const ctx = canvas.getContext("2d");
  const { width, height } = canvas;
  ctx.clearRect(0, 0, width, height);
  ctx.fillStyle = "#6b7480";
  ctx.font = "11px system-ui, sans-serif";
  canvas.dataset.points = String(values.length);
  if (!values.length) {
    ctx.fillText("no stored frames", 4, height / 2);
    return;
  }
  const top = Math.max(...values) || 1;
  ctx.fillText(`${fmt(top, digits)} ${unit}`, 4, 12);
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
}

function thumbnailUrl(frame) {
  const data = frame.result.thumbnail_jpeg_base64;
  return data ? `data:image/jpeg;base64,${data}` : null;
}

// An <img> only for a frame that has a thumbnail (the service stores none when
// stream_thumbnail_px is 0); one that does not decode is removed, not left broken.
function thumbnail(frame) {
  const url = thumbnailUrl(frame);
  if (!url) return "";
  const img = document.createElement("img");
  img.className = "thumb";
  img.alt = `frame ${frame.sequence}`;
  img.addEventListener("error", () => img.remove());
  img.src = url;
  return img;
}

function resultItems(result) {
  const labels = (result.labels || []).map((l) => `${l.name} ${(l.score * 100).toFixed(1)}%`);
  const objects = (result.detections || []).map((d) => `${d.label} ${(d.score * 100).toFixed(0)}%`);
  const items = [...labels, ...objects];
  return items.length ? items : ["nothing found"];
}

function showLatest(frame) {
  const figure = $("latest-figure");
  const url = frame && thumbnailUrl(frame);
  figure.hidden = !url;
  const img = $("latest-thumb");
  if (url) {
    img.onerror = () => { figure.hidden = true; };
    if (img.src !== url) img.src = url;
    $("latest-caption").textContent =
      `frame ${frame.sequence}, ${frame.task}, received ${when(frame.received_ms)}`;
  } else {
    img.removeAttribute("src");
  }
  $("latest-labels").replaceChildren(...(frame ? resultItems(frame.result) : []).map((text) => {
    const li = document.createElement("li");
    li.textContent = text;
    return li;
  }));
}

async function refreshFrames(stream) {
  const frames = await pollFrames(stream);
  // A click may have picked another stream while this poll was out.
  if (selectedStream !== stream.stream_id) return;
  $("frames-stream").textContent = stream.stream_id;
  $("frames-session").textContent = stream.session ? `(session ${stream.session})` : "";
  $("frames-none").hidden = frames.length > 0;
  showLatest(frames[frames.length - 1]);
  $("frames-table").tBodies[0].replaceChildren(...frames.slice(-20).reverse().map((f) =>
    row([f.sequence, when(f.received_ms), f.task, fmt(f.result.bits_per_pixel, 3),
      summary(f.result), thumbnail(f)])));
  drawChart($("bpp-chart"), frames.map((f) => f.result.bits_per_pixel), "#0b6bcb", "bpp", 3);
  drawChart($("latency-chart"), frames.map(latencyMs), "#b3261e", "ms", 0);
  $("frames").hidden = false;
  $("frames").dataset.stream = stream.stream_id;  // lets tests wait for a stream's frames
}

function markSelected() {
  for (const tr of $("streams-table").tBodies[0].rows) {
    const selected = tr.dataset.stream === selectedStream;
    tr.classList.toggle("selected", selected);
    tr.setAttribute("aria-selected", String(selected));
  }
}

function select(stream) {
  selectedStream = stream.stream_id;
  markSelected();
  refreshFrames(stream).catch(showStreamsError);
}

function showStreamsError(err) {
  $("streams-error").textContent = `streams unavailable: ${err.message}`;
  $("streams-error").hidden = false;
}

async function refreshStreams() {
  let data;
  try {
    data = await getJson("/v1/streams");
  } catch (err) {
    showStreamsError(err);
    return;
  }
  $("streams-error").hidden = true;
  const streams = data.streams;
  const any = streams.length > 0;
  $("streams-empty").hidden = any;
  $("streams-list").hidden = !any;
  $("streams-table").tBodies[0].replaceChildren(...streams.map((s) => {
    const tr = row([s.stream_id, `${s.frames_stored} / ${s.frames_total}`, s.last_sequence,
      when(s.last_seen_ms), summary(s.latest && s.latest.result)]);
    tr.dataset.stream = s.stream_id;
    tr.title = `show the frames of ${s.stream_id}`;
    tr.addEventListener("click", () => select(s));
    return tr;
  }));
  // The list is most recently active first: with nothing chosen (or the chosen stream
  // deleted) show the first, so the page opens on the stream that matters now.
  const chosen = streams.find((s) => s.stream_id === selectedStream) || streams[0];
  if (!chosen) {
    selectedStream = null;
    $("frames").hidden = true;
    return;
  }
  selectedStream = chosen.stream_id;
  markSelected();
  try {
    await refreshFrames(chosen);
  } catch (err) {
    showStreamsError(err);
  }
}

$("analyze-form").addEventListener("submit", analyze);
setupApiKey();
loadModels();
refreshStreams();
setInterval(refreshStreams, 2000);
