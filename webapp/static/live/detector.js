// The server's two face detectors in the page, for faces.js: YuNet (yunet.js) on the frame and BlazeFace short range
// (blazeface.js) on the faces' views, both in onnxruntime-web on this thread. `files` is the app's /live/files URL,
// `facts` config.json's detector, `wasm` onnxruntime-web's WebAssembly (fetched once for both of its instances).
import * as blazeface from "./blazeface.js";
import * as yunet from "./yunet.js";

export async function loadDetector(files, facts, wasm) {
  // A second instance of onnxruntime-web (the same file; the query only makes it another module): the page's model
  // runs in the first one's worker, and an instance runs all its sessions in one place, so both there would take
  // turns. Here the detectors look for the faces in the next frame while the model reads this one.
  const ort = await import(`${files}/vendor/onnxruntime-web/ort.wasm.min.mjs?detector`);
  // One thread: several need SharedArrayBuffer, which needs the page cross-origin isolated (COOP/COEP headers).
  Object.assign(ort.env.wasm, {numThreads: 1, proxy: false, wasmPaths: `${files}/vendor/onnxruntime-web/`,
                               wasmBinary: wasm});
  // Errors only: YuNet's outputs' declared 640x640 sizes differ at other sizes, a warning per output and frame.
  const options = {executionProviders: ["wasm"], graphOptimizationLevel: "all", logSeverityLevel: 3};
  const [faces, views] = await Promise.all([facts.yunet, facts.blazeface].map(
    async (url) => ort.InferenceSession.create(await fetchBytes(url), options)));
  return {yunet: yunet.runner(faces, ort.Tensor), blazeface: blazeface.runner(views, ort.Tensor, facts.view_floor)};
}

export async function fetchBytes(url) {
  const response = await fetch(url);
  if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
  return new Uint8Array(await response.arrayBuffer());
}
