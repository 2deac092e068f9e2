// A detected face -> the model's input, exactly as the server makes it (emotion/crops.py crop_face, then
// emotion/preprocess.py to_array), so that the page and /api/predict read the same pixels. Pure functions on plain
// arrays: tests/test_live.py runs them under Node against Pillow's output.

// Where the face's square crop lies in the frame: crop_face's geometry (margin around the box, centre moved by
// offsetY along the face's vertical axis, rotated so the eyes are level).
export function cropGeometry(box, keypoints, facts) {
  const [x, y, w, h] = box;
  const long = Math.max(w, h);
  const side = Math.max(1, pyRound(long * (1 + 2 * facts.crop_margin)));
  let angle = 0;
  if (facts.align_eyes && keypoints.length >= 2) {
    const [[rx, ry], [lx, ly]] = keypoints;  // the person's right eye (left in the picture), then the left eye
    angle = Math.atan2(ly - ry, lx - rx);
  }
  const cx = x + w / 2 - facts.crop_offset_y * long * Math.sin(angle);  // "down" in the face's frame: (-sin, cos)
  const cy = y + h / 2 + facts.crop_offset_y * long * Math.cos(angle);
  const reach = side / 2 * (Math.abs(Math.cos(angle)) + Math.abs(Math.sin(angle))) + 2;
  return {side, angle, cx, cy, x0: Math.floor(cx - reach), y0: Math.floor(cy - reach),
          x1: Math.ceil(cx + reach), y1: Math.ceil(cy + reach)};
}

// The square crop as gray levels (Uint8Array side*side). `rgba` holds the frame region [g.x0, g.x1) x [g.y0, g.y1)
// clipped to the frame: {data, left, top, width, height}; outside it the nearest edge pixel repeats (crop_face's
// padding). Pillow's affine BILINEAR samples at pixel centres and truncates; its "L" is ITU-R 601 in fixed point.
export function cropGray(rgba, g) {
  const {side, angle, cx, cy} = g;
  const cos = Math.cos(angle), sin = Math.sin(angle);
  const out = new Uint8Array(side * side);
  const rgb = [0, 0, 0];
  for (let v = 0; v < side; v++) {
    for (let u = 0; u < side; u++) {
      const du = u + 0.5 - side / 2, dv = v + 0.5 - side / 2;
      sampleRgb(rgba, cx + du * cos - dv * sin - 0.5, cy + du * sin + dv * cos - 0.5, rgb);
      out[v * side + u] = (rgb[0] * 19595 + rgb[1] * 38470 + rgb[2] * 7471 + 0x8000) >> 16;
    }
  }
  return out;
}

function sampleRgb(img, xin, yin, rgb) {
  const x = Math.floor(xin), y = Math.floor(yin), dx = xin - x, dy = yin - y;
  const cx0 = clamp(x - img.left, img.width), cx1 = clamp(x + 1 - img.left, img.width);
  const cy0 = clamp(y - img.top, img.height), cy1 = clamp(y + 1 - img.top, img.height);
  const d = img.data, w = img.width;
  for (let b = 0; b < 3; b++) {
    const p00 = d[(cy0 * w + cx0) * 4 + b], p01 = d[(cy0 * w + cx1) * 4 + b];
    const p10 = d[(cy1 * w + cx0) * 4 + b], p11 = d[(cy1 * w + cx1) * 4 + b];
    const v1 = p00 + (p01 - p00) * dx, v2 = p10 + (p11 - p10) * dx;
    rgb[b] = Math.trunc(v1 + (v2 - v1) * dy);
  }
}

// Pillow's Image.resize for 8-bit gray (separable: rows, then columns, rounded to 8 bits in between).
const FILTERS = {box: [0.5, (t) => (t > -0.5 && t <= 0.5 ? 1 : 0)],
                 bilinear: [1.0, (t) => Math.max(0, 1 - Math.abs(t))]};

export function resize(gray, w, h, outW, outH, filter) {
  let img = gray, width = w;
  if (outW !== w) {
    img = resamplePass(img, w, h, outW, filter, true);
    width = outW;
  }
  if (outH !== h) img = resamplePass(img, width, h, outH, filter, false);
  return img;
}

function resamplePass(src, w, h, outSize, filter, horizontal) {
  const inSize = horizontal ? w : h;
  const [support0, fn] = FILTERS[filter];
  const scale = inSize / outSize, filterScale = Math.max(scale, 1), support = support0 * filterScale;
  const out = new Uint8Array(horizontal ? outSize * h : w * outSize);
  const lines = horizontal ? h : w;
  for (let o = 0; o < outSize; o++) {
    const centre = (o + 0.5) * scale;
    const lo = Math.max(Math.trunc(centre - support + 0.5), 0);
    const hi = Math.min(Math.trunc(centre + support + 0.5), inSize);
    const weights = fixedPoint(lo, hi, (i) => fn((i - centre + 0.5) * (1 / filterScale)));
    for (let line = 0; line < lines; line++) {
      let acc = HALF;
      for (let i = lo; i < hi; i++) {
        acc += (horizontal ? src[line * w + i] : src[i * w + line]) * weights[i - lo];
      }
      out[horizontal ? line * outSize + o : o * w + line] = Math.min(255, Math.max(0, Math.floor(acc / ONE)));
    }
  }
  return out;
}

// Pillow's 8-bit resampling sums in fixed point: each weight, normalised, times 2^22 and rounded; the sum starts at
// half a unit and is floored (Resample.c, normalize_coeffs_8bpc and clip8).
const ONE = 2 ** 22, HALF = 2 ** 21;

function fixedPoint(lo, hi, weight) {
  const k = [];
  for (let i = lo; i < hi; i++) k.push(weight(i));
  const total = k.reduce((a, b) => a + b, 0);
  return k.map((v) => {
    const x = (total ? v / total : 0) * ONE;
    return Math.trunc(x < 0 ? x - 0.5 : x + 0.5);
  });
}

// to_model_pixels: to the training data's native size first (area-averaged when shrinking), then the input size.
export function modelPixels(gray, side, facts) {
  const n = facts.native_size, [, h, w] = facts.input_size;
  let img = gray, size = side;
  if (side !== n) {
    img = resize(img, side, side, n, n, side > n ? "box" : facts.interpolation);
    size = n;
  }
  if (size !== w || size !== h) img = resize(img, size, size, w, h, facts.interpolation);
  return img;
}

// to_array for `faces` (arrays of model pixels), then their mirror images (tta_flip, as the backends do): one batch,
// float32 (count, C, H, W), normalised by the model's mean and std.
export function toBatch(faces, facts, flip) {
  const [c, h, w] = facts.input_size, plane = h * w, n = faces.length * (flip ? 2 : 1);
  const data = new Float32Array(n * c * plane);
  faces.forEach((px, f) => {
    for (let ch = 0; ch < c; ch++) {
      const mean = facts.mean[ch], std = facts.std[ch];
      for (let y = 0; y < h; y++) {
        for (let x = 0; x < w; x++) {
          const value = (px[y * w + x] / 255 - mean) / std;
          data[(f * c + ch) * plane + y * w + x] = value;
          if (flip) data[((faces.length + f) * c + ch) * plane + y * w + (w - 1 - x)] = value;
        }
      }
    }
  });
  return {data, dims: [n, c, h, w]};
}

// calibration.served_logits with a flip_margin: the faces (rows of `logits`, `count` x labels) whose two highest
// logits, plus the logit bias, are closer than the margin; only their mirrors are run.
export function closeRows(logits, count, facts) {
  const k = facts.labels.length, rows = [];
  const bias = facts.labels.map((label) => facts.logit_bias[label] || 0);
  for (let f = 0; f < count; f++) {
    const z = Array.from({length: k}, (_, j) => logits[f * k + j] + bias[j]).sort((a, b) => b - a);
    if (k > 1 && z[0] - z[1] < facts.flip_margin) rows.push(f);
  }
  return rows;
}

// The mirror images of `rows` of a batch of faces (toBatch's, without mirrors): a batch of rows.length.
export function mirrorRows(batch, rows) {
  const [, c, h, w] = batch.dims, size = c * h * w, data = new Float32Array(rows.length * size);
  rows.forEach((f, r) => {
    for (let i = 0; i < c * h; i++) {
      for (let x = 0; x < w; x++) data[r * size + i * w + (w - 1 - x)] = batch.data[f * size + i * w + x];
    }
  });
  return {data, dims: [rows.length, c, h, w]};
}

// The faces' logits with each of `rows` averaged with its mirror's (`mirrored`, in the order of `rows`), in float32.
export function withMirrors(logits, mirrored, rows, k) {
  const out = Float32Array.from(logits);
  rows.forEach((f, r) => {
    for (let j = 0; j < k; j++) out[f * k + j] = (logits[f * k + j] + mirrored[r * k + j]) / 2;
  });
  return out;
}

// face_logits + Predictor.probabilities: mirror-averaged logits, plus the logit bias, over the temperature, softmax.
export function probabilities(logits, count, facts, flip) {
  const k = facts.labels.length, out = [];
  const bias = facts.labels.map((label) => facts.logit_bias[label] || 0);
  for (let f = 0; f < count; f++) {
    const z = [];
    for (let j = 0; j < k; j++) {
      const l = flip ? (logits[f * k + j] + logits[(count + f) * k + j]) / 2 : logits[f * k + j];
      z.push((l + bias[j]) / facts.temperature);
    }
    const top = Math.max(...z), e = z.map((v) => Math.exp(v - top)), sum = e.reduce((a, b) => a + b, 0);
    out.push(e.map((v) => v / sum));
  }
  return out;
}

function clamp(i, n) {
  return i < 0 ? 0 : i >= n ? n - 1 : i;
}

// Python's round(): halves go to the even neighbour (crop_face's side uses it).
export function pyRound(v) {
  const r = Math.round(v);
  return Math.abs(v % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}
