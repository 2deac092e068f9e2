// BlazeFace short range (emotion/assets/face_detection_short_range.onnx: MediaPipe's model in ONNX) on faces' views,
// decoded as the server's emotion/blazeface.py does (MediaPipe's face_detection_short_range graph): 896 SSD anchors,
// boxes and six keypoints against them, sigmoid scores, weighted non-maximum suppression. Pure functions on plain
// arrays: tests/test_live.py runs them under Node against the Python code.

export const SIDE = 128;  // the model's input: views of this side
export const NMS_IOU = 0.3;  // MediaPipe's min_suppression_threshold for face detection

// The 896 anchor centres (x, y) in 0..1, in the model's output order: 16 x 16 cells x 2, then 8 x 8 cells x 6.
export const ANCHORS = [[16, 2], [8, 6]].flatMap(([grid, perCell]) => {
  const out = [];
  for (let y = 0; y < grid; y++) {
    for (let x = 0; x < grid; x++) {
      for (let k = 0; k < perCell; k++) out.push([(x + 0.5) / grid, (y + 0.5) / grid]);
    }
  }
  return out;
});

// Views ({data: RGBA, width: SIDE, height: SIDE}) -> the model's input: float32 (N, 128, 128, 3) RGB in [-1, 1].
export function toInput(views) {
  const plane = SIDE * SIDE, data = new Float32Array(views.length * plane * 3);
  views.forEach((view, n) => {
    for (let i = 0; i < plane; i++) {
      for (let c = 0; c < 3; c++) data[(n * plane + i) * 3 + c] = view.data[i * 4 + c] / 127.5 - 1;
    }
  });
  return {data, dims: [views.length, SIDE, SIDE, 3]};
}

// The model's outputs for N views (regressors (N, 896, 16), score logits (N, 896, 1)) -> per view its detections
// scoring at least `floor`: {box: [x, y, w, h] whole pixels, score, keypoints: six [x, y]} in view pixels, highest
// score first. Keypoints in MediaPipe's order: right eye, left eye, nose tip, mouth centre, right and left ear.
export function decode(regressors, logits, count, floor) {
  const out = [];
  for (let n = 0; n < count; n++) {
    const found = [];
    for (let a = 0; a < ANCHORS.length; a++) {
      const score = 1 / (1 + Math.exp(-Math.min(100, Math.max(-100, logits[n * ANCHORS.length + a]))));
      if (score < floor) continue;
      const r = regressors.subarray((n * ANCHORS.length + a) * 16, (n * ANCHORS.length + a + 1) * 16);
      const [ax, ay] = ANCHORS[a], cx = r[0] / SIDE + ax, cy = r[1] / SIDE + ay, hw = r[2] / SIDE / 2;
      const hh = r[3] / SIDE / 2;
      const points = [0, 1, 2, 3, 4, 5].map((k) => [(r[4 + 2 * k] / SIDE + ax) * SIDE,
                                                    (r[5 + 2 * k] / SIDE + ay) * SIDE]);
      found.push({corners: [(cx - hw) * SIDE, (cy - hh) * SIDE, (cx + hw) * SIDE, (cy + hh) * SIDE], score, points});
    }
    out.push(weightedNms(found));
  }
  return out;
}

// MediaPipe's WEIGHTED suppression: the best box and every box overlapping it by IoU > NMS_IOU become one
// detection, their corners and keypoints averaged with the scores as weights, the best one's score kept; the box in
// whole pixels, truncated, as MediaPipe's Tasks give it (the crops the models were trained on).
function weightedNms(found) {
  let order = found.map((_, i) => i).sort((a, b) => found[b].score - found[a].score);
  const out = [];
  while (order.length) {
    const top = found[order[0]];
    // The top box is in its cluster even when it is degenerate (no area: no IoU with itself).
    const joined = order.map((i, n) => n === 0 || iou(top.corners, found[i].corners) > NMS_IOU);
    const members = order.filter((_, n) => joined[n]).map((i) => found[i]);
    order = order.filter((_, n) => !joined[n]);
    const total = members.reduce((sum, f) => sum + f.score, 0);
    const mean = (get) => members.reduce((sum, f) => sum + get(f) * f.score / total, 0);
    const [x0, y0, x1, y1] = [0, 1, 2, 3].map((k) => mean((f) => f.corners[k]));
    out.push({box: [x0, y0, x1 - x0, y1 - y0].map(Math.trunc), score: top.score,
              keypoints: [0, 1, 2, 3, 4, 5].map((k) => [mean((f) => f.points[k][0]), mean((f) => f.points[k][1])])});
  }
  return out;
}

function iou(a, b) {  // corners (x0, y0, x1, y1)
  const w = Math.max(0, Math.min(a[2], b[2]) - Math.max(a[0], b[0]));
  const h = Math.max(0, Math.min(a[3], b[3]) - Math.max(a[1], b[1]));
  const inter = w * h;
  return inter / Math.max((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter, 1e-9);
}

// BlazeFace in an onnxruntime-web session: (views) -> per view its detections (see `decode`), all in one run.
export function runner(session, Tensor, floor) {
  return async (views) => {
    if (!views.length) return [];
    const input = toInput(views);
    const outputs = await session.run({[session.inputNames[0]]: new Tensor("float32", input.data, input.dims)});
    const [regressors, logits] = session.outputNames.map((name) => outputs[name].data);
    return decode(regressors, logits, views.length, floor);
  };
}
