// The scaledet serve page: send one image to /v1/predict, draw what comes back, filter by score
// in the page (no new request). Plain DOM and canvas, no libraries.
"use strict";

// Twelve colours far apart in hue and lightness, by label (mask value k + 1 uses label k's colour).
const PALETTE = [
  [228, 26, 28], [55, 126, 184], [77, 175, 74], [152, 78, 163], [255, 127, 0], [166, 86, 40],
  [247, 129, 191], [0, 158, 153], [200, 180, 0], [90, 90, 230], [120, 200, 20], [190, 30, 120],
];
const MASK_ALPHA = 0.45;

const $ = (id) => document.getElementById(id);
const view = {
  canvas: $("canvas"), drop: $("drop"), dropText: $("drop-text"), file: $("file"), list: $("detections"),
  slider: $("threshold"), sliderValue: $("threshold-value"), status: $("status"),
  maskControl: $("mask-control"), showMask: $("show-mask"),
};
let classNames = [];
let current = null; // {image, result, overlay}

function colour(label) {
  return PALETTE[((label % PALETTE.length) + PALETTE.length) % PALETTE.length];
}

function rgb(label) {
  return `rgb(${colour(label).join(",")})`;
}

function setStatus(text, isError = false) {
  view.status.textContent = text;
  view.status.classList.toggle("error", isError);
}

async function loadModel() {
  const response = await fetch("/v1/model");
  const info = await response.json();
  classNames = info.class_names;
  $("model-name").textContent = info.name;
  const batching = info.max_batch > 1 ? `batches up to ${info.max_batch}` : "no batching";
  $("model-details").textContent =
    `${info.backend} · input ${info.input_size} px · ${classNames.length} classes` +
    `${info.has_mask ? " + segmentation" : ""} · ${batching}`;
  const classes = $("classes");
  classes.replaceChildren(...classNames.map((name, label) => {
    const chip = document.createElement("span");
    chip.className = "chip";
    chip.append(swatch(label), name);
    return chip;
  }));
}

function swatch(label) {
  const box = document.createElement("span");
  box.className = "swatch";
  box.style.background = rgb(label);
  return box;
}

function decodeImage(src) {
  const image = new Image();
  image.src = src;
  return image.decode().then(() => image);
}

// The mask PNG (value 0 background, k + 1 class k) as a translucent colour layer of the same size.
async function maskOverlay(mask, width, height) {
  const png = await decodeImage(`data:image/png;base64,${mask.data}`);
  const layer = document.createElement("canvas");
  layer.width = width;
  layer.height = height;
  const ctx = layer.getContext("2d", { willReadFrequently: true });
  ctx.drawImage(png, 0, 0, width, height);
  const pixels = ctx.getImageData(0, 0, width, height);
  const data = pixels.data;
  for (let i = 0; i < data.length; i += 4) {
    const value = data[i];
    if (value === 0 || value === 255) {
      data[i + 3] = 0;
      continue;
    }
    const [r, g, b] = colour(value - 1);
    data[i] = r;
    data[i + 1] = g;
    data[i + 2] = b;
    data[i + 3] = Math.round(MASK_ALPHA * 255);
  }
  ctx.putImageData(pixels, 0, 0);
  return layer;
}

async function analyse(file) {
  if (!file) return;
  setStatus(`Detecting objects in ${file.name}…`);
  const form = new FormData();
  form.append("image", file, file.name);
  try {
    const url = URL.createObjectURL(file);
    // Ask for every detection the model keeps: the slider filters them here.
    const [response, image] = await Promise.all([
      fetch("/v1/predict?score_threshold=0", { method: "POST", body: form }),
      decodeImage(url).catch(() => null).finally(() => URL.revokeObjectURL(url)),
    ]);
    const result = await response.json();
    if (!response.ok) {
      setStatus(`${file.name}: ${result.error}`, true);
      return;
    }
    if (image === null) {
      setStatus(`${file.name}: the server read it, but this browser cannot show it`, true);
      return;
    }
    const { width, height } = result.image;
    const overlay = result.mask ? await maskOverlay(result.mask, width, height) : null;
    current = { image, result, overlay, name: file.name };
    view.maskControl.hidden = overlay === null;
    draw();
  } catch (err) {
    setStatus(`${file.name}: ${err.message}`, true);
  }
}

// Show the image as large as the panel and most of the window allow (small images up to 3x).
function fitToView(width, height) {
  const room = view.drop.clientWidth - 4;
  const scale = Math.min(room / width, (0.8 * window.innerHeight) / height, 3);
  view.canvas.style.width = `${Math.round(width * scale)}px`;
  view.canvas.style.height = `${Math.round(height * scale)}px`;
}

function visibleDetections() {
  const threshold = Number(view.slider.value);
  return current.result.detections.filter((d) => d.score >= threshold);
}

function draw() {
  view.sliderValue.textContent = Number(view.slider.value).toFixed(2);
  if (current === null) return;
  const { image, result, overlay } = current;
  const { width, height } = result.image;
  const canvas = view.canvas;
  canvas.width = width;
  canvas.height = height;
  canvas.hidden = false;
  view.dropText.hidden = true;
  view.drop.classList.add("has-image");
  fitToView(width, height);
  const ctx = canvas.getContext("2d");
  ctx.drawImage(image, 0, 0, width, height);
  if (overlay && view.showMask.checked) ctx.drawImage(overlay, 0, 0);

  const shown = visibleDetections();
  const lineWidth = Math.max(2, Math.round(Math.max(width, height) / 250));
  const fontSize = Math.max(12, Math.round(Math.max(width, height) / 45));
  ctx.font = `${fontSize}px system-ui, sans-serif`;
  ctx.textBaseline = "top";
  // Lowest score first, so the most confident boxes end up on top.
  for (const det of [...shown].reverse()) {
    const [x1, y1, x2, y2] = det.box;
    ctx.strokeStyle = rgb(det.label);
    ctx.lineWidth = lineWidth;
    ctx.strokeRect(x1, y1, x2 - x1, y2 - y1);
    const text = `${det.class_name} ${det.score.toFixed(2)}`;
    const textWidth = ctx.measureText(text).width + 8;
    const textHeight = fontSize + 6;
    const top = y1 - lineWidth / 2 - textHeight >= 0 ? y1 - lineWidth / 2 - textHeight : y1 + lineWidth / 2;
    const left = Math.min(Math.max(x1 - lineWidth / 2, 0), Math.max(width - textWidth, 0));
    ctx.fillStyle = rgb(det.label);
    ctx.fillRect(left, top, textWidth, textHeight);
    ctx.fillStyle = "#fff";
    ctx.fillText(text, left + 4, top + 3);
  }

  view.list.replaceChildren(...shown.map((det) => {
    const item = document.createElement("li");
    item.dataset.label = det.label;
    item.dataset.score = det.score;
    item.dataset.color = colour(det.label).join(",");
    item.dataset.box = det.box.join(",");
    const name = document.createElement("span");
    name.textContent = det.class_name;
    const score = document.createElement("span");
    score.className = "score";
    score.textContent = det.score.toFixed(3);
    const box = document.createElement("span");
    box.className = "box";
    box.textContent = det.box.map((v) => v.toFixed(1)).join(", ");
    item.append(swatch(det.label), name, score, box);
    return item;
  }));
  const total = result.detections.length;
  const threshold = Number(view.slider.value).toFixed(2);
  setStatus(`${current.name}: ${shown.length} of ${total} detections with score ≥ ${threshold} · ` +
            `${width}×${height} px · model run ${result.timing_ms.model.toFixed(0)} ms ` +
            `(batch of ${result.batch_size})`);
}

view.file.addEventListener("change", () => analyse(view.file.files[0]));
view.slider.addEventListener("input", draw);
view.showMask.addEventListener("change", draw);
window.addEventListener("resize", draw);
for (const type of ["dragenter", "dragover"]) {
  view.drop.addEventListener(type, (event) => {
    event.preventDefault();
    view.drop.classList.add("dragging");
  });
}
for (const type of ["dragleave", "drop"]) {
  view.drop.addEventListener(type, () => view.drop.classList.remove("dragging"));
}
view.drop.addEventListener("drop", (event) => {
  event.preventDefault();
  analyse(event.dataTransfer.files[0]);
});

loadModel().catch((err) => setStatus(`cannot reach the service: ${err.message}`, true));
