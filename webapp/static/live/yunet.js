// YuNet (libfacedetection 2023mar, emotion/assets/face_detection_yunet_2023mar.onnx) in the page: a frame -> the
// network's input, its outputs -> faces, as the server's emotion/yunet.py does (which follows OpenCV's
// FaceDetectorYN). Pure functions on plain arrays: tests/test_live.py runs them under Node against the Python code
// and cv2.FaceDetectorYN.

export const STRIDES = [8, 16, 32];
export const DIVISOR = 32;  // the input's sides must be multiples of the largest stride
export const NMS_IOU = 0.3;  // OpenCV's default for FaceDetectorYN
export const TOP_K = 5000;  // candidates kept per stride and for NMS, as OpenCV
export const OUTPUTS = ["cls", "obj", "bbox", "kps"].flatMap((kind) => STRIDES.map((s) => `${kind}_${s}`));

// The padded input size for an image of width x height: each side up to a multiple of 32.
export function paddedSize(width, height) {
  return [Math.ceil(width / DIVISOR) * DIVISOR, Math.ceil(height / DIVISOR) * DIVISOR];
}

// RGBA pixels (width x height) -> float32 (1, 3, padH, padW): BGR, 0-255 (what YuNet was trained on), black below
// and to the right, as OpenCV pads.
export function toInput(rgba, width, height) {
  const [padW, padH] = paddedSize(width, height), plane = padW * padH;
  const data = new Float32Array(3 * plane);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const i = (y * width + x) * 4, o = y * padW + x;
      data[o] = rgba[i + 2];
      data[plane + o] = rgba[i + 1];
      data[2 * plane + o] = rgba[i];
    }
  }
  return {data, dims: [1, 3, padH, padW]};
}

// The network's outputs ({name: Float32Array}) for a padW x padH input -> faces scoring at least minScore, highest
// first, after NMS: rows [x, y, w, h, right eye x, y, left eye x, y, nose tip x, y, right mouth corner x, y, left
// mouth corner x, y, score] in input pixels ("right" is the person's right: the left of the picture).
export function decode(outputs, padW, padH, minScore) {
  const rows = STRIDES.flatMap((s) => decodeStride(outputs, s, padH / s, padW / s, minScore));
  return nms(rows, NMS_IOU);
}

// One stride's candidates: one prior per cell; score sqrt(cls * obj) (each clipped to 0..1); box centre
// (cell + offset) * stride, size exp(.) * stride; landmarks (cell + offset) * stride.
function decodeStride(outputs, stride, rows, cols, minScore) {
  const cls = outputs[`cls_${stride}`], obj = outputs[`obj_${stride}`];
  const bbox = outputs[`bbox_${stride}`], kps = outputs[`kps_${stride}`];
  let keep = [];
  for (let i = 0; i < rows * cols; i++) {
    const score = Math.sqrt(clip01(cls[i]) * clip01(obj[i]));
    if (score >= minScore) keep.push([i, score]);
  }
  if (keep.length > TOP_K) keep = keep.sort((a, b) => b[1] - a[1]).slice(0, TOP_K);
  return keep.map(([i, score]) => {
    const c = i % cols, r = Math.floor(i / cols);
    const w = Math.exp(bbox[i * 4 + 2]) * stride, h = Math.exp(bbox[i * 4 + 3]) * stride;
    const row = [(c + bbox[i * 4]) * stride - w / 2, (r + bbox[i * 4 + 1]) * stride - h / 2, w, h];
    for (let n = 0; n < 5; n++) row.push((kps[i * 10 + 2 * n] + c) * stride, (kps[i * 10 + 2 * n + 1] + r) * stride);
    row.push(score);
    return row;
  });
}

// Greedy NMS, highest score first (ties in the order given): a box overlapping a kept one by IoU > threshold goes.
export function nms(rows, threshold) {
  const order = rows.map((_, i) => i).sort((a, b) => rows[b][14] - rows[a][14]).slice(0, TOP_K);
  const kept = [];
  for (const i of order) {
    if (kept.every((j) => iou(rows[i], rows[j]) <= threshold)) kept.push(i);
  }
  return kept.map((i) => rows[i]);
}

function iou(a, b) {
  const w = Math.max(0, Math.min(a[0] + a[2], b[0] + b[2]) - Math.max(a[0], b[0]));
  const h = Math.max(0, Math.min(a[1] + a[3], b[1] + b[3]) - Math.max(a[1], b[1]));
  const inter = w * h;
  return inter / Math.max(a[2] * a[3] + b[2] * b[3] - inter, 1e-9);
}

function clip01(v) {
  return v < 0 ? 0 : v > 1 ? 1 : v;
}

// YuNet in an onnxruntime-web session: (image {data: RGBA, width, height}, minScore) -> rows (see `decode`), in the
// image's pixels. What faces.js's search runs on the frame and on each view.
export function runner(session, Tensor) {
  return async (image, minScore) => {
    const input = toInput(image.data, image.width, image.height);
    const outputs = await session.run({input: new Tensor("float32", input.data, input.dims)});
    const data = Object.fromEntries(OUTPUTS.map((name) => [name, outputs[name].data]));
    return decode(data, input.dims[3], input.dims[2], minScore);
  };
}
