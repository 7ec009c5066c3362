// Explain one image with a fused reciprocam-onnx graph, from Node.js.
//
//   node explain.mjs MODEL.onnx IMAGE.npy MAP.npy
//
// IMAGE.npy: float32 [1, 3, H, W] (or [3, H, W]), already normalised (Python writes it).
// Prints {"class": k, "label": ..., "score": ...} and writes the predicted class's
// saliency map, float32 [h, w], to MAP.npy.
import { readFileSync, writeFileSync, renameSync } from "node:fs";
import * as ort from "onnxruntime-node";

function readNpy(path) {
  const buf = readFileSync(path);
  if (buf.toString("latin1", 1, 6) !== "NUMPY") throw new Error(`${path} is not a .npy file`);
  const major = buf[6];
  const headerLen = major === 1 ? buf.readUInt16LE(8) : buf.readUInt32LE(8);
  const start = (major === 1 ? 10 : 12) + headerLen;
  const header = buf.toString("latin1", major === 1 ? 10 : 12, start);
  if (!header.includes("'descr': '<f4'") || header.includes("'fortran_order': True")) {
    throw new Error(`${path} must hold little-endian float32 in C order`);
  }
  const shape = header.match(/'shape': \(([^)]*)\)/)[1].split(",").filter((s) => s.trim()).map(Number);
  const data = new Float32Array(buf.buffer.slice(buf.byteOffset + start, buf.byteOffset + buf.length));
  return { data, shape };
}

function writeNpy(path, data, shape) {
  let header = `{'descr': '<f4', 'fortran_order': False, 'shape': (${shape.join(", ")},), }`;
  header += " ".repeat(63 - ((10 + header.length) % 64)) + "\n";
  const head = Buffer.alloc(10);
  head.write("\x93NUMPY", 0, "latin1");
  head[6] = 1;
  head[7] = 0;
  head.writeUInt16LE(header.length, 8);
  const body = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  writeFileSync(`${path}.tmp`, Buffer.concat([head, Buffer.from(header, "latin1"), body]));
  renameSync(`${path}.tmp`, path); // atomic: no half-written map
}

function labelsOf(session) {
  const raw = session.handler?.metadata?.customMetadataMap?.labels;
  try { return raw ? JSON.parse(raw) : null; } catch { return null; }
}

async function main() {
  const [modelPath, imagePath, mapPath] = process.argv.slice(2);
  if (!mapPath) {
    console.error("usage: node explain.mjs MODEL.onnx IMAGE.npy MAP.npy");
    process.exit(2);
  }
  const image = readNpy(imagePath);
  const shape = image.shape.length === 3 ? [1, ...image.shape] : image.shape;
  const session = await ort.InferenceSession.create(modelPath);
  const feeds = { [session.inputNames[0]]: new ort.Tensor("float32", image.data, shape) };
  const { logits, saliency } = await session.run(feeds, ["logits", "saliency"]);
  const scores = Array.from(logits.data);
  const top = scores.indexOf(Math.max(...scores));
  const [, classes, h, w] = saliency.dims;
  const map = saliency.data.slice(top * h * w, (top + 1) * h * w);
  writeNpy(mapPath, map, [h, w]);
  const labels = labelsOf(session);
  const shifted = scores.map((s) => Math.exp(s - scores[top]));
  const total = shifted.reduce((a, b) => a + b, 0);
  console.log(JSON.stringify({ class: top, label: labels ? labels[top] : String(top), score: 1 / total, classes }));
}

main().catch((err) => {
  console.error(`error: ${err.message}`);
  process.exit(1);
});
