// The server's two face detectors in the page, for faces.js: YuNet (yunet.js) in onnxruntime-web on this thread,
// and BlazeFace short range (MediaPipe tasks-vision) on each face's view. `files` is the app's /live/files URL,
// `facts` config.json's detector, `wasm` onnxruntime-web's WebAssembly (fetched once for both of its instances).
import {runner} from "./yunet.js";

export async function loadDetector(files, facts, wasm) {
  // A second instance of onnxruntime-web (the same file; the query only makes it another module): the page's model
  // runs in the first one's worker, and an instance runs all its sessions in one place, so both there would take
  // turns. Here YuNet looks for the faces in the next frame while the model reads this one.
  const [ort, vision] = await Promise.all([import(`${files}/vendor/onnxruntime-web/ort.wasm.min.mjs?detector`),
                                           import(`${files}/vendor/tasks-vision/vision_bundle.mjs`)]);
  // One thread: several need SharedArrayBuffer, which needs the page cross-origin isolated (COOP/COEP headers).
  Object.assign(ort.env.wasm, {numThreads: 1, proxy: false, wasmPaths: `${files}/vendor/onnxruntime-web/`,
                               wasmBinary: wasm});
  // Errors only: the outputs' declared 640x640 sizes differ at other sizes, a warning per output and frame.
  const options = {executionProviders: ["wasm"], graphOptimizationLevel: "all", logSeverityLevel: 3};
  const fileset = {wasmLoaderPath: `${files}/vendor/tasks-vision/vision_wasm_internal.js`,
                   wasmBinaryPath: `${files}/vendor/tasks-vision/vision_wasm_internal.wasm`};
  const [session, blazeface] = await Promise.all([
    fetchBytes(facts.yunet).then((model) => ort.InferenceSession.create(model, options)),
    vision.FaceDetector.createFromOptions(fileset, {baseOptions: {modelAssetPath: facts.blazeface, delegate: "CPU"},
      runningMode: "IMAGE", minDetectionConfidence: facts.view_floor})]);
  return {yunet: runner(session, ort.Tensor), blazeface: (image) => views(blazeface, image)};
}

// BlazeFace's detections in an image ({data: RGBA, width, height}): box and keypoints in its pixels, as the server's
// emotion/blazeface.py reports them.
function views(blazeface, image) {
  return blazeface.detect(new ImageData(image.data, image.width, image.height)).detections.map((d) => {
    const b = d.boundingBox;
    return {box: [b.originX, b.originY, b.width, b.height], score: d.categories[0]?.score ?? 0,
            keypoints: d.keypoints.map((k) => [k.x * image.width, k.y * image.height])};
  });
}

export async function fetchBytes(url) {
  const response = await fetch(url);
  if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
  return new Uint8Array(await response.arrayBuffer());
}
