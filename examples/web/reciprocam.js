// What the page needs from a fused graph, with no DOM: its metadata, the input tensor, the results.
// Mirrors reciprocam_onnx/io/images.py (preprocessing) and io/overlay.py (the picture).

const IMAGENET_MEAN = [0.485, 0.456, 0.406];
const IMAGENET_STD = [0.229, 0.224, 0.225];

// --- ONNX metadata: ModelProto field 14 holds StringStringEntryProto {1: key, 2: value} -------------

function readVarint(bytes, at) {
  let value = 0;
  for (let scale = 1; ; scale *= 128) {
    if (at >= bytes.length) throw new Error("truncated protobuf");
    const byte = bytes[at++];
    value += (byte & 0x7f) * scale;
    if (byte < 0x80) return [value, at];
  }
}

// Yield [field, wireType, payload] for each field of one protobuf message (payload: bytes or a number).
function* fields(bytes) {
  let at = 0;
  while (at < bytes.length) {
    let tag, length;
    [tag, at] = readVarint(bytes, at);
    const field = Math.floor(tag / 8), wire = tag % 8;
    if (wire === 0) {
      let value;
      [value, at] = readVarint(bytes, at);
      yield [field, wire, value];
    } else if (wire === 2) {
      [length, at] = readVarint(bytes, at);
      if (at + length > bytes.length) throw new Error("truncated protobuf");
      yield [field, wire, bytes.subarray(at, at + length)];
      at += length;
    } else if (wire === 1 || wire === 5) {
      at += wire === 1 ? 8 : 4;
    } else {
      throw new Error(`not an ONNX model (protobuf wire type ${wire})`);
    }
  }
}

/** The model's metadata_props as {key: value}. */
export function onnxMetadata(bytes) {
  const text = new TextDecoder();
  const props = {};
  for (const [field, wire, entry] of fields(bytes)) {
    if (field !== 14 || wire !== 2) continue;
    let key = "", value = "";
    for (const [f, w, payload] of fields(entry)) {
      if (w === 2 && f === 1) key = text.decode(payload);
      if (w === 2 && f === 2) value = text.decode(payload);
    }
    props[key] = value;
  }
  return props;
}

/** What the page needs from a fused graph's "reciprocam.split" metadata; throws if it is not one. */
export function graphInfo(bytes) {
  const raw = onnxMetadata(bytes)["reciprocam.split"];
  if (!raw) throw new Error("not a fused graph: no reciprocam.split metadata (make one with `reciprocam fuse`)");
  const split = JSON.parse(raw);
  const model = split.model ?? {};
  const [, height, width] = split.input_shape;
  const classes = split.classes ?? split.output_shape?.[0];
  return {
    inputName: split.input_name,
    height,
    width,
    layout: split.input_layout ?? "NCHW",
    dtype: split.input_dtype ?? "float32",
    mean: model.mean ?? IMAGENET_MEAN,
    std: model.std ?? IMAGENET_STD,
    labels: model.labels ?? Array.from({ length: classes }, (_, k) => String(k)),
    grid: split.grid,
  };
}

// --- Preprocessing (io/images.py: fit_image "crop", then normalise) --------------------------------

/** Where the image lands on a height x width canvas: scale the shorter side to fit, centre-crop. */
export function cropPlacement(imageWidth, imageHeight, width, height) {
  if (imageWidth === width && imageHeight === height) return { x: 0, y: 0, w: width, h: height };
  const scale = Math.max(height / imageHeight, width / imageWidth);
  const w = Math.max(width, Math.round(imageWidth * scale));
  const h = Math.max(height, Math.round(imageHeight * scale));
  return { x: -Math.floor((w - width) / 2), y: -Math.floor((h - height) / 2), w, h };
}

/** RGBA pixels (ImageData.data) of the fitted image as the model's input data: normalised float32
 * (or raw uint8 when the model takes pixels), in its layout. */
export function inputData(rgba, info) {
  const count = info.height * info.width;
  const out = info.dtype === "uint8" ? new Uint8Array(3 * count) : new Float32Array(3 * count);
  const float = info.dtype !== "uint8";
  for (let i = 0; i < count; i++) {
    for (let c = 0; c < 3; c++) {
      const pixel = rgba[4 * i + c];
      const f = Math.fround; // rounding each step to float32: numpy's float32 arithmetic
      const value = float ? f(f(f(pixel / 255) - f(info.mean[c])) / f(info.std[c])) : pixel;
      out[info.layout === "NHWC" ? 3 * i + c : c * count + i] = value;
    }
  }
  return out;
}

// --- Results -----------------------------------------------------------------------------------------

/** Softmax of the logits, in double precision. */
export function softmax(logits) {
  const top = Math.max(...logits);
  const shifted = Array.from(logits, (v) => Math.exp(v - top));
  const total = shifted.reduce((a, b) => a + b, 0);
  return shifted.map((v) => v / total);
}

/** The k best classes as [{index, score}], best first. */
export function topK(scores, k = 5) {
  return scores.map((score, index) => ({ index, score })).sort((a, b) => b.score - a.score).slice(0, k);
}

// --- The picture (io/overlay.py): bicubic upsampling, OpenCV's JET, 50/50 blend ---------------------

function cubicWeights(t) {
  const a = -0.75; // OpenCV's INTER_CUBIC
  const w = (x) => (x <= 1 ? ((a + 2) * x - (a + 3)) * x * x + 1 : ((a * x - 5 * a) * x + 8 * a) * x - 4 * a);
  return [w(1 + t), w(t), w(1 - t), w(2 - t)];
}

/** A [h, w] map (row-major) upsampled to height x width, clipped to [0, 1]. */
export function upsample(map, h, w, height, width) {
  const at = (y, x) => map[Math.min(h - 1, Math.max(0, y)) * w + Math.min(w - 1, Math.max(0, x))];
  const out = new Float32Array(height * width);
  for (let Y = 0; Y < height; Y++) {
    const sy = ((Y + 0.5) * h) / height - 0.5, y0 = Math.floor(sy), wy = cubicWeights(sy - y0);
    for (let X = 0; X < width; X++) {
      const sx = ((X + 0.5) * w) / width - 0.5, x0 = Math.floor(sx), wx = cubicWeights(sx - x0);
      let sum = 0;
      for (let i = 0; i < 4; i++) {
        for (let j = 0; j < 4; j++) sum += wy[i] * wx[j] * at(y0 - 1 + i, x0 - 1 + j);
      }
      out[Y * width + X] = Math.min(1, Math.max(0, sum));
    }
  }
  return out;
}

/** OpenCV's COLORMAP_JET as [r, g, b] for a level 0..255 (within one level of OpenCV's table). */
export function jet(level) {
  const x = level / 255;
  const channel = (c) => Math.round(255 * Math.min(1, Math.max(0, Math.min(4 * x - c + 1.5, c + 1.5 - 4 * x))));
  return [channel(3), channel(2), channel(1)];
}

/** Blend the coloured map over RGBA pixels, in place: alpha * heat + (1 - alpha) * image. */
export function blend(rgba, map, h, w, height, width, alpha = 0.5) {
  const heat = upsample(map, h, w, height, width);
  for (let i = 0; i < height * width; i++) {
    const colour = jet(Math.round(heat[i] * 255));
    for (let c = 0; c < 3; c++) rgba[4 * i + c] = Math.round(alpha * colour[c] + (1 - alpha) * rgba[4 * i + c]);
  }
  return rgba;
}
