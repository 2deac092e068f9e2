"""The web app in-process (FastAPI TestClient): REST routes, every bad input as a JSON 4xx, and the Gradio API."""
from __future__ import annotations

import base64
import io
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

import app as app_module
from emotion import LABELS, Predictor
from webapp import render
from webapp.settings import current
from webapp.models import ModelRegistry
from webapp.ui import strokes_box

CROP = {"x": 150, "y": 60, "w": 140, "h": 150}


def png_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def astronaut_png(astronaut) -> bytes:
    return png_bytes(astronaut)


def upload(png: bytes, name: str = "astronaut.png", ctype: str = "image/png") -> dict:
    return {"files": {"file": (name, png, ctype)}}


def assert_face(face: dict) -> None:
    assert set(face) >= {"box", "emotion", "confidence", "uncertain", "probabilities", "detection_score"}
    assert set(face["box"]) == {"x", "y", "w", "h"} and all(isinstance(v, int) for v in face["box"].values())
    assert set(face["probabilities"]) == set(LABELS)
    assert sum(face["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
    assert face["emotion"] in LABELS and face["confidence"] == max(face["probabilities"].values())
    assert isinstance(face["uncertain"], bool)


# ------------------------------------------------------------------------------------------------------------ routes
def test_health_names_the_default_model(client, tiny_model):
    r = client.get("/api/health")
    assert r.status_code == 200
    assert r.json()["status"] == "ok" and r.json()["default_model"] == tiny_model.name


def test_models_lists_the_configured_model_as_default(client, tiny_model):
    body = client.get("/api/models").json()
    assert body["default"] == tiny_model.name
    assert [m["source"] for m in body["models"] if m["default"]] == [f"local:{tiny_model.name}"]


def test_responses_name_models_by_id_never_by_server_path(client, tiny_model, astronaut_png):
    root = str(Path(app_module.__file__).resolve().parent)
    texts = [client.get("/api/models").text, client.get("/api/health").text,
             client.post("/api/predict", **upload(astronaut_png)).text]
    for text in texts:
        assert str(tiny_model) not in text and root not in text
    # the id a response shows is one a request may name
    r = client.post("/api/predict", params={"model": f"local:{tiny_model.name}"}, **upload(astronaut_png))
    assert r.status_code == 200 and r.json()["model"]["id"] == tiny_model.name


def test_predict_multipart_finds_the_astronauts_face(client, astronaut_png, tiny_model):
    r = client.post("/api/predict", **upload(astronaut_png))
    assert r.status_code == 200, r.text
    body = r.json()
    assert len(body["faces"]) == 1
    assert_face(body["faces"][0])
    assert 0.5 <= body["faces"][0]["detection_score"] <= 1
    assert body["image_size"] == {"width": 512, "height": 512}
    assert body["model"]["source"] == f"local:{tiny_model.name}" and body["model"]["revision"] is None
    assert set(body["timings_ms"]) >= {"decode", "detect", "classify", "total"}


@pytest.mark.parametrize("encode", [
    lambda b: {"json": {"image": base64.b64encode(b).decode()}},
    lambda b: {"json": {"image": "data:image/png;base64," + base64.b64encode(b).decode()}},
    lambda b: {"json": {"image": base64.urlsafe_b64encode(b).decode().rstrip("=")}},
    lambda b: {"content": b, "headers": {"content-type": "image/png"}},
], ids=["base64", "data-url", "urlsafe-unpadded", "raw-body"])
def test_predict_accepts_base64_data_urls_and_raw_bodies(client, astronaut_png, encode):
    r = client.post("/api/predict", **encode(astronaut_png))
    assert r.status_code == 200, r.text
    assert len(r.json()["faces"]) == 1


@pytest.mark.parametrize("where", ["query", "form", "json"])
def test_options_come_from_query_form_or_json_and_no_face_is_200_empty(client, astronaut_png, where):
    # The astronaut's face scores ~0.92, so a 0.99 threshold leaves no face: 200 with faces [], not an error.
    opt = {"min_detection_score": "0.99"}
    kwargs = {"query": {"params": opt, **upload(astronaut_png)}, "form": {"data": opt, **upload(astronaut_png)},
              "json": {"json": {"image": base64.b64encode(astronaut_png).decode(), **opt}}}[where]
    r = client.post("/api/predict", **kwargs)
    assert r.status_code == 200, r.text
    assert r.json()["faces"] == []


@pytest.fixture(scope="module")
def small_face_png(astronaut) -> bytes:
    """A face ~3% of a big photo's side: the default search finds it, range=short does not look for it."""
    canvas = Image.new("RGB", (1600, 1000), (128, 128, 128))
    canvas.paste(Image.fromarray(astronaut).resize((260, 260)), (700, 400))  # her face ~50 px: 3% of the side
    buf = io.BytesIO()
    canvas.save(buf, "PNG")
    return buf.getvalue()


def test_range_short_skips_the_search_for_small_faces_and_a_bad_range_is_422(client, small_face_png):
    """range=short (selfies: the fast path) skips the search for small faces; anything but auto/short/full is
    refused naming the choices."""
    found = {r: client.post("/api/predict", params={"range": r}, **upload(small_face_png)) for r in ("auto", "short")}
    assert [len(found[r].json()["faces"]) for r in ("auto", "short")] == [1, 0], {r: v.text for r, v in found.items()}
    bad = client.post("/api/predict", params={"range": "sideways"}, **upload(small_face_png))
    assert bad.status_code == 422 and "range" in bad.json()["error"] and "short" in bad.json()["error"], bad.text


@pytest.mark.parametrize("how", ["form", "query", "json-keys", "json-box"])
def test_crop_box_returns_one_face_whose_box_is_the_crop(client, astronaut_png, how):
    as_text = {k: str(v) for k, v in CROP.items()}
    b64 = base64.b64encode(astronaut_png).decode()
    kwargs = {"form": {"data": as_text, **upload(astronaut_png)}, "query": {"params": as_text, **upload(astronaut_png)},
              "json-keys": {"json": {"image": b64, **CROP}}, "json-box": {"json": {"image": b64, "box": CROP}}}[how]
    r = client.post("/api/predict", **kwargs)
    assert r.status_code == 200, r.text
    faces = r.json()["faces"]
    assert len(faces) == 1 and faces[0]["box"] == CROP and faces[0]["detection_score"] is None
    assert_face(faces[0])


def test_openapi_docs_describe_predict(client):
    assert client.get("/docs").status_code == 200
    spec = client.get("/openapi.json").json()
    body = spec["paths"]["/api/predict"]["post"]["requestBody"]["content"]
    assert {"multipart/form-data", "application/json"} <= set(body)
    assert {"/api/health", "/api/models"} <= set(spec["paths"])


# ------------------------------------------------------------------------------------------------------------ errors
def truncated_png(png: bytes) -> bytes:
    return png[: len(png) // 2]


def huge_png() -> bytes:  # 7000 x 6000 = 42 MP: over the pixel limit though tiny on disk
    buf = io.BytesIO()
    Image.new("L", (7000, 6000)).save(buf, format="PNG")
    return buf.getvalue()


BAD_REQUESTS = {
    "not-an-image": (lambda png: upload(b"hello, not a picture", "notes.txt", "text/plain"), 415, "send a JPEG, PNG"),
    "truncated-png": (lambda png: upload(truncated_png(png)), 415, "damaged or incomplete"),
    "empty-body": (lambda png: {"content": b"", "headers": {"content-type": "image/png"}}, 400, "body is empty"),
    "empty-file": (lambda png: upload(b""), 400, "is empty"),
    "no-file-field": (lambda png: {"data": {"max_faces": "3"}, "files": {"other": ("a.png", png)}}, 400,
                      'no "file" field'),
    "bad-base64": (lambda png: {"json": {"image": "this is *not* base64!"}}, 400, "not valid base64"),
    "base64-not-image": (lambda png: {"json": {"image": base64.b64encode(b"plain text").decode()}}, 415,
                         "could not read an image"),
    "json-without-image": (lambda png: {"json": {"picture": "abc"}}, 400, 'needs an "image" key'),
    "invalid-json": (lambda png: {"content": b"{nope", "headers": {"content-type": "application/json"}}, 400,
                     "not valid JSON"),
    "wrong-content-type": (lambda png: {"content": b"abc", "headers": {"content-type": "text/plain"}}, 415,
                           "unsupported Content-Type"),
    "unknown-model": (lambda png: {"params": {"model": "nope"}, **upload(png)}, 400,
                      "unknown model 'nope': choose one of"),
    "max-faces-zero": (lambda png: {"params": {"max_faces": "0"}, **upload(png)}, 422, "max_faces"),
    "score-not-a-number": (lambda png: {"data": {"min_detection_score": "high"}, **upload(png)}, 422,
                           "min_detection_score"),
    "partial-box": (lambda png: {"data": {"x": "1", "y": "2"}, **upload(png)}, 422, "needs all of x, y, w, h"),
    "box-outside": (lambda png: {"data": {"x": "400", "y": "0", "w": "200", "h": "10"}, **upload(png)}, 400,
                    "goes outside the 512x512 image"),
    "too-many-pixels": (lambda png: upload(huge_png()), 413, "megapixels"),
    "too-many-bytes": (lambda png: {"content": b"\0" * (current().photo_body_limit + 1),
                                    "headers": {"content-type": "image/png"}}, 413, "above the limit"),
    "too-many-bytes-chunked": (lambda png: {"content": iter([b"\0" * 2**20] * (current().photo_body_limit // 2**20
                                                                                 + 2)),
                                            "headers": {"content-type": "image/png"}}, 413, "above the limit"),
}


@pytest.mark.parametrize("name", list(BAD_REQUESTS))
def test_bad_requests_are_json_4xx_saying_what_to_send(client, astronaut_png, name):
    make, status, words = BAD_REQUESTS[name]
    r = client.post("/api/predict", **make(astronaut_png))
    assert r.status_code == status, r.text
    assert list(r.json()) == ["error"] and words in r.json()["error"]
    assert "Traceback" not in r.text


def test_get_on_predict_says_to_post(client):
    r = client.get("/api/predict")
    assert r.status_code == 405 and "use POST" in r.json()["error"]


@pytest.fixture
def phone_jpeg(monkeypatch, tiny_model, astronaut) -> bytes:
    """A 4032x3024 JPEG with the astronaut at 1400 px at (1500, 900), served by the tiny model alone."""
    monkeypatch.setattr("webapp.models.shipped_models", lambda: {})
    monkeypatch.setenv("EMOTION_MODEL", f"local-dir:{tiny_model}")
    monkeypatch.delenv("EMOTION_MODELS", raising=False)
    canvas = Image.new("RGB", (4032, 3024), (128, 128, 128))
    canvas.paste(Image.fromarray(astronaut).resize((1400, 1400)), (1500, 900))
    buf = io.BytesIO()
    canvas.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def test_a_large_jpeg_is_decoded_at_the_size_the_search_needs_and_answered_in_its_own_pixels(phone_jpeg):
    """REST and the UI hand the file's bytes to the search (emotion.faces.decode_and_find): a 12 MP JPEG is decoded
    at 1/4 scale for it, not whole, and the answer's size and boxes are the file's; `timings_ms.decode` is the
    decoding inside the search."""
    from webapp.service import parse_options, predict_with_image

    answer, img = predict_with_image(ModelRegistry.from_env(), phone_jpeg, parse_options())
    assert img.size == (1008, 756)  # what the search needed, not the 12 MP
    assert answer["image_size"] == {"width": 4032, "height": 3024}
    (face,) = answer["faces"]
    box = face["box"]
    assert abs(box["x"] - (1500 + 178 * 1400 / 512)) < 80 and abs(box["y"] - (900 + 80 * 1400 / 512)) < 120
    assert set(answer["timings_ms"]) >= {"decode", "detect", "classify", "total"}
    assert 0 < answer["timings_ms"]["decode"] < answer["timings_ms"]["total"]


def test_a_crop_box_on_a_large_jpeg_decodes_it_at_the_scale_the_box_needs(phone_jpeg, monkeypatch):
    """A 420x440 box over a 12 MP JPEG's face: decoded at 1/4 scale (its short side still twice the model's
    input), the answer's box exactly the one given and the size the file's, the probabilities those of the whole
    decode within 0.05; a box outside the file is refused with the file's size; with action units, whole."""
    from emotion import EmotionError
    from emotion.images import load_image
    from webapp.service import parse_options, predict_with_image

    registry, box = ModelRegistry.from_env(), {"x": 1901, "y": 1003, "w": 420, "h": 440}
    answer, img = predict_with_image(registry, phone_jpeg, parse_options(box))
    assert img.size == (1008, 756)
    assert answer["image_size"] == {"width": 4032, "height": 3024} and answer["faces"][0]["box"] == box
    _, predictor = registry.get(None)
    whole = predictor.predict_crop(load_image(phone_jpeg), tuple(box.values()))
    assert max(abs(answer["faces"][0]["probabilities"][k] - v) for k, v in whole.probabilities.items()) < 0.05
    with pytest.raises(EmotionError, match="goes outside the 4032x3024 image"):
        predict_with_image(registry, phone_jpeg, parse_options({"x": 4000, "y": 0, "w": 100, "h": 100}))
    monkeypatch.setattr(type(predictor), "add_action_units", lambda self, img, faces: faces)
    _, img = predict_with_image(registry, phone_jpeg, parse_options({"action_units": True, **box}))
    assert img.size == (4032, 3024)


def test_unexpected_errors_are_json_500_without_a_trace(client, astronaut_png, monkeypatch):
    def boom(self, *a, **k):
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(Predictor, "detect", boom)  # the search REST runs (then classify_detected)
    r = client.post("/api/predict", **upload(astronaut_png))
    assert r.status_code == 500
    assert "internal error" in r.json()["error"] and "secret" not in r.text and "Traceback" not in r.text


@pytest.mark.parametrize("model, words", [(None, "EMOTION_MODEL"), ("local-dir:/no/such/model", "could not be loaded")])
def test_a_missing_model_is_503_naming_the_fix(monkeypatch, astronaut_png, model, words):
    monkeypatch.setattr("webapp.models.shipped_models", lambda: {})
    monkeypatch.setattr("emotion.sources.shipped_models", lambda: {})
    monkeypatch.delenv("EMOTION_MODELS", raising=False)
    if model:
        monkeypatch.setenv("EMOTION_MODEL", model)
    else:
        monkeypatch.delenv("EMOTION_MODEL", raising=False)
    c = TestClient(app_module.create_app())
    r = c.post("/api/predict", **upload(astronaut_png))
    assert r.status_code == 503 and words in r.json()["error"]
    health = c.get("/api/health")  # the default cannot load: health says so (it said "ok" before)
    assert health.status_code == 503 and words in health.json()["error"]
    assert app_module.warm_up(c.app) is False  # and startup says so in one line instead of serving silently


def test_startup_loads_the_default_model_before_serving(client):
    registry = client.app.state.registry
    assert app_module.warm_up(client.app) and registry.is_loaded(registry.default)


# ---------------------------------------------------------------------------------------------------- model registry
def test_registry_adds_emotion_models_once_and_refuses_ambiguous_sources(monkeypatch, tiny_model, tmp_path):
    other = tmp_path / "other"
    monkeypatch.setattr("webapp.models.shipped_models", lambda: {})
    monkeypatch.setenv("EMOTION_MODEL", f"local-dir:{tiny_model}")
    monkeypatch.setenv("EMOTION_MODELS", f"local-dir:{tiny_model}, local-dir:{other} ,hf-hub:org/name@v2")
    reg = ModelRegistry.from_env()
    assert list(reg.sources) == [tiny_model.name, "other", "org/name@v2"] and reg.default == tiny_model.name
    assert reg.describe("org/name@v2")["revision"] == "v2"
    monkeypatch.setenv("EMOTION_MODELS", "org/name")
    with pytest.raises(ValueError, match="hf-hub:org/name"):
        ModelRegistry.from_env()


def test_models_say_which_has_a_blendshape_head(monkeypatch, tiny_model):
    """GET /api/models: a loaded model says whether a second look reads its faces (and on what), null without one."""
    monkeypatch.setattr("webapp.models.shipped_models", lambda: {})
    monkeypatch.setenv("EMOTION_MODEL", f"local-dir:{tiny_model}")
    monkeypatch.setenv("EMOTION_MODELS", f"local-dir:{Path(__file__).resolve().parents[1] / 'models' / 'small_cnn'}")
    reg = ModelRegistry.from_env()
    reg.get(tiny_model.name), reg.get("small_cnn")
    assert reg.describe(tiny_model.name)["blendshape_head"] is None
    head = reg.describe("small_cnn")["blendshape_head"]
    assert head["label"] == "contempt" and head["features"] > head["landmark_features"] > 0 and head["gate"] > 0


# ---------------------------------------------------------------------------------------------------------- gradio
def gradio_call(client, api_name: str, data: list) -> tuple[str, object]:
    """Call a Gradio endpoint the way any HTTP client can: POST, then read the event stream."""
    event_id = client.post(f"/gradio_api/call/{api_name}", json={"data": data}).json()["event_id"]
    stream = client.get(f"/gradio_api/call/{api_name}/{event_id}").text
    event = data_line = None
    for line in stream.splitlines():
        if line.startswith("event:"):
            event = line.split(":", 1)[1].strip()
        elif line.startswith("data:") and event in ("complete", "error"):
            data_line = line.split(":", 1)[1].strip()
    return event, json.loads(data_line)


def gradio_upload(client, name: str, content: bytes) -> dict:
    path = client.post("/gradio_api/upload", files={"files": (name, content)}).json()[0]
    return {"path": path, "orig_name": name, "meta": {"_type": "gradio.FileData"}}


def test_gradio_api_lists_predict_with_its_options(client):
    info = client.get("/gradio_api/info").json()
    params = [p["parameter_name"] for p in info["named_endpoints"]["/predict"]["parameters"]]
    assert params == ["image", "model", "max_faces", "min_detection_score", "range", "action_units"]


def test_the_ui_face_search_is_the_rest_range_option(client, small_face_png, tiny_model):
    """The UI's Face search (and gradio_client's `range`) searches as REST's `range` does; a forged value gets the
    REST message naming the choices."""
    found = {}
    for r in ("auto", "short"):
        event, data = gradio_call(client, "predict", [gradio_upload(client, "big.png", small_face_png),
                                                      tiny_model.name, 20, 0.5, r, False])
        assert event == "complete", data
        found[r] = len(data[0]["faces"])
    assert found == {"auto": 1, "short": 0}
    event, data = gradio_call(client, "predict", [gradio_upload(client, "big.png", small_face_png), tiny_model.name,
                                                  20, 0.5, "sideways", False])
    rest = client.post("/api/predict", params={"range": "sideways"}, **upload(small_face_png)).json()["error"]
    assert event == "error" and data["error"] == rest


def test_gradio_predict_returns_the_rest_json_and_the_same_errors(client, astronaut_png, tiny_model):
    rest = client.post("/api/predict", **upload(astronaut_png)).json()
    event, data = gradio_call(client, "predict", [gradio_upload(client, "a.png", astronaut_png), tiny_model.name,
                                                  20, 0.5, "auto", False])
    assert event == "complete"
    result = data[0]
    assert set(result) == set(rest) and result["model"] == rest["model"]
    assert result["faces"][0]["box"] == rest["faces"][0]["box"]
    assert result["faces"][0]["probabilities"] == pytest.approx(rest["faces"][0]["probabilities"])

    bad = b"hello, not a picture"
    rest_error = client.post("/api/predict", **upload(bad, "notes.txt", "text/plain")).json()["error"]
    event, data = gradio_call(client, "predict", [gradio_upload(client, "notes.txt", bad), tiny_model.name, 20, 0.5,
                                                  "auto", False])
    assert event == "error" and data["error"] == rest_error


def test_gradio_crop_classifies_the_painted_region_without_detection(client, astronaut_png, tiny_model):
    layer = Image.new("RGBA", (512, 512), (0, 0, 0, 0))
    layer.paste((255, 0, 102, 255), (CROP["x"], CROP["y"], CROP["x"] + CROP["w"], CROP["y"] + CROP["h"]))
    buf = io.BytesIO()
    layer.save(buf, format="PNG")
    editor = {"background": gradio_upload(client, "photo.png", astronaut_png),
              "layers": [gradio_upload(client, "layer.png", buf.getvalue())], "composite": None}
    event, data = gradio_call(client, "predict_crop", [editor, tiny_model.name])
    assert event == "complete", data
    faces = data[0]["faces"]
    assert len(faces) == 1 and faces[0]["box"] == CROP and faces[0]["detection_score"] is None


def test_an_upload_is_decoded_once_per_rest_request_and_per_ui_photo_event(client, astronaut_png, tiny_model,
                                                                           monkeypatch):
    import emotion.images

    passes, real = [], emotion.images._finish  # the size check, pixel decode, rotation and RGB conversion

    def counted(image, name):
        passes.append(name)
        return real(image, name)

    monkeypatch.setattr(emotion.images, "_finish", counted)
    assert client.post("/api/predict", **upload(astronaut_png)).status_code == 200
    assert len(passes) == 1, passes
    passes.clear()
    ref = gradio_upload(client, "a.png", astronaut_png)  # the Photo tab: predict, then draw on the same upload
    event, data = gradio_call(client, "predict", [ref, tiny_model.name, 20, 0.5, "auto", False])
    assert event == "complete"
    status, text = queue_event(client, "show", [ref, data[0]])
    assert status == 200 and "/gradio_api/file=" in text and "1 face" in text, text
    assert len(passes) == 1, passes


def test_photos_kept_for_drawing_are_bounded_in_pixels_and_refuse_forged_paths(client, canaries):
    from webapp.ui import Previews

    previews, image = Previews(max_pixels=3 * 64 * 64), Image.new("RGB", (64, 64))
    refs = [gradio_upload(client, f"{i}.png", png_bytes(np.full((8, 8, 3), i, np.uint8))) for i in range(5)]
    for ref in refs:
        previews.keep(ref, image)
    assert previews.pixels == 3 * 64 * 64  # the two oldest were dropped
    assert previews.take(refs[0]) is None and previews.take(refs[4]) is image and previews.pixels == 2 * 64 * 64
    with pytest.raises(Exception, match="not uploaded to this server"):
        previews.take(forged(canaries["image"], True))


# ---------------------------------------------------------------------------------------------------------- drawing
def test_strokes_box_bounds_everything_painted():
    layer = Image.new("RGBA", (100, 80), (0, 0, 0, 0))
    layer.paste((255, 0, 0, 255), (10, 20, 30, 50))
    layer2 = Image.new("RGBA", (100, 80), (0, 0, 0, 0))
    layer2.paste((255, 0, 0, 128), (60, 5, 70, 15))
    assert strokes_box([layer, layer2]) == (10, 5, 60, 45)
    assert strokes_box([Image.new("RGBA", (10, 10))]) is None and strokes_box(None) is None


def test_annotate_keeps_the_size_and_colours_the_box(astronaut):
    face = {"box": {"x": 100, "y": 0, "w": 200, "h": 512}, "emotion": "happy", "confidence": 0.4, "uncertain": True}
    out = render.annotate(Image.fromarray(astronaut), [face])
    assert out.size == (512, 512) and render.caption(face) == "happy? 40%"
    assert out.getpixel((100, 300)) == Image.new("RGB", (1, 1), render.COLOURS["happy"]).getpixel((0, 0))


def fake_face(probabilities: dict, uncertain: bool = False) -> dict:
    scores = {label: probabilities.get(label, 0.0) for label in LABELS}
    top = max(scores, key=scores.get)
    return {"box": {"x": 0, "y": 0, "w": 10, "h": 10}, "emotion": top, "confidence": scores[top],
            "uncertain": uncertain, "probabilities": scores}


GROUP = {"faces": [fake_face({"happy": 0.87, "neutral": 0.09, "sad": 0.04}),
                   fake_face({"sad": 0.41, "neutral": 0.38, "anger": 0.21}, uncertain=True),
                   fake_face({"surprise": 0.6, "fear": 0.3, "happy": 0.1})]}


def event_output(client, name: str, data: list, event_data: dict | None = None) -> list:
    """A private UI event's outputs, sent as the browser sends it (with its event data, such as a table click)."""
    session = f"test{time.monotonic_ns()}"
    r = client.post("/gradio_api/queue/join", json={"fn_index": fn_index(client, name), "data": data,
                                                    "session_hash": session, "event_data": event_data,
                                                    "trigger_id": None})
    assert r.status_code == 200, r.text
    with client.stream("GET", f"/gradio_api/queue/data?session_hash={session}") as stream:
        for line in stream.iter_lines():
            if '"process_completed"' in line:
                message = json.loads(line.removeprefix("data:"))
                assert message["success"], message
                return message["output"]["data"]
    raise AssertionError(f"{name}: no process_completed message")


def test_a_group_photo_lists_each_face_in_one_row_and_shows_the_bars_of_the_face_picked(client):
    table, pick, bars = event_output(client, "list_faces", [GROUP])
    assert table["visible"] and table["value"]["data"] == [[1, "happy", "87%", "neutral 9%"],
                                                          [2, "sad?", "41%", "neutral 38%"],
                                                          [3, "surprise", "60%", "fear 30%"]]
    assert pick["visible"] and pick["value"] == 1 and [c[1] for c in pick["choices"]] == [1, 2, 3]
    assert bars["visible"] and bars["value"]["label"] == "happy" and len(bars["value"]["confidences"]) == 8
    assert bars["label"] == "Face 1: happy 87%"

    (bars,) = event_output(client, "face_bars", [GROUP, 2])  # picked in the menu
    assert bars["label"] == "Face 2: sad? 41% (uncertain)" and bars["value"]["label"] == "sad"
    pick, bars = event_output(client, "pick_table_row", [GROUP], {"index": [2, 1], "value": "surprise"})
    assert pick["value"] == 3 and bars["label"] == "Face 3: surprise 60%"
    (bars,) = event_output(client, "face_bars", [GROUP, 9])  # a forged number: nothing to show, no error
    assert not bars["visible"]


def test_one_face_shows_its_full_bars_without_the_table(client):
    table, pick, bars = event_output(client, "list_faces", [{"faces": GROUP["faces"][:1]}])
    assert not table["visible"] and not pick["visible"]
    assert bars["visible"] and bars["label"] == "Face 1: happy 87%" and len(bars["value"]["confidences"]) == 8
    table, pick, bars = event_output(client, "list_faces", [{"faces": []}])
    assert not table["visible"] and not pick["visible"] and not bars["visible"]


def test_the_photo_summary_leaves_a_groups_faces_to_the_table():
    group = {**GROUP, "model": {"id": "m"}, "timings_ms": {"total": 12.0}}
    assert render.summary(group, listed=True) == "**3 faces** (m, 12 ms)"
    assert "- Face 3: **surprise** 60%" in render.summary(group)  # the webcam tab has no table
    one = {**group, "faces": GROUP["faces"][:1]}
    assert render.summary(one, listed=True).endswith("- Face 1: **happy** 87%")


def test_a_malformed_result_sent_to_the_face_list_is_one_message(client):
    status, text = queue_event(client, "list_faces", [{"faces": [{"emotion": "happy"}, {}]}])
    assert status == 200 and "not a result the predict step returned" in text and "Traceback" not in text


def test_unknown_model_error_lists_every_model_the_server_offers(client, astronaut_png):
    offered = [m["id"] for m in client.get("/api/models").json()["models"]]
    r = client.post("/api/predict", params={"model": "nope"}, **upload(astronaut_png))
    assert r.status_code == 400
    assert offered and all(name in r.json()["error"] for name in offered)


# ---------------------------------------------------------------------------------------------------- hostile callers
def fn_index(client, name: str) -> int:
    deps = client.get("/config").json()["dependencies"]
    return next(i for i, d in enumerate(deps) if d.get("api_name") == name)


def queue_event(client, name: str, data: list) -> tuple[int, str]:
    """Send any UI event (named or private) the way the browser does; (HTTP status of the join, all text seen)."""
    session = f"test{time.monotonic_ns()}"
    r = client.post("/gradio_api/queue/join", json={"fn_index": fn_index(client, name), "data": data,
                                                    "session_hash": session, "event_data": None, "trigger_id": None})
    if r.status_code != 200:
        return r.status_code, r.text
    seen = []
    with client.stream("GET", f"/gradio_api/queue/data?session_hash={session}") as stream:
        for line in stream.iter_lines():
            seen.append(line)
            if '"process_completed"' in line:
                break
    return 200, "\n".join(seen)


@pytest.fixture(scope="module")
def canaries(tmp_path_factory, astronaut_png) -> dict:
    folder = tmp_path_factory.mktemp("secrets")
    (folder / "passwd").write_text("root:CANARY-7f3a:0:0:root:/root:/bin/bash\n")
    (folder / "secret.png").write_bytes(astronaut_png)  # an image the server must not decode for a caller
    return {"text": str(folder / "passwd"), "image": str(folder / "secret.png")}


def forged(path: str, meta: bool) -> dict:
    return {"path": path, **({"meta": {"_type": "gradio.FileData"}} if meta else {})}


EVENTS = {  # every UI event that takes a file, with the data it expects around the file reference
    "predict": lambda ref, model: [ref, model, 20, 0.5, "auto", False],
    "predict_crop": lambda ref, model: [{"background": ref, "layers": [], "composite": None}, model],
    "live_frame": lambda ref, model: [ref, model, 20, 0.5, "auto"],
    "to_editor": lambda ref, model: [ref],
    "predict_video": lambda ref, model: [ref, model, "fps", 5, 20, 0.5, False],
}


@pytest.mark.parametrize("meta", [True, False], ids=["with-meta", "without-meta"])
@pytest.mark.parametrize("event", list(EVENTS))
def test_ui_events_never_read_a_file_the_caller_did_not_upload(client, canaries, tiny_model, event, meta):
    for kind, path in canaries.items():
        for ref in (forged(path, meta), path, forged(f"{tempfile.gettempdir()}/gradio/../../{path}", meta)):
            status, text = queue_event(client, event, EVENTS[event](ref, tiny_model.name))
            assert "CANARY" not in text and '"faces"' not in text and "/gradio_api/file=" not in text, text
            assert status == 400 or '"success": false' in text.replace('":false', '": false'), text
            assert "Traceback" not in text
        assert "CANARY" not in client.get(f"/gradio_api/file={canaries['text']}").text


def test_a_forged_reference_is_a_400_that_says_to_upload(client, canaries, tiny_model):
    r = client.post("/gradio_api/call/predict", json={"data": [forged(canaries["image"], True), tiny_model.name,
                                                               20, 0.5, "auto", False]})
    assert r.status_code == 400 and "not uploaded to this server" in r.json()["error"]
    assert "handle_file" in r.json()["error"]


def test_the_shipped_example_and_uploads_are_accepted(client, astronaut_png, tiny_model):
    # The page sends the example as Gradio's cached copy, listed in the config.
    dataset = next(c for c in client.get("/config").json()["components"] if c["type"] == "dataset")
    example = dataset["props"]["samples"][0][0]
    assert example["path"].endswith("astronaut.jpg")
    event, data = gradio_call(client, "predict", [example, tiny_model.name, 20, 0.5, "auto", False])
    assert event == "complete" and len(data[0]["faces"]) == 1
    status, text = queue_event(client, "to_editor", [gradio_upload(client, "a.png", astronaut_png)])
    assert status == 200 and "/gradio_api/file=" in text


@pytest.mark.parametrize("body", [b"[" * 100_000, b'{"data": [' * 50_000, b'{"data": ["\xff\xfe"]}', b"{nope"],
                         ids=["deep-list", "deep-dict", "bad-utf8", "invalid"])
@pytest.mark.parametrize("route", ["/api/predict", "/gradio_api/queue/join", "/gradio_api/call/predict"])
def test_any_json_parse_failure_is_a_400_json_error(client, route, body):
    r = client.post(route, content=body, headers={"content-type": "application/json"})
    assert r.status_code == 400, r.text
    assert "error" in r.json() and "Traceback" not in r.text
    assert client.get("/api/health").status_code == 200


def test_gradio_uploads_are_bounded_per_request(client, astronaut_png):
    many = [("files", (f"{i}.png", astronaut_png)) for i in range(20)]
    r = client.post("/gradio_api/upload", files=many)
    assert r.status_code == 413 and "at most" in r.json()["error"]
    r = client.post("/gradio_api/upload", content=b"x", headers={
        "content-type": "multipart/form-data; boundary=b", "content-length": str(10**9)})
    assert r.status_code == 413
    assert client.post("/gradio_api/upload", files={"files": ("a.png", astronaut_png)}).status_code == 200


def test_uploads_are_deleted_after_use(monkeypatch, tiny_model, astronaut_png):
    monkeypatch.setattr("webapp.ui.DELETE_CACHE", (1, 1))
    monkeypatch.setenv("EMOTION_MODEL", f"local-dir:{tiny_model}")
    with TestClient(app_module.create_app()) as c:
        path = Path(c.post("/gradio_api/upload", files={"files": ("old.png", astronaut_png)}).json()[0])
        assert path.is_file()
        deadline = time.monotonic() + 10
        while path.exists() and time.monotonic() < deadline:
            time.sleep(0.25)
        assert not path.exists()


def test_a_full_inference_queue_answers_503_with_retry_after(client, astronaut_png, monkeypatch):
    monkeypatch.setattr(client.app.state.pool, "capacity", 0)
    r = client.post("/api/predict", **upload(astronaut_png))
    assert r.status_code == 503 and "busy" in r.json()["error"] and int(r.headers["Retry-After"]) > 0
    event, data = gradio_call(client, "predict", [gradio_upload(client, "a.png", astronaut_png), None, 20, 0.5, "auto",
                                                  False])
    assert event == "error" and "busy" in data["error"]


def test_concurrent_predictions_never_exceed_the_workers(client, astronaut_png, monkeypatch):
    import threading
    from concurrent.futures import ThreadPoolExecutor

    import webapp.api

    pool, running, peak, lock = client.app.state.pool, [0], [0], threading.Lock()
    real = webapp.api.predict_image

    def slow_predict(*args):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        try:
            time.sleep(0.2)
            return real(*args)
        finally:
            with lock:
                running[0] -= 1

    monkeypatch.setattr(webapp.api, "predict_image", slow_predict)
    monkeypatch.setattr(pool, "capacity", pool.workers + 1)
    with ThreadPoolExecutor(8) as ex:
        statuses = list(ex.map(lambda _: client.post("/api/predict", **upload(astronaut_png)).status_code, range(8)))
    assert set(statuses) <= {200, 503} and 200 in statuses and 503 in statuses, statuses
    assert peak[0] <= pool.workers


# ------------------------------------------------------------------------------------------------------------ /docs
def test_docs_page_references_only_local_assets_and_they_are_served(client):
    import re

    page = client.get("/docs")
    assert page.status_code == 200 and "swagger" in page.text.lower()
    urls = re.findall(r"""(?:src|href|url)\s*[:=]\s*['"]([^'"]+)['"]""", page.text)
    assert urls and not [u for u in urls if "//" in u], urls  # no CDN, no absolute URL
    for url in urls:
        assert client.get(url).status_code == 200, url
    assert {"/docs-assets/swagger-ui-bundle.js", "/docs-assets/swagger-ui.css", "/docs-openapi.json"} <= set(urls)
    # the bundled Swagger UI 3 refuses "openapi: 3.1.0": it reads the same schema labelled 3.0.3
    spec, full = client.get("/docs-openapi.json").json(), client.get("/openapi.json").json()
    assert spec["openapi"] == "3.0.3" and full["openapi"].startswith("3.1") and spec["paths"] == full["paths"]


def test_redoc_is_not_a_cdn_page_but_leads_to_the_offline_docs(client):
    r = client.get("/redoc", follow_redirects=False)
    assert r.status_code in (302, 307) and r.headers["location"] == "/docs", (r.status_code, r.text[:300])
    page = client.get("/redoc")
    assert page.status_code == 200 and "swagger-ui-bundle.js" in page.text and "cdn" not in page.text.lower()
