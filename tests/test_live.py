"""/live, the webcam read in the visitor's browser: its files are served from the app (and only those), its
JavaScript finds faces (YuNet) and makes the server's crops, probabilities and tracks (run under Node against the
Python code and OpenCV), and in Chromium with a fake camera it reads the astronaut, near and far, as /api/predict
does while sending nothing."""
from __future__ import annotations

import base64
import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from emotion import shipped_models
from emotion.faces import Face
from emotion.info import ModelInfo
from webapp.live import STATIC, model_facts

NODE = shutil.which("node")
ASTRONAUT_FACE = 0.15  # her face's width over the frame's, pasted as she is in a 640x480 frame
FACE_WIDTHS = [0.15, 0.11, 0.08]  # issue #36: near (~0.8 m from a laptop's camera) to ~1.5 m
VENDOR = STATIC / "vendor"
LIVE_JS = STATIC / "live"


def run_js(module: str, code: str, payload: dict):
    """Runs `code` (an async function body that sees `m`, the module, and `input`) under Node; returns its JSON."""
    if NODE is None:
        pytest.skip("no Node.js: the page's JavaScript is checked under node (apt-get install -y nodejs)")
    script = (f"const m = await import({json.dumps((LIVE_JS / module).as_uri())});\n"
              "let text = ''; for await (const chunk of process.stdin) text += chunk;\n"
              "const input = JSON.parse(text);\n"
              f"const out = await (async () => {{ {code} }})();\n"
              "process.stdout.write(JSON.stringify(out));\n")
    done = subprocess.run([NODE, "--input-type=module", "-e", script], input=json.dumps(payload), text=True,
                          capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def facts_of(name: str) -> tuple[dict, ModelInfo]:
    folder = Path(shipped_models()[name].removeprefix("local-dir:"))
    return model_facts(name, folder, ""), ModelInfo.from_config(json.loads((folder / "config.json").read_text()))


# ------------------------------------------------------------------------------------------------ vendored files
def test_the_vendored_files_are_the_npm_files_named_in_the_readme():
    sums = [line.split() for line in (VENDOR / "SHA256SUMS").read_text().splitlines()]
    assert len(sums) == 3
    readme = (VENDOR / "README.md").read_text()
    for digest, name in sums:
        assert hashlib.sha256((VENDOR / name).read_bytes()).hexdigest() == digest, f"{name} was changed"
        assert Path(name).name in readme
    assert "MIT License" in (VENDOR / "onnxruntime-web" / "LICENSE").read_text()
    on_disk = {str(f.relative_to(VENDOR)) for f in VENDOR.rglob("*") if f.is_file()}
    assert on_disk == {name for _, name in sums} | {"README.md", "SHA256SUMS", "onnxruntime-web/LICENSE"}


# ------------------------------------------------------------------------------------------- served by the app
def test_the_page_and_everything_it_loads_come_from_the_app(client, tiny_model):
    page = client.get("/live")
    assert page.status_code == 200 and 'id="live-stats"' in page.text and 'id="start"' in page.text
    assert "http" not in page.text.replace("http-equiv", "")  # no address elsewhere: nothing from a CDN
    config = client.get("/live/config.json").json()
    # every configured model with a model.onnx: the shipped ones and the server's default, the tiny test model
    assert {m["id"] for m in config["models"]} == {*shipped_models(), tiny_model.name}
    assert config["default"] == tiny_model.name
    scripts = [f"/live/files/live/{p.name}" for p in LIVE_JS.iterdir() if p.suffix in (".js", ".css")]
    assert len(scripts) == 8  # the stylesheet and seven modules
    vendor = [f"/live/files/vendor/{line.split()[1]}" for line in (VENDOR / "SHA256SUMS").read_text().splitlines()]
    detectors = [config["detector"]["yunet"], config["detector"]["blazeface"]]
    for url in scripts + vendor + detectors + [m["url"] for m in config["models"]]:
        got = client.get(url, headers={"Accept-Encoding": "identity"})
        assert got.status_code == 200, url
        if url.endswith(("js", ".mjs")):
            assert got.headers["content-type"].startswith("text/javascript"), url
        if url.endswith(".wasm"):
            assert got.headers["content-type"] == "application/wasm"
    for source in (LIVE_JS / "live.js").read_text(), (LIVE_JS / "index.html").read_text():
        assert "https://" not in source and "cdn" not in source.lower()


def test_files_are_revalidated_and_compressed(client):
    import time

    url = "/live/files/vendor/onnxruntime-web/ort.wasm.min.mjs"
    first = client.get(url)
    assert client.get(url, headers={"If-None-Match": first.headers["etag"]}).status_code == 304
    for _ in range(100):  # compressed in the background: sent as it is meanwhile
        got = client.get(url, headers={"Accept-Encoding": "gzip"})
        if got.headers.get("content-encoding") == "gzip":
            break
        time.sleep(0.1)
    assert got.headers.get("content-encoding") == "gzip"
    assert got.content == (VENDOR / "onnxruntime-web" / "ort.wasm.min.mjs").read_bytes()  # decoded by the client


@pytest.mark.parametrize("url", ["/live/files/../app.py", "/live/files/live/../../live.py", "/live/files/%2e%2e/x",
                                 "/live/files/vendor/SHA256SUMS", "/live/models/small_cnn/config.json",
                                 "/live/models/nope/model.onnx", "/live/files/emotion/assets/face.tflite"])
def test_nothing_off_the_list_is_served(client, url):
    got = client.get(url)
    assert got.status_code == 404
    assert not got.content.startswith(b"\x08") and b"import" not in got.content


def test_the_detector_is_the_shipped_yunet_with_a_free_input_size(client):
    """The page gets the shipped file's bytes but for the input's declared 640x640 (onnxruntime-web refuses other
    sizes than the declared one), revalidated by its ETag."""
    from emotion.yunet import MODEL_PATH

    url = client.get("/live/config.json").json()["detector"]["yunet"]
    got = client.get(url)
    shipped = MODEL_PATH.read_bytes()
    assert got.status_code == 200 and len(got.content) == len(shipped) and got.content != shipped
    differ = [i for i, (a, b) in enumerate(zip(got.content, shipped)) if a != b]
    assert differ[-1] - differ[0] < 16  # one place: the input's shape
    assert client.get(url, headers={"If-None-Match": got.headers["etag"]}).status_code == 304


def test_a_model_whose_id_holds_a_slash_is_served_by_its_id(tmp_path):
    """Two configured folders of the same name: the second's id is its whole source (local-dir:/...)."""
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from webapp.live import install_live
    from webapp.models import ModelRegistry

    copy = tmp_path / "small_cnn"
    shutil.copytree(Path(shipped_models()["small_cnn"].removeprefix("local-dir:")), copy)
    registry = ModelRegistry({"small_cnn": shipped_models()["small_cnn"], f"local-dir:{copy}": f"local-dir:{copy}"},
                             "small_cnn")
    app = FastAPI()
    install_live(app, registry)
    with TestClient(app) as c:
        models = c.get("/live/config.json").json()["models"]
        assert [m["id"] for m in models] == ["small_cnn", f"local-dir:{copy}"]
        assert c.get(models[1]["url"]).content == (copy / "model.onnx").read_bytes()


# ---------------------------------------------------------------------------------- the page's arithmetic (Node)
def test_the_page_crops_and_resizes_faces_as_the_server_does():
    """crop_face (margin, offset, eye levelling, edge padding) then to_model_pixels (native size, input size), on a
    random frame: a tilted face, one at the frame's edge and a small one (enlarged, not shrunk)."""
    from emotion.faces import crop_face
    from emotion.preprocess import to_model_pixels

    rng = np.random.default_rng(0)
    h, w = 160, 200
    frame = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    faces = [((60, 40, 70, 76), ((80.0, 62.0), (112.0, 71.0))), ((150, 100, 50, 56), ((163.0, 118.0), (186.0, 117.0))),
             ((20, 10, 30, 30), ((28.0, 19.0), (41.0, 20.5)))]
    rgba = np.concatenate([frame, np.full((h, w, 1), 255, np.uint8)], axis=2)
    for name in sorted(shipped_models()):
        facts, info = facts_of(name)
        js = run_js("pixels.js", """
            const img = {data: Uint8Array.from(atob(input.rgba), (c) => c.charCodeAt(0)), left: 0, top: 0,
                         width: input.w, height: input.h};
            return input.faces.map(([box, kps]) => {
              const g = m.cropGeometry(box, kps, input.facts);
              return Array.from(m.modelPixels(m.cropGray(img, g), g.side, input.facts));
            });""", {"rgba": base64.b64encode(rgba.tobytes()).decode(), "w": w, "h": h, "faces": faces,
                     "facts": facts})
        for (box, kps), got in zip(faces, js):
            crop = crop_face(Image.fromarray(frame), Face(box, 1.0, kps), info.crop_margin, info.align_eyes,
                             info.crop_offset_y)
            expected = np.asarray(to_model_pixels(crop, info), dtype=int).ravel()
            assert np.abs(np.array(got) - expected).max() <= 1, (name, box)  # rounding of exact halves at most
            assert np.mean(np.array(got) == expected) > 0.99, (name, box)


def test_the_page_batches_and_reads_logits_as_predictor_probabilities_does():
    """Normalisation and mirror images (preprocess.batch, tta_flip), then the mirror average, logit bias, temperature
    and softmax of Predictor.probabilities (emotion.calibration)."""
    from dataclasses import replace

    from emotion.calibration import merge_flipped, probabilities
    from emotion.preprocess import batch

    rng = np.random.default_rng(1)
    facts, info = facts_of("resnet50")
    pixels = [rng.integers(0, 256, info.input_size[1:], dtype=np.uint8) for _ in range(2)]
    logits = rng.normal(0, 3, (4, info.num_classes)).astype(np.float32)
    out = run_js("pixels.js", """
        const b = m.toBatch(input.pixels, input.facts, true);
        return {data: Array.from(b.data), dims: b.dims,
                probs: m.probabilities(Float32Array.from(input.logits.flat()), 2, input.facts, true)};""",
                 {"pixels": [p.ravel().tolist() for p in pixels], "facts": facts, "logits": logits.tolist()})
    x = batch([Image.fromarray(p) for p in pixels], replace(info, native_size=info.input_size[1]))  # no resizing
    expected = np.concatenate([x, x[:, :, :, ::-1]])
    assert out["dims"] == list(expected.shape)
    assert np.abs(np.array(out["data"]).reshape(expected.shape) - expected).max() < 1e-6
    probs = probabilities(merge_flipped(logits, True, info), info.temperature)
    assert np.abs(np.array(out["probs"]) - probs).max() < 1e-6


def test_the_page_follows_and_smooths_faces_as_the_server_webcam_does():
    from emotion.tracking import FaceTracker

    rng = np.random.default_rng(2)
    frames = []  # two faces walking right; the second missed in frame 3; a third arrives in frame 5
    for t in range(8):
        boxes = [(40 + 12 * t, 50, 60, 60), (200 + 8 * t, 60, 50, 50)]
        if t == 3:
            boxes = boxes[:1]
        if t >= 5:
            boxes.append((400, 40, 40, 40))
        probs = rng.dirichlet(np.ones(8), len(boxes))
        frames.append((t * 0.2, boxes, probs))
    tracker = FaceTracker(keep_closed=0)
    expected = [[(tr.id, tr.probs.tolist()) for tr in tracker.update(t, b, p)] for t, b, p in frames]
    got = run_js("tracker.js", """
        const tracker = new m.FaceTracker();
        return input.map(([t, boxes, probs]) => tracker.update(t, boxes, probs).map((tr) => [tr.id, tr.probs]));""",
                 [(t, [list(b) for b in boxes], p.tolist()) for t, boxes, p in frames])
    for exp, out in zip(expected, got):
        assert [i for i, _ in exp] == [i for i, _ in out]
        assert np.abs(np.array([p for _, p in exp]) - np.array([p for _, p in out])).max() < 1e-9


def test_the_page_rounds_the_crop_side_as_python_does():
    """Python's round() takes halves to the even neighbour; Math.round would not (12.5 -> 13)."""
    facts, _ = facts_of("small_cnn")
    boxes = [10, 14, 18, 22, 30]  # margin 0.125: sides 12.5, 17.5, 22.5, 27.5, 37.5
    out = run_js("pixels.js", "return input.boxes.map((w) => m.cropGeometry([0, 0, w, w], [], input.facts).side);",
                 {"boxes": boxes, "facts": {**facts, "crop_margin": 0.125}})
    assert out == [round(w * 1.25) for w in boxes] == [12, 18, 22, 28, 38]


def astronaut(face: float) -> Image.Image:
    """The astronaut scaled so that her face is `face` of a 640 px wide frame (her face is ~96 px of her 512 px photo:
    YuNet's box 90, BlazeFace's 102; 15% of 640 as she is)."""
    from skimage import data

    photo = Image.fromarray(data.astronaut())
    side = round(photo.width * face / ASTRONAUT_FACE)
    return photo if side == photo.width else photo.resize((side, side), Image.LANCZOS)


def yunet_scene() -> np.ndarray:
    """A 600x450 frame (padded to 608x480 for YuNet) with the astronaut at three sizes, one of them cut by the edge."""
    frame = Image.new("RGB", (600, 450), (128, 128, 128))
    for face, at in ((0.15, (-120, 0)), (0.08, (330, 20)), (0.05, (420, 260))):
        frame.paste(astronaut(face), at)
    return np.asarray(frame)


def test_the_page_finds_faces_as_the_server_and_opencv_do():
    """yunet.js: its input from RGBA (BGR, padded with black) is the server's, and from the same network outputs
    it decodes the boxes, landmarks and scores that emotion/yunet.py and cv2.FaceDetectorYN give."""
    import onnxruntime as ort

    from emotion.yunet import OUTPUTS, YuNet
    from webapp.live import detector_model

    min_score = 0.5  # the three faces (a 0.25 candidate beside one: the search's views judge those)

    rgb = yunet_scene()
    h, w = rgb.shape[:2]
    rgba = np.concatenate([rgb, np.full((h, w, 1), 255, np.uint8)], axis=2)
    blob = np.zeros((1, 3, 480, 608), np.float32)
    blob[0, :, :h, :w] = rgb[:, :, ::-1].transpose(2, 0, 1)
    options = ort.SessionOptions()
    options.log_severity_level = 3  # the outputs' declared sizes are 640x640's
    session = ort.InferenceSession(detector_model(), options, providers=["CPUExecutionProvider"])
    outputs = dict(zip(OUTPUTS, session.run(list(OUTPUTS), {"input": blob})))
    js = run_js("yunet.js", """
        const rgba = Uint8Array.from(atob(input.rgba), (c) => c.charCodeAt(0));
        const blob = m.toInput(rgba, input.w, input.h);
        const outputs = Object.fromEntries(Object.entries(input.outputs).map(([k, v]) => [k, Float32Array.from(v)]));
        return {dims: blob.dims, sum: blob.data.reduce((a, b) => a + b, 0), at: input.at.map((i) => blob.data[i]),
                rows: m.decode(outputs, blob.dims[3], blob.dims[2], input.min_score)};""",
                {"rgba": base64.b64encode(rgba.tobytes()).decode(), "w": w, "h": h, "min_score": min_score,
                 "outputs": {k: v.ravel().tolist() for k, v in outputs.items()}, "at": list(range(0, blob.size, 997))})
    assert js["dims"] == list(blob.shape)
    assert js["at"] == blob.ravel()[::997].tolist() and js["sum"] == pytest.approx(float(blob.sum(dtype=np.float64)))
    server = YuNet().detect(rgb, min_score)
    assert len(server) == 3  # the three faces, none twice
    np.testing.assert_allclose(np.array(js["rows"]), server, atol=1e-3)
    cv2 = pytest.importorskip("cv2", reason="OpenCV (opencv-python) compares the boxes with FaceDetectorYN")
    from emotion.yunet import MODEL_PATH

    opencv = cv2.FaceDetectorYN.create(str(MODEL_PATH), "", (w, h), min_score, 0.3, 5000)
    faces = opencv.detect(np.ascontiguousarray(rgb[:, :, ::-1]))[1]
    faces = faces[np.argsort(-faces[:, 14])]
    np.testing.assert_allclose(np.array(js["rows"])[:, :14], faces[:, :14], atol=0.5)  # OpenCV's own convolutions
    np.testing.assert_allclose(np.array(js["rows"])[:, 14], faces[:, 14], atol=0.01)


def test_the_page_shrinks_frames_and_cuts_views_as_pillow_does():
    """faces.js's resampling, on a random image: Image.reduce (the near pass's input), crop (black outside) then a
    BILINEAR resize (each candidate's view, enlarged or shrunk), and the reduce-then-BOX shrink of faces._resized."""
    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 256, (77, 101, 3), dtype=np.uint8)
    image = Image.fromarray(rgb)
    boxes = [(-9, -5, 40, 36), (50, 30, 131, 120), (3, 4, 67, 70)]
    js = run_js("faces.js", """
        const image = {data: Uint8ClampedArray.from(atob(input.rgba), (c) => c.charCodeAt(0)), width: 101, height: 77};
        const rgb = (im) => Array.from(im.data).filter((_, i) => i % 4 !== 3);
        return {reduced: [2, 3].map((f) => rgb(m.reduced(image, f))), shrunk: rgb(m.shrunk(image, 40, 1.07)),
                views: input.boxes.map(([x0, y0, x1, y1]) => rgb(m.cropResized(image, x0, y0, x1, y1, 48)))};""",
                {"rgba": base64.b64encode(np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)]).tobytes()).decode(),
                 "boxes": boxes})

    def close(got, expected: Image.Image):
        diff = np.abs(np.array(got) - np.asarray(expected, dtype=int).ravel())
        assert diff.max() <= 1 and np.mean(diff == 0) > 0.99  # rounding of exact halves at most

    assert np.array_equal(js["reduced"][0], np.asarray(image.reduce(2)).ravel())
    close(js["reduced"][1], image.reduce(3))
    close(js["shrunk"], image.reduce(2).resize((40, 31), Image.BOX))  # 51x39 after the reduce
    for box, got in zip(boxes, js["views"]):
        close(got, image.crop(box).resize((48, 48), Image.BILINEAR))


def test_the_page_mirrors_only_the_close_calls_as_served_logits_does():
    """With a flip_margin (calibration.served_logits): the faces run alone, the mirrors of the close calls (two
    highest biased logits nearer than the margin) run in a second batch, and are averaged in: the page picks the
    same faces and reads the same logits (a linear stand-in for the network, run on both sides)."""
    from dataclasses import replace

    from emotion.calibration import served_logits

    rng = np.random.default_rng(4)
    facts, info = facts_of("small_cnn")
    x = rng.normal(size=(6, *info.input_size)).astype(np.float32)
    weights = rng.normal(0, 0.05, (x[0].size, info.num_classes)).astype(np.float32)
    alone = x.reshape(len(x), -1) @ weights + (info.bias_vector() if info.bias_vector() is not None else 0)
    top = np.sort(alone, axis=1)
    margin = float(np.median(top[:, -1] - top[:, -2]))
    close = np.flatnonzero(top[:, -1] - top[:, -2] < margin)
    assert 0 < len(close) < len(x)
    out = run_js("pixels.js", """
        const W = input.weights, k = W[0].length;
        const run = (b) => {
          const n = b.dims[0], size = b.data.length / n, out = new Float32Array(n * k);
          for (let f = 0; f < n; f++) for (let i = 0; i < size; i++) for (let j = 0; j < k; j++)
            out[f * k + j] += b.data[f * size + i] * W[i][j];
          return out;
        };
        const batch = {data: Float32Array.from(input.x), dims: input.dims};
        const logits = run(batch), rows = m.closeRows(logits, input.dims[0], input.facts);
        return {rows, logits: Array.from(m.withMirrors(logits, run(m.mirrorRows(batch, rows)), rows, k))};""",
                 {"x": x.ravel().tolist(), "dims": list(x.shape), "weights": weights.tolist(),
                  "facts": {**facts, "flip_margin": margin}})
    assert out["rows"] == close.tolist()
    expected = served_logits(lambda b: b.reshape(len(b), -1) @ weights, x, replace(info, flip_margin=margin))
    bias = info.bias_vector() if info.bias_vector() is not None else 0
    np.testing.assert_allclose(np.array(out["logits"]).reshape(expected.shape) + bias, expected, rtol=0, atol=1e-4)


def test_the_page_reads_blazeface_as_the_server_does():
    """blazeface.js: its input from RGBA views is the server's, and from the same network outputs it decodes the
    boxes, keypoints and scores (weighted NMS) that emotion/blazeface.py gives, on the astronaut's views at three
    sizes and a blank one."""
    import onnxruntime as ort

    from emotion.blazeface import BlazeFace, read_model

    views = [np.asarray(camera_frame(w).crop((320 - s, 0, 320 + s, 2 * s)).resize((128, 128), Image.BILINEAR))
             for w, s in ((0.15, 160), (0.11, 110), (0.08, 90))] + [np.full((128, 128, 3), 128, np.uint8)]
    pixels = np.stack(views).astype(np.float32) / 127.5 - 1.0
    outputs = ort.InferenceSession(read_model(), providers=["CPUExecutionProvider"]).run(None, {"input": pixels})
    floor = 0.05
    js = run_js("blazeface.js", """
        const views = input.views.map((v) => ({data: Uint8ClampedArray.from(atob(v), (c) => c.charCodeAt(0))}));
        const x = m.toInput(views);
        return {dims: x.dims, at: input.at.map((i) => x.data[i]),
                found: m.decode(Float32Array.from(input.regressors), Float32Array.from(input.logits), 4, input.floor)};
        """, {"views": [base64.b64encode(np.dstack([v, np.full((128, 128), 255, np.uint8)]).tobytes()).decode()
                        for v in views], "at": list(range(0, pixels.size, 101)), "floor": floor,
              "regressors": outputs[0].ravel().tolist(), "logits": outputs[1].ravel().tolist()})
    assert js["dims"] == list(pixels.shape)
    np.testing.assert_allclose(js["at"], pixels.ravel()[::101], atol=1e-6)
    server = BlazeFace(floor).detect(np.stack(views))
    assert [len(found) for found in server] == [len(found) for found in js["found"]]
    assert [len(found) > 0 for found in server] == [True, True, True, False]
    for got, expected in zip(js["found"], server):
        for face, (box, score, points) in zip(got, expected):
            assert face["box"] == list(box) and abs(face["score"] - score) < 1e-6
            np.testing.assert_allclose(face["keypoints"], points, atol=1e-3)


def test_the_pages_suppression_ends_on_a_degenerate_box():
    """blazeface.js: a detection with no area (width and height 0) once looped forever in the weighted suppression
    (the tab froze); it is now its own detection, as on the server (tests/test_blazeface.py)."""
    from emotion.blazeface import ANCHORS

    regressors = np.zeros((len(ANCHORS), 16), np.float32)
    regressors[100, 2:4] = 20
    logits = np.full(len(ANCHORS), -10.0, np.float32)
    logits[0], logits[100] = 5.0, 3.0
    js = run_js("blazeface.js", "return m.decode(Float32Array.from(input.r), Float32Array.from(input.l), 1, 0.05);",
                {"r": regressors.ravel().tolist(), "l": logits.tolist()})
    (found,) = js
    assert [f["box"][2:] for f in found] == [[0, 0], [20, 20]]


# --------------------------------------------------------------------------------------------- in Chromium
CHROMIUM = Path("/usr/bin/chromium")
FAKE_CAMERA = ["--use-fake-device-for-media-stream"]
SETTLE_S = 8  # the check: after 8 s the page reports the face
QUIET_S = 5  # ... and sends nothing during the next 5 s


def camera_frame(face: float = ASTRONAUT_FACE) -> Image.Image:
    """The astronaut in a 640x480 webcam frame (the size the page asks the camera for, so Chrome's fake camera sends
    it as it is), her face `face` of its width: her photo's top 480 rows at most, centred at the top on gray."""
    photo = astronaut(face)
    frame = Image.new("RGB", (640, 480), (128, 128, 128))
    frame.paste(photo.crop((0, 0, photo.width, min(photo.height, 480))), ((640 - photo.width) // 2, 0))
    return frame


def write_y4m(image: Image.Image, path: Path, frames: int = 2) -> Path:
    """A Y4M video of `image` repeated (what --use-file-for-fake-video-capture loops), BT.601 limited range."""
    import av

    yuv = av.VideoFrame.from_ndarray(np.asarray(image), format="rgb24").reformat(format="yuv420p").to_ndarray()
    with open(path, "wb") as f:
        f.write(f"YUV4MPEG2 W{image.width} H{image.height} F30:1 Ip A1:1 C420jpeg\n".encode())
        for _ in range(frames):
            f.write(b"FRAME\n" + yuv.tobytes())
    return path


@pytest.fixture(scope="module")
def live_server():
    """The app as `python app.py` builds it (shipped models, the default one), served by uvicorn in a thread."""
    import threading
    import time

    import uvicorn

    import app as app_module
    from test_server import free_port

    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("EMOTION_MODEL", raising=False)
        mp.delenv("EMOTION_MODELS", raising=False)
        app = app_module.create_app()
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 120
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.1)
    assert server.started, "uvicorn did not start"
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


def chromium(p, *extra: str):
    from test_server import CHROMIUM_ARGS

    if not CHROMIUM.is_file():
        pytest.skip(f"no browser at {CHROMIUM}: install Debian's chromium (apt-get install -y chromium)")
    return p.chromium.launch(executable_path=str(CHROMIUM), args=[*CHROMIUM_ARGS, *extra])


def stats(page) -> dict:
    return json.loads(page.text_content("#live-stats"))


@pytest.mark.parametrize("face_width", [0.15, 0.08])
def test_in_chromium_the_page_reads_the_astronaut_as_the_server_does_and_sends_nothing(live_server, tmp_path,
                                                                                       face_width):
    """Near (her face 15% of the frame's width) and ~1.5 m from a laptop's camera (8%: BlazeFace, which the page ran
    before YuNet, found nothing there)."""
    import time

    import requests
    from playwright.sync_api import sync_playwright

    frame = camera_frame(face_width)
    video = write_y4m(frame, tmp_path / "astronaut.y4m")
    frame.save(tmp_path / "frame.png")
    model = (Path(__file__).resolve().parents[1] / "models" / "DEFAULT").read_text().strip()
    with sync_playwright() as p:
        browser = chromium(p, *FAKE_CAMERA, f"--use-file-for-fake-video-capture={video}")
        try:
            context = browser.new_context(permissions=["camera"])
            page = context.new_page()
            page.goto(f"{live_server}/live?model={model}")
            page.wait_for_function("JSON.parse(document.querySelector('#live-stats').textContent).faces.length > 0",
                                   timeout=60_000)
            time.sleep(SETTLE_S - 6)  # the tracker's smoothing settles; #live-stats is rewritten every second
            sent = []
            page.on("request", lambda r: sent.append(r.url))
            time.sleep(QUIET_S)
            shown = stats(page)
        finally:
            browser.close()
    assert sent == []  # no frame, crop or result; not even a request to the app
    assert shown["mode"] == "device" and shown["model"] == model and len(shown["faces"]) == 1
    face = shown["faces"][0]
    assert face["emotion"] == "happy" and not face["uncertain"]
    with open(tmp_path / "frame.png", "rb") as f:
        server = requests.post(f"{live_server}/api/predict", files={"file": f}, data={"model": model}).json()
    expected = server["faces"][0]
    for k in "xywh":  # the same face, and the same box: the page searches as the server does
        assert abs(face["box"][k] - expected["box"][k]) <= 1, (face["box"], expected["box"])
    for label, p in expected["probabilities"].items():
        assert abs(face["probabilities"][label] - p) <= 0.03, (label, face["probabilities"], expected)
    print(f"\n/live in headless Chromium, face {face_width:.0%} of the frame ({face['box']['w']:.0f} px): "
          f"{shown['fps']} fps, first result {shown['first_result_s']} s after navigation, "
          f"{shown['downloaded_mb']} MB downloaded")


def test_in_chromium_the_page_searches_a_frame_for_faces_as_the_server_does(live_server):
    """faces.js with the page's detectors (detector.js: YuNet and BlazeFace in onnxruntime-web) on
    webcam frames with the astronaut near and far and on a frame of three faces (one 5% of 640 px, which only the
    second pass finds): the server's search (FaceDetector, its defaults) finds the same faces, with the same square
    boxes, eyes and scores; and so does its follow-up on the frames between searches (FaceDetector.follow)."""
    from playwright.sync_api import sync_playwright

    from emotion.faces import FaceDetector

    frames = [np.asarray(camera_frame(width)) for width in FACE_WIDTHS] + [yunet_scene()]
    with sync_playwright() as p:
        browser = chromium(p)
        try:
            page = browser.new_page()
            page.goto(f"{live_server}/live/files/live/live.css")  # the app's origin, for the modules
            found = page.evaluate("""async (input) => {
                const files = "/live/files", facts = (await (await fetch("/live/config.json")).json()).detector;
                const detector = await import(`${files}/live/detector.js`);
                const faces = await import(`${files}/live/faces.js`);
                const wasm = await detector.fetchBytes(`${files}/vendor/onnxruntime-web/ort-wasm-simd-threaded.wasm`);
                const run = await detector.loadDetector(files, facts, wasm), out = [];
                for (const [rgba, width, height] of input) {
                  const image = {data: Uint8ClampedArray.from(atob(rgba), (c) => c.charCodeAt(0)), width, height};
                  const found = await faces.findFaces(image, facts, run);
                  out.push([found, await faces.followFaces(image, found.map((f) => f.box), facts, run)]);
                }
                return out;
            }""", [(base64.b64encode(np.dstack([f, np.full(f.shape[:2], 255, np.uint8)]).tobytes()).decode(),
                    f.shape[1], f.shape[0]) for f in frames])
        finally:
            browser.close()
    detector = FaceDetector()
    for frame, (got, followed) in zip(frames, found):
        expected = detector.detect(Image.fromarray(frame))
        # the frames between full searches, as the server reads a video's
        follows = detector.follow(Image.fromarray(frame), [f.box for f in expected]).faces
        for page, server in ((got, expected), (followed, follows)):
            assert len(page) == len(server) >= 1
            for face, s in zip(page, server):
                assert np.abs(np.array(face["box"]) - s.box).max() <= 1, (face["box"], s.box)
                assert np.abs(np.array(face["keypoints"]) - np.array(s.keypoints)).max() < 0.5
                assert abs(face["score"] - s.score) < 0.01
    assert [(len(a), len(b)) for a, b in found] == [(1, 1), (1, 1), (1, 1), (3, 3)]


def test_where_the_page_cannot_run_it_says_why_and_offers_the_server_mode(live_server):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = chromium(p)
        try:
            page = browser.new_page()
            page.add_init_script("delete globalThis.WebAssembly")  # as in a browser without it (or with it off)
            page.goto(f"{live_server}/live")
            page.wait_for_selector("#problem:not([hidden])", timeout=30_000)
            assert "WebAssembly" in page.text_content("#problem")
            assert page.get_by_role("button", name="Use the server's webcam mode").is_visible()
        finally:
            browser.close()
        browser = chromium(p, *FAKE_CAMERA)
        try:
            page = browser.new_context().new_page()  # the camera not allowed: a button to try again
            page.goto(f"{live_server}/live")
            page.wait_for_selector("#start:not([hidden])", timeout=60_000)
            assert "not allowed" in page.text_content("#status")
        finally:
            browser.close()


def test_the_live_tab_opens_the_device_mode_where_it_can_run_and_the_server_mode_elsewhere(live_server):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = chromium(p)
        try:
            for has_wasm in (True, False):
                page = browser.new_page()
                if not has_wasm:
                    page.add_init_script("delete globalThis.WebAssembly")
                page.goto(live_server)
                page.get_by_role("tab", name="Live webcam").click()
                page.locator("#live-mode input[value=server]").wait_for(timeout=30_000)
                page.wait_for_function("document.querySelector('#live-mode input:checked')", timeout=10_000)
                if has_wasm:  # the page in a frame, loaded only now that the tab is open
                    page.locator("#live-frame iframe").wait_for(timeout=10_000)
                    assert page.locator("#live-mode input[value=device]").is_checked()
                else:
                    page.locator("#live-mode input[value=server]:checked").wait_for(timeout=10_000)
                    assert page.locator("#live-frame iframe").count() == 0
                page.close()
        finally:
            browser.close()
