// The server's face search (emotion/faces.py FaceDetector, range "auto") on a webcam frame. YuNet on the frame
// shrunk to `near_side` finds the candidates; each is looked at once more in its view (a `view_side` square in
// which it fills `view_fill`) by BlazeFace short range, whose box, eyes and calibrated score are the face's: what
// the models' crops were cut from and levelled by (where BlazeFace sees nothing, YuNet's view decides). A frame
// that shows no portrait (one or two faces, each at least `portrait_fraction` of its long side) gets a second pass
// on the whole frame for smaller faces (a webcam's 640 px as they are). So the page finds the server's faces, with
// its boxes, and cuts its crops.
// `facts` is config.json's detector (webapp/live.py reads them from emotion/faces.py); `run.yunet(image, minScore)`
// gives YuNet's rows (yunet.js), `run.blazeface(views)` BlazeFace's detections in each view [{box: [x, y, w, h],
// score, keypoints}] (blazeface.js). Pure but for those: tests/test_live.py runs it against the server.
import {pyRound, resize} from "./pixels.js";

// image: {data: RGBA, width, height}. Returns the faces kept ({box: [x, y, w, h] integers, score, keypoints: [x, y]
// in MediaPipe's order}), at most max_faces of the highest scores, left to right.
export async function findFaces(image, facts, run) {
  const long = Math.max(image.width, image.height);
  let found = await confirmed(image, await searched(image, facts.near_side, facts, run), [], facts, run);
  if (!portrait(found, facts, long)) {  // the whole-frame pass: views from the frame itself, as the server cuts them
    const pass = await searched(image, detectSide(long, facts), facts, run);
    found = await confirmed(image, {...pass, work: null}, found, facts, run);
  }
  return kept(found, facts.min_score, facts.max_faces);
}

// For the frames between full searches (faces.FaceDetector.follow, as the server reads a video's frames): the near
// pass (a new face near the camera is found at once) and a view around each of `boxes` (the previous frame's
// faces), no second pass: a new small face waits for the next full search.
export async function followFaces(image, boxes, facts, run) {
  const near = await confirmed(image, await searched(image, facts.near_side, facts, run), [], facts, run);
  const hints = boxes.map((box) => ({box, score: 1, keypoints: []}));
  return kept(await confirmed(image, {work: image, candidates: hints}, near, facts, run), facts.min_score,
              facts.max_faces);
}

// The long side the whole-frame pass runs at (FaceDetector.detect_side): enough for faces of min_face px, kept
// within detect_side .. max_detect_side, never above the frame's own.
function detectSide(long, facts) {
  const wanted = pyRound(long * facts.min_input_face / facts.min_face);
  return Math.max(facts.min_side, Math.min(long, Math.max(facts.detect_side, Math.min(facts.max_detect_side, wanted))));
}

// One pass: YuNet on the image resized to a long side of `side` (faces._pass): the image it ran on and its
// candidates, in the frame's pixels.
async function searched(image, side, facts, run) {
  const long = Math.max(image.width, image.height);
  const work = shrunk(image, Math.max(facts.min_side, Math.min(side, long)), facts.side_slack);
  const scale = [image.width / work.width, image.height / work.height];
  const rows = await run.yunet(work, facts.candidate_score);
  return {work, candidates: rows.map((row) => squareFace(row, scale, [0, 0], image, facts))};
}

// `found` plus the pass's new candidates (not overlapping a face found) that their view confirms (faces._confirm).
async function confirmed(image, {work, candidates}, found, facts, run) {
  const fresh = nms(candidates, facts.merge_iou)
    .filter((c) => found.every((f) => iou(c.box, f.box) <= facts.merge_iou)).slice(0, facts.max_candidates);
  const seen = await viewed(image, work, fresh, facts, run);
  return nms([...found, ...seen.filter((f) => f)], facts.merge_iou);
}

// Each candidate as BlazeFace sees it in its view, all in one run: the face found there, in frame pixels, or null
// where the view shows no face where the candidate was; where BlazeFace sees nothing (dark glasses, a mask), YuNet's
// own run on the view decides (faces.FaceDetector._views).
async function viewed(image, work, candidates, facts, run) {
  if (!candidates.length) return [];
  const source = viewSource(image, work, candidates, facts);
  const cut = candidates.map((c) => view(source, image, c, facts));
  const found = await run.blazeface(cut.map((c) => c.pixels));
  const out = [];
  for (const [i, {pixels, scale, offset}] of cut.entries()) {
    let match = matching(found[i].map((d) => inFrame(d, scale, offset, image, facts)), candidates[i], facts);
    if (!match) {
      const rows = await run.yunet(pixels, facts.view_floor);
      const faces = rows.map((row) => yunetFace(squareFace(row, scale, offset, image, facts), facts));
      match = matching(faces, candidates[i], facts);
    }
    out.push(match);
  }
  return out;
}

// The smallest image to cut the candidates' views from in which the smallest of them still fills its view: the
// pass's image (null for the whole-frame pass), the frame reduced by a whole factor, or the frame
// (faces.view_source). The server shrinks a frame larger than that pass's side with OpenCV's bilinear resize for
// YuNet, this page with Pillow's BOX; the 640x480 frames the page asks the camera for are not shrunk on either side.
function viewSource(image, work, candidates, facts) {
  const need = facts.view_side * facts.view_fill;
  const smallest = Math.min(...candidates.map((c) => Math.max(c.box[2], c.box[3])));
  if (work && smallest * work.width / image.width >= need) return work;
  const factor = pyFloorDiv(smallest, need);
  return factor >= 2 ? reduced(image, factor) : image;
}

// A candidate's view: a view_side square in which it fills view_fill, cut from `source` (the frame at some scale;
// black outside, as BlazeFace's letterbox), with the scale and offset from its pixels to the frame's (faces.view).
function view(source, image, face, facts) {
  const [x, y, w, h] = face.box, k = source.width / image.width;
  const side = Math.max(w, h) / facts.view_fill * k, cx = (x + w / 2) * k, cy = (y + h / 2) * k;
  const x0 = pyRound(cx - side / 2), y0 = pyRound(cy - side / 2);
  const x1 = Math.max(x0 + 1, pyRound(cx + side / 2)), y1 = Math.max(y0 + 1, pyRound(cy + side / 2));
  return {pixels: cropResized(source, x0, y0, x1, y1, facts.view_side),
          scale: [(x1 - x0) / facts.view_side / k, (y1 - y0) / facts.view_side / k], offset: [x0 / k, y0 / k]};
}

// Python's a // b for positive floats, computed as its float_divmod does (through fmod).
function pyFloorDiv(a, b) {
  const div = (a - (a % b)) / b, floor = Math.floor(div);
  return div - floor > 0.5 ? floor + 1 : floor;
}

function matching(seen, face, facts) {  // faces._matching: the face seen where the candidate was, or null
  let match = null, best = -1;
  for (const f of seen) {
    const overlap = iou(f.box, face.box);
    if (overlap > best) [match, best] = [f, overlap];
  }
  return match && best >= facts.view_match_iou ? match : null;
}

// A face only YuNet's view saw: its score calibrated on YuNet's scale, and four keypoints in MediaPipe's order (eyes,
// nose tip, mouth centre: the middle of its mouth corners). faces._yunet_face.
function yunetFace(face, facts) {
  const [re, le, nose, [rx, ry], [lx, ly]] = face.keypoints;
  return {box: face.box, score: calibrated(face.score, facts.yunet_operating_point),
          keypoints: [re, le, nose, [(rx + lx) / 2, (ry + ly) / 2]]};
}

function portrait(faces, facts, long) {  // faces._portrait
  const sides = faces.filter((f) => f.score >= facts.min_score).map((f) => Math.max(f.box[2], f.box[3]));
  return sides.length > 0 && sides.length <= facts.portrait_faces
    && Math.min(...sides) >= facts.portrait_fraction * long;
}

// A BlazeFace detection in a view whose pixel (u, v) is the frame's (u * sx + dx, v * sy + dy) -> a face in frame
// pixels, its box clipped to the frame and its score calibrated (faces._in_photo).
export function inFrame({box, score, keypoints}, [sx, sy], [dx, dy], {width, height}, facts) {
  const x0 = pyRound(box[0] * sx + dx), y0 = pyRound(box[1] * sy + dy);
  const x1 = pyRound((box[0] + box[2]) * sx + dx), y1 = pyRound((box[1] + box[3]) * sy + dy);
  const left = Math.max(0, x0), top = Math.max(0, y0);
  return {box: [left, top, Math.min(width, x1) - left, Math.min(height, y1) - top],
          score: calibrated(score, facts.operating_point),
          keypoints: keypoints.map(([x, y]) => [x * sx + dx, y * sy + dy])};
}

// One YuNet row from an image whose pixel (u, v) is the frame's (u * sx + dx, v * sy + dy) -> a candidate in frame
// pixels: BlazeFace's square box (side square_side * sqrt(w h), centre square_down * sqrt(w h) below YuNet's along
// the face's own vertical axis, so that its view frames it as BlazeFace expects), clipped to the frame; YuNet's
// five landmarks and raw score (faces.square_face).
export function squareFace(row, [sx, sy], [dx, dy], {width, height}, facts) {
  const x = row[0] * sx + dx, y = row[1] * sy + dy, w = row[2] * sx, h = row[3] * sy;
  const keypoints = [0, 1, 2, 3, 4].map((n) => [row[4 + 2 * n] * sx + dx, row[5 + 2 * n] * sy + dy]);
  const [[rx, ry], [lx, ly]] = keypoints;
  const angle = Math.atan2(ly - ry, lx - rx), unit = Math.sqrt(Math.max(w * h, 0)), side = facts.square_side * unit;
  const cx = x + w / 2 - facts.square_down * unit * Math.sin(angle);  // "down" in the face's frame: (-sin, cos)
  const cy = y + h / 2 + facts.square_down * unit * Math.cos(angle);
  const x0 = pyRound(cx - side / 2), y0 = pyRound(cy - side / 2), x1 = x0 + pyRound(side), y1 = y0 + pyRound(side);
  const left = Math.max(0, x0), top = Math.max(0, y0);
  return {box: [left, top, Math.min(width, x1) - left, Math.min(height, y1) - top], score: row[14], keypoints};
}

// A view's score -> the score users threshold: the operating point becomes 0.5, 0 stays 0, 1 stays 1.
export function calibrated(raw, point) {
  return raw < point ? 0.5 * raw / point : Math.min(1, 0.5 + 0.5 * (raw - point) / (1 - point));
}

// boxes.nms: highest score first (ties in the order given); empty boxes and those overlapping a kept one by
// IoU > threshold go.
function nms(faces, threshold) {
  const kept = [];
  for (const f of [...faces].sort((a, b) => b.score - a.score)) {
    if (f.box[2] > 0 && f.box[3] > 0 && kept.every((k) => iou(f.box, k.box) <= threshold)) kept.push(f);
  }
  return kept;
}

function kept(faces, minScore, maxFaces) {  // faces._kept
  return faces.filter((f) => f.score >= minScore && f.box[2] > 0 && f.box[3] > 0)
    .sort((a, b) => b.score - a.score).slice(0, maxFaces)
    .sort((a, b) => a.box[0] - b.box[0] || a.box[1] - b.box[1]);
}

export function iou(a, b) {  // boxes.iou
  const ix = Math.max(0, Math.min(a[0] + a[2], b[0] + b[2]) - Math.max(a[0], b[0]));
  const iy = Math.max(0, Math.min(a[1] + a[3], b[1] + b[3]) - Math.max(a[1], b[1]));
  const union = a[2] * a[3] + b[2] * b[3] - ix * iy;
  return union > 0 ? ix * iy / union : 0;
}

// ------------------------------------------------------------------------------------------- Pillow's resampling
// faces._resized: the image with its long side at `side`: as it is within `slack` above it; else shrunk by
// Image.reduce's whole factor, then Image.BOX for what is left (or enlarged, BILINEAR, if smaller).
export function shrunk(image, side, slack) {
  const long = Math.max(image.width, image.height);
  if (side <= long && long <= side * slack) return image;
  if (long < side) return resized(image, side / long, "bilinear");
  const factor = Math.floor(long / side), work = factor >= 2 ? reduced(image, factor) : image;
  return Math.max(work.width, work.height) <= side * slack ? work : resized(work, side / Math.max(work.width,
                                                                                                  work.height), "box");
}

function resized(image, scale, filter) {
  const w = Math.max(1, pyRound(image.width * scale)), h = Math.max(1, pyRound(image.height * scale));
  return fromPlanes(planes(image).map((p) => resize(p, image.width, image.height, w, h, filter)), w, h);
}

// Image.reduce(factor): each factor x factor block's mean (the last row and column of blocks may be smaller), in
// Pillow's fixed point: (sum + n / 2) * floor(2^32 / (256 n)) >> 24, which is exact for n = 4.
export function reduced(image, factor) {
  const {data, width, height} = image, w = Math.ceil(width / factor), h = Math.ceil(height / factor);
  const out = new Uint8ClampedArray(w * h * 4);
  for (let y = 0; y < h; y++) {
    const y0 = y * factor, y1 = Math.min(height, y0 + factor);
    for (let x = 0; x < w; x++) {
      const x0 = x * factor, x1 = Math.min(width, x0 + factor), n = (x1 - x0) * (y1 - y0);
      let r = 0, g = 0, b = 0;
      for (let yy = y0; yy < y1; yy++) {
        for (let i = (yy * width + x0) * 4, end = (yy * width + x1) * 4; i < end; i += 4) {
          r += data[i];
          g += data[i + 1];
          b += data[i + 2];
        }
      }
      const multiplier = Math.floor(2 ** 32 / (256 * n)), amend = n >> 1, o = (y * w + x) * 4;
      out[o] = Math.floor((r + amend) * multiplier / 2 ** 24);
      out[o + 1] = Math.floor((g + amend) * multiplier / 2 ** 24);
      out[o + 2] = Math.floor((b + amend) * multiplier / 2 ** 24);
      out[o + 3] = 255;
    }
  }
  return {data: out, width: w, height: h};
}

// Image.crop((x0, y0, x1, y1)) (black where it leaves the image), then .resize((side, side), BILINEAR).
export function cropResized(image, x0, y0, x1, y1, side) {
  const w = x1 - x0, h = y1 - y0, rgb = [new Uint8Array(w * h), new Uint8Array(w * h), new Uint8Array(w * h)];
  for (let y = Math.max(0, y0); y < Math.min(image.height, y1); y++) {
    for (let x = Math.max(0, x0); x < Math.min(image.width, x1); x++) {
      const i = (y * image.width + x) * 4, o = (y - y0) * w + (x - x0);
      rgb[0][o] = image.data[i];
      rgb[1][o] = image.data[i + 1];
      rgb[2][o] = image.data[i + 2];
    }
  }
  return fromPlanes(rgb.map((p) => resize(p, w, h, side, side, "bilinear")), side, side);
}

function planes({data, width, height}) {
  const out = [0, 1, 2].map(() => new Uint8Array(width * height));
  for (let i = 0; i < width * height; i++) for (let b = 0; b < 3; b++) out[b][i] = data[i * 4 + b];
  return out;
}

function fromPlanes(rgb, width, height) {
  const data = new Uint8ClampedArray(width * height * 4);
  for (let i = 0; i < width * height; i++) {
    for (let b = 0; b < 3; b++) data[i * 4 + b] = rgb[b][i];
    data[i * 4 + 3] = 255;
  }
  return {data, width, height};
}
