"""The web app in-process (FastAPI TestClient): REST routes, every bad input as a JSON 4xx, and the Gradio API."""
from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

import app as app_module
from emotion import LABELS, Predictor
from webapp import render
from webapp.api import BODY_LIMIT
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


@pytest.fixture(scope="module")
def client(tiny_model):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EMOTION_MODEL", f"local-dir:{tiny_model}")
        mp.delenv("EMOTION_MODELS", raising=False)
        app = app_module.create_app()
    with TestClient(app) as c:  # the context runs the lifespan, which starts Gradio's queue
        yield c


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
    assert [m["source"] for m in body["models"] if m["default"]] == [f"local-dir:{tiny_model}"]


def test_predict_multipart_finds_the_astronauts_face(client, astronaut_png, tiny_model):
    r = client.post("/api/predict", **upload(astronaut_png))
    assert r.status_code == 200, r.text
    body = r.json()
    assert len(body["faces"]) == 1
    assert_face(body["faces"][0])
    assert 0.5 <= body["faces"][0]["detection_score"] <= 1
    assert body["image_size"] == {"width": 512, "height": 512}
    assert body["model"]["source"] == f"local-dir:{tiny_model}" and body["model"]["revision"] is None
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
    "too-many-bytes": (lambda png: {"content": b"\0" * (BODY_LIMIT + 1), "headers": {"content-type": "image/png"}},
                       413, "above the limit"),
    "too-many-bytes-chunked": (lambda png: {"content": iter([b"\0" * 2**20] * (BODY_LIMIT // 2**20 + 2)),
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


def test_unexpected_errors_are_json_500_without_a_trace(client, astronaut_png, monkeypatch):
    def boom(self, *a, **k):
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(Predictor, "predict", boom)
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
    assert params == ["image", "model", "max_faces", "min_detection_score"]


def test_gradio_predict_returns_the_rest_json_and_the_same_errors(client, astronaut_png, tiny_model):
    rest = client.post("/api/predict", **upload(astronaut_png)).json()
    event, data = gradio_call(client, "predict", [gradio_upload(client, "a.png", astronaut_png), tiny_model.name,
                                                  20, 0.5])
    assert event == "complete"
    result = data[0]
    assert set(result) == set(rest) and result["model"] == rest["model"]
    assert result["faces"][0]["box"] == rest["faces"][0]["box"]
    assert result["faces"][0]["probabilities"] == pytest.approx(rest["faces"][0]["probabilities"])

    bad = b"hello, not a picture"
    rest_error = client.post("/api/predict", **upload(bad, "notes.txt", "text/plain")).json()["error"]
    event, data = gradio_call(client, "predict", [gradio_upload(client, "notes.txt", bad), tiny_model.name, 20, 0.5])
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


def test_unknown_model_error_lists_every_model_the_server_offers(client, astronaut_png):
    offered = [m["id"] for m in client.get("/api/models").json()["models"]]
    r = client.post("/api/predict", params={"model": "nope"}, **upload(astronaut_png))
    assert r.status_code == 400
    assert offered and all(name in r.json()["error"] for name in offered)


# ------------------------------------------------------------------------------------------------------------ /docs
def test_docs_page_references_only_local_assets_and_they_are_served(client):
    import re

    page = client.get("/docs")
    assert page.status_code == 200 and "swagger" in page.text.lower()
    urls = re.findall(r"""(?:src|href|url)\s*[:=]\s*['"]([^'"]+)['"]""", page.text)
    assert urls and not [u for u in urls if "//" in u], urls  # no CDN, no absolute URL
    for url in urls:
        assert client.get(url).status_code == 200, url
    assert {"/docs-assets/swagger-ui-bundle.js", "/docs-assets/swagger-ui.css", "/openapi.json"} <= set(urls)
