// The page: load a fused graph, explain an image, draw the map of the chosen class.
// Tests read window.reciprocam (state, topClass, scores, maps, grid, ...).
import * as ort from "./node_modules/onnxruntime-web/dist/ort.webgpu.min.mjs";
import { blend, cropPlacement, graphInfo, inputData, softmax, topK } from "./reciprocam.js";

const EXAMPLES = ["star", "circle", "triangle", "ring", "arrow", "crescent", "two_objects"];
const PARAMS = new URLSearchParams(location.search);
const DEFAULT_GRAPH = PARAMS.get("graph") ?? "shapes_vit.explain.onnx";
const BACKEND = PARAMS.get("backend") ?? "auto"; // auto (WebGPU where the browser has it), webgpu or wasm

const $ = (id) => document.getElementById(id);
const page = (window.reciprocam = { state: "loading" });
let graph = null; // {session, info}
let image = null; // {bitmap, name}
let result = null; // {pixels: ImageData of the fitted image, maps: Float32Array [C, h, w], top5}

function status(text, error = false) {
  $("status").textContent = text;
  $("status").title = text;
  $("status").className = error ? "error" : "";
  page.status = text;
  if (error) page.state = "error";
}

async function loadGraph(bytes, name) {
  status(`Loading ${name}…`);
  graph = null;
  const info = graphInfo(bytes);
  const { session, backend } = await createSession(bytes);
  for (const output of ["logits", "saliency"]) {
    if (!session.outputNames.includes(output)) throw new Error(`${name} has no "${output}" output: not a fused graph`);
  }
  graph = { session, info };
  page.backend = backend;
  $("graph-name").textContent = `${name}: ${info.labels.length} classes, ${info.width}x${info.height} input, ${backend}`;
  status(`${name} loaded; pick an image.`);
  page.state = "ready";
  if (image) await explain();
}

// WebGPU where the browser offers an adapter (ops it lacks run on WASM), else WASM.
async function createSession(bytes) {
  const gpu = BACKEND !== "wasm" && navigator.gpu && (await navigator.gpu.requestAdapter()) !== null;
  if (BACKEND === "webgpu" && !gpu) throw new Error("this browser offers no WebGPU adapter (backend=webgpu was asked)");
  if (gpu) {
    try {
      return { session: await ort.InferenceSession.create(bytes, { executionProviders: ["webgpu", "wasm"] }), backend: "WebGPU" };
    } catch (error) {
      if (BACKEND === "webgpu") throw error;
      console.warn(`WebGPU could not load the graph, using WASM: ${error.message}`);
    }
  }
  return { session: await ort.InferenceSession.create(bytes, { executionProviders: ["wasm"] }), backend: "WASM" };
}

async function loadImage(blob, name) {
  image = { bitmap: await createImageBitmap(blob, { colorSpaceConversion: "none", premultiplyAlpha: "none" }), name };
  if (graph) await explain();
  else status(`${name} loaded; open a fused graph to explain it.`);
}

async function explain() {
  const { session, info } = graph;
  const { bitmap, name } = image;
  page.state = "running";
  status(`Explaining ${name}…`);
  // fit the image to the model's size: the crop of io/images.py (a canvas resize, not OpenCV's)
  const canvas = $("picture");
  [canvas.width, canvas.height] = [info.width, info.height];
  const context = canvas.getContext("2d", { willReadFrequently: true });
  const place = cropPlacement(bitmap.width, bitmap.height, info.width, info.height);
  context.imageSmoothingQuality = "high";
  context.drawImage(bitmap, place.x, place.y, place.w, place.h);
  const pixels = context.getImageData(0, 0, info.width, info.height);

  const dims = info.layout === "NHWC" ? [1, info.height, info.width, 3] : [1, 3, info.height, info.width];
  const input = new ort.Tensor(info.dtype, inputData(pixels.data, info), dims);
  const started = performance.now();
  const inputName = info.inputName ?? session.inputNames[0];
  const { logits, saliency } = await session.run({ [inputName]: input }, ["logits", "saliency"]);
  const seconds = (performance.now() - started) / 1000;

  const scores = softmax(logits.data);
  const [, classes, h, w] = saliency.dims;
  result = { pixels, maps: saliency.data, top5: topK(scores) };
  const top = result.top5[0].index;
  Object.assign(page, {
    topClass: top,
    label: info.labels[top],
    scores,
    grid: [h, w],
    maps: Array.from({ length: classes }, (_, k) => Array.from(saliency.data.subarray(k * h * w, (k + 1) * h * w))),
  });
  fillClasses(info.labels, top);
  show(top);
  $("drop").classList.add("has-image");
  status(`${name}: ${info.labels[top]} (${(100 * scores[top]).toFixed(1)} %), explained in ${seconds.toFixed(2)} s (${page.backend})`);
  page.state = "done";
}

// Draw the map of class k over the fitted image: no new run, the graph gave every class's map.
function show(k) {
  const { pixels, maps } = result;
  const [h, w] = page.grid;
  const { width, height } = pixels;
  const blended = new ImageData(new Uint8ClampedArray(pixels.data), width, height);
  blend(blended.data, maps.subarray(k * h * w, (k + 1) * h * w), h, w, height, width, Number($("alpha").value));
  $("picture").getContext("2d").putImageData(blended, 0, 0);
  page.classShown = k;
  $("class").value = String(k);
  const labels = graph.info.labels;
  $("top5").replaceChildren(
    ...result.top5.map(({ index, score }) => {
      const item = document.createElement("li");
      item.className = index === k ? "chosen" : "";
      item.innerHTML = `<b></b><span class="score" style="width:${Math.max(1, 80 * score)}px"></span>`;
      item.firstChild.textContent = labels[index];
      item.append(`${(100 * score).toFixed(2)} %`);
      item.onclick = () => show(index);
      return item;
    }),
  );
}

function fillClasses(labels, chosen) {
  const select = $("class");
  select.replaceChildren(...labels.map((label, k) => new Option(`${k}: ${label}`, String(k), false, k === chosen)));
  select.disabled = false;
}

// Every action reports its error on the status line.
const guarded = (action) => (...args) => action(...args).catch((err) => status(`Error: ${err.message}`, true));
const openGraph = guarded(async (file) => loadGraph(new Uint8Array(await file.arrayBuffer()), file.name));
const openImage = guarded(loadImage);
const openExample = guarded(async (name) => {
  const response = await fetch(`../images/${name}.png`);
  if (!response.ok) throw new Error(`../images/${name}.png: HTTP ${response.status}`);
  await loadImage(await response.blob(), `${name}.png`);
});

for (const name of EXAMPLES) {
  const button = document.createElement("button");
  button.textContent = name.replace("_", " ");
  button.id = `example-${name}`;
  button.onclick = () => openExample(name);
  $("examples").append(button);
}
$("image-file").onchange = (e) => e.target.files[0] && openImage(e.target.files[0], e.target.files[0].name);
$("graph-file").onchange = (e) => e.target.files[0] && openGraph(e.target.files[0]);
$("class").onchange = (e) => show(Number(e.target.value));
$("alpha").oninput = () => result && show(page.classShown);
const drop = $("drop");
drop.ondragover = (e) => (e.preventDefault(), drop.classList.add("over"));
drop.ondragleave = () => drop.classList.remove("over");
drop.ondrop = (e) => {
  e.preventDefault();
  drop.classList.remove("over");
  const file = e.dataTransfer.files[0];
  if (file) (file.name.endsWith(".onnx") ? openGraph(file) : openImage(file, file.name));
};

guarded(async () => {
  const response = await fetch(DEFAULT_GRAPH);
  if (!response.ok) throw new Error(`${DEFAULT_GRAPH}: HTTP ${response.status} (run serve.py, or open a fused graph)`);
  await loadGraph(new Uint8Array(await response.arrayBuffer()), DEFAULT_GRAPH.split("/").pop());
})();
