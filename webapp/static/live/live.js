// The live page: camera -> the server's face search (faces.js: YuNet and BlazeFace, detector.js, on this thread) ->
// the server's crop and normalisation (pixels.js) -> the model's ONNX export (onnxruntime-web in its worker) ->
// tracks and smoothing (tracker.js) -> boxes on a canvas. Everything runs here: once the files below are loaded,
// nothing is sent anywhere.
import {fetchBytes, loadDetector} from "./detector.js";
import {findFaces, followFaces} from "./faces.js";
import {closeRows, cropGeometry, cropGray, mirrorRows, modelPixels, probabilities, toBatch, withMirrors}
  from "./pixels.js";
import {FaceTracker} from "./tracker.js";

const ROOT = document.body.dataset.root || "";
const FILES = `${ROOT}/live/files`;
const ORT = `${FILES}/vendor/onnxruntime-web/ort.wasm.min.mjs`;
const $ = (id) => document.getElementById(id);
const video = $("video"), overlay = $("overlay"), frame = document.createElement("canvas");
const state = {config: null, facts: null, session: null, detector: null, ort: null, tracker: new FaceTracker(),
               shown: [], times: [], spent: {detect: 0, crop: 0, classify: 0}, stream: null, paused: false,
               firstResult: null, switching: null, running: null, searched: null};

// ------------------------------------------------------------------------------------------------------ start
async function main() {
  const problem = unsupported();
  if (problem) return fail(problem);
  try {
    await load();
  } catch (e) {
    return fail(`the detector or the model could not load here (${e.message || e}).`);
  }
  $("model").disabled = false;
  await startCamera();
  setInterval(report, 1000);
}

function unsupported() {
  if (typeof WebAssembly !== "object") return "this browser cannot run WebAssembly, which this mode needs.";
  // SIMD (Chrome 91+, Firefox 89+, Safari 16.4+): onnxruntime-web has no build without it
  const simd = new Uint8Array([0, 97, 115, 109, 1, 0, 0, 0, 1, 5, 1, 96, 0, 1, 123, 3, 2, 1, 0, 10, 10, 1, 8, 0,
                               65, 0, 253, 15, 253, 98, 11]);
  if (!WebAssembly.validate(simd)) return "this browser's WebAssembly has no SIMD, which this mode needs.";
  if (!window.isSecureContext) return "the camera is only available to pages served over HTTPS (or from localhost).";
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) return "this browser gives pages no camera.";
  return null;
}

async function load() {
  setStatus("Loading the face detector and the model…");
  state.config = await (await fetch(`${ROOT}/live/config.json`)).json();
  if (!state.config.models.length) throw new Error("the server offers no model with an ONNX export");
  const [ort, wasm] = await loadOrt();
  state.ort = ort;
  const menu = $("model");
  for (const m of state.config.models) menu.add(new Option(`${m.id} (${(m.bytes / 2 ** 20).toFixed(0)} MB)`, m.id));
  const asked = new URLSearchParams(location.search).get("model");  // /live?model=resnet50
  menu.value = state.config.models.some((m) => m.id === asked) ? asked : state.config.default;
  menu.onchange = () => useModel(menu.value).catch((e) => {
    setStatus(`${menu.value} could not load (${e.message || e}); ${state.facts.id} is still running`);
  });
  const facts = state.config.detector;
  // A copy: the model's instance may hand its bytes over to its worker.
  [state.detector] = await Promise.all([loadDetector(FILES, facts, wasm.slice()).then((run) => ({facts, run})),
                                        useModel(menu.value)]);
}

async function loadOrt() {
  const [ort, wasm] = await Promise.all([import(ORT),
                                         fetchBytes(`${FILES}/vendor/onnxruntime-web/ort-wasm-simd-threaded.wasm`)]);
  // One thread: several need SharedArrayBuffer, which needs the page cross-origin isolated (COOP/COEP headers).
  ort.env.wasm.numThreads = 1;
  ort.env.wasm.proxy = true;  // in a worker: the model runs while this thread looks for the faces in the next frame
  ort.env.wasm.wasmPaths = `${FILES}/vendor/onnxruntime-web/`;
  // Fetched here rather than by the worker, so that this page's resource timings (downloaded_mb) count it; the
  // detector's instance of onnxruntime-web gets the same bytes.
  ort.env.wasm.wasmBinary = wasm;
  return [ort, wasm];
}

async function useModel(id) {
  const facts = state.config.models.find((m) => m.id === id);
  const ticket = (state.switching = {});
  setStatus(`Loading ${id}…`);
  const options = {executionProviders: ["wasm"], graphOptimizationLevel: "all"};
  const session = await state.ort.InferenceSession.create(await fetchBytes(facts.url), options);
  if (state.switching !== ticket) return session.release();  // another model was chosen meanwhile
  const old = state.session;
  state.session = session;
  state.facts = facts;
  if (old) Promise.resolve(state.running).finally(() => old.release());  // once its last frame is read
  state.tracker = new FaceTracker();  // another model's probabilities are not this one's to smooth
  setStatus(`${id}: running on this device`);
}

async function startCamera() {
  $("start").hidden = true;
  try {
    state.stream = await navigator.mediaDevices.getUserMedia({audio: false, video: {facingMode: "user",
      width: {ideal: 640}, height: {ideal: 480}}});
    video.srcObject = state.stream;
    await video.play();
  } catch (e) {
    $("start").hidden = false;
    $("start").onclick = startCamera;
    const why = e.name === "NotAllowedError" ? "the camera was not allowed" : `the camera did not start (${e.name})`;
    setStatus(`${why}: press Start the camera to try again.`);
    return;
  }
  loop();
}

// ------------------------------------------------------------------------------------------------------- loop
async function loop() {
  let last = -1, seen = 0, pending = null;  // the previous frame, being classified (in onnxruntime's worker) meanwhile
  watchFrames();
  while (state.stream) {
    await frameAfter(seen);
    seen = frames.shown;
    if (state.paused || video.readyState < 2 || video.currentTime === last) continue;
    last = video.currentTime;
    try {
      const next = await detectAndCrop(performance.now());  // this thread: the detector, then the crops
      if (pending) show(await pending);
      pending = classify(next);
    } catch (e) {
      return fail(`analysing a frame failed (${e.message || e}).`);
    }
  }
}

function show(faces) {
  state.shown = faces;
  if (state.firstResult === null) state.firstResult = performance.now();
  state.times.push(performance.now());
  draw(faces);
}

// Frames the camera has shown (requestVideoFrameCallback; where it is missing, each animation frame counts). The
// loop takes the newest frame as soon as it is free: a frame that takes a little longer than the camera's period
// to analyse must not wait for the one after the next (at 30 frames/s, 35 ms a frame would give 15 frames/s).
const frames = {shown: 0, waiting: null};

function watchFrames() {
  const tick = () => {
    frames.shown += 1;
    if (frames.waiting) frames.waiting();
    frames.waiting = null;
    if (state.stream) schedule();
  };
  const schedule = () => (video.requestVideoFrameCallback
    ? video.requestVideoFrameCallback(tick) : requestAnimationFrame(tick));
  schedule();
}

function frameAfter(seen) {
  return frames.shown > seen ? Promise.resolve() : new Promise((resolve) => (frames.waiting = resolve));
}

async function detectAndCrop(now) {
  const W = video.videoWidth, H = video.videoHeight;
  if (frame.width !== W || frame.height !== H) Object.assign(frame, {width: W, height: H});
  const ctx = frame.getContext("2d", {willReadFrequently: true});
  ctx.drawImage(video, 0, 0, W, H);
  const image = {data: ctx.getImageData(0, 0, W, H).data, width: W, height: H};
  const faces = await detect(image, now);  // left to right
  const t1 = performance.now();
  const job = {now, faces, facts: state.facts, session: state.session, batch: null};
  if (faces.length) {
    job.batch = toBatch(faces.map((f) => facePixels(image, f, job.facts)), job.facts, inOneBatch(job.facts));
  }
  state.spent.detect += t1 - now;
  state.spent.crop += performance.now() - t1;
  return job;
}

// The model on the frame's faces, their tracks and smoothed readings. With onnxruntime's worker (proxy) the next
// frame is detected meanwhile: the two stages overlap on two cores.
async function classify({now, faces, facts, session, batch}) {
  if (session !== state.session) return [];  // cropped for the model used before: skipped
  const t0 = performance.now();
  let probs = [];
  if (batch) {
    let logits = await runModel(session, facts, batch);
    if (facts.tta_flip && !inOneBatch(facts)) {  // a flip_margin: only the close calls' mirrors, in a second run
      const rows = closeRows(logits, faces.length, facts);
      if (rows.length && session === state.session) {
        const mirrored = await runModel(session, facts, mirrorRows(batch, rows));
        logits = withMirrors(logits, mirrored, rows, facts.labels.length);
      }
    }
    probs = probabilities(logits, faces.length, facts, inOneBatch(facts));
  }
  state.spent.classify += performance.now() - t0;
  if (facts !== state.facts) return [];  // another model was chosen meanwhile: its tracker starts afresh
  const tracks = state.tracker.update(now / 1000, faces.map((f) => f.box), probs);
  return faces.map((f, i) => reading(f, tracks[i], facts));
}

// Every face with its mirror in one batch (tta_flip without a flip_margin), as emotion.calibration.served_logits.
function inOneBatch(facts) {
  return facts.tta_flip && facts.flip_margin == null;
}

async function runModel(session, facts, batch) {
  state.running = session.run({[facts.input]: new state.ort.Tensor("float32", batch.data, batch.dims)});
  return (await state.running)[facts.output].data;
}

// The server's search on the first frame and then once per full_search_seconds; the frames between follow the
// previous frame's faces (as the server reads a video: emotion/video.py).
async function detect(image, now) {
  const {facts, run} = state.detector, last = state.searched;
  if (last === null || now - last.time >= facts.full_search_seconds * 1000 - 1e-3) {
    state.searched = {time: now, faces: await findFaces(image, facts, run)};
    return state.searched.faces;
  }
  last.faces = await followFaces(image, last.faces.map((f) => f.box), facts, run);
  return last.faces;
}

function facePixels(image, face, facts) {
  const g = cropGeometry(face.box, face.keypoints, facts);
  const region = {data: image.data, left: 0, top: 0, width: image.width, height: image.height};
  return modelPixels(cropGray(region, g), g.side, facts);
}

function reading(face, track, facts) {
  const p = track.probs, top = p.indexOf(Math.max(...p));
  const [x, y, w, h] = face.box;
  return {emotion: facts.labels[top], confidence: p[top], uncertain: p[top] < facts.uncertain_threshold,
          box: {x, y, w, h}, track: track.id,
          probabilities: Object.fromEntries(facts.labels.map((label, k) => [label, p[k]]))};
}

// ---------------------------------------------------------------------------------------------------- display
function draw(faces) {
  const W = video.videoWidth, H = video.videoHeight, dpr = window.devicePixelRatio || 1;
  const cw = overlay.clientWidth, ch = overlay.clientHeight;
  if (overlay.width !== Math.round(cw * dpr)) overlay.width = Math.round(cw * dpr);
  if (overlay.height !== Math.round(ch * dpr)) overlay.height = Math.round(ch * dpr);
  const ctx = overlay.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, cw, ch);
  const s = Math.min(cw / W, ch / H), ox = (cw - W * s) / 2, oy = (ch - H * s) / 2;
  const mirror = $("mirror").checked;
  video.classList.toggle("mirror", mirror);
  ctx.font = "600 15px system-ui, sans-serif";
  ctx.lineWidth = 3;
  for (const f of faces) {
    const x = ox + (mirror ? W - f.box.x - f.box.w : f.box.x) * s, y = oy + f.box.y * s;
    const colour = state.config.colours[f.emotion] || "#9e9e9e";
    ctx.strokeStyle = colour;
    ctx.strokeRect(x, y, f.box.w * s, f.box.h * s);
    const text = `${f.emotion}${f.uncertain ? "?" : ""} ${Math.round(f.confidence * 100)}%`;  // render.caption
    const tw = ctx.measureText(text).width + 8, ty = y >= 22 ? y - 22 : y + f.box.h * s;
    ctx.fillStyle = colour;
    ctx.fillRect(x - 1.5, ty, tw, 22);
    ctx.fillStyle = ink(colour);
    ctx.fillText(text, x + 2.5, ty + 16);
  }
}

function ink(hex) {  // render._ink: black or white, whichever reads better on the chip
  const [r, g, b] = [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16));
  return 0.299 * r + 0.587 * g + 0.114 * b > 150 ? "#000" : "#fff";
}

// The test hook (#live-stats), every second: frames analysed over the last second and what is on screen.
function report() {
  const now = performance.now();
  state.times = state.times.filter((t) => now - t <= 1000);
  pauseWhenHidden();
  const frames = Math.max(1, state.times.length), spent = state.spent;
  const timings = Object.fromEntries(Object.entries(spent).map(([k, v]) => [k, +(v / frames).toFixed(1)]));
  state.spent = {detect: 0, crop: 0, classify: 0};
  const stats = {mode: "device", fps: state.paused ? 0 : state.times.length, faces: state.shown,
                 timings_ms: timings,  // per analysed frame over the last second
                 model: state.facts && state.facts.id,
                 first_result_s: state.firstResult && +(state.firstResult / 1000).toFixed(2),
                 downloaded_mb: +(downloaded() / 2 ** 20).toFixed(1)};
  $("live-stats").textContent = JSON.stringify(stats);
}

function downloaded() {  // bytes over the network for this page so far (0 for what came from the cache)
  const entries = [...performance.getEntriesByType("navigation"), ...performance.getEntriesByType("resource")];
  return entries.reduce((sum, e) => sum + (e.transferSize || 0), 0);
}

// Inside the Gradio tab: the camera stops while the tab is not shown, and starts again when it is.
function pauseWhenHidden() {
  let hidden = false;
  try {
    hidden = !!window.frameElement && window.frameElement.getClientRects().length === 0;
  } catch (e) { /* a page of another origin embeds this one: it decides itself */ }
  if (hidden === state.paused || !state.stream) return;
  state.paused = hidden;
  for (const track of state.stream.getVideoTracks()) track.enabled = !hidden;
}

function setStatus(text) {
  $("status").textContent = text;
}

function fail(reason) {
  const p = $("problem");
  p.hidden = false;
  p.textContent = `This mode cannot run here: ${reason} `;
  const button = document.createElement("button");
  button.textContent = "Use the server's webcam mode";
  button.onclick = () => switchToServer() || (window.top.location.href = `${ROOT}/`);
  button.title = "The app's Live webcam tab, On the server: frames go to the server, which reads them there";
  p.append(button);
  setStatus("Not running.");
  if (state.stream) state.stream.getTracks().forEach((t) => t.stop());
  state.stream = null;
}

function switchToServer() {  // the Gradio tab's mode switch, when this page is embedded there (same origin)
  try {
    const radios = window.parent.document.querySelectorAll("#live-mode input[type=radio]");
    const server = [...radios].find((r) => r.value === "server");
    if (server && window.parent !== window) {
      server.click();
      return true;
    }
  } catch (e) { /* not embedded by this app */ }
  return false;
}

main();
