"""The Gradio Blocks UI: a photo tab, a live webcam tab, a crop tab and a video tab (`video_ui`), over the same JSON
the REST API returns.

The photo tab's first step is the named endpoint `predict` (what `gradio_client` calls); drawing the boxes and the
charts is a second, private step, so API callers get exactly the JSON.
"""
from __future__ import annotations

import functools
import logging
import threading
import time
from collections import OrderedDict
from contextlib import contextmanager
from typing import Any

import gradio as gr
from PIL import Image

from emotion import EmotionError
from emotion.faces import DEFAULT_MAX_FACES, DEFAULT_MIN_SCORE, DEFAULT_RANGE, RANGES
from emotion.images import MAX_PIXELS, load_image
from emotion.video import FaceTracker

from . import render
from .au_ui import action_unit_charts, action_units_box
from .components import SafeImageEditor
from .face_list import face_details
from .files import EXAMPLES, SEND_A_FILE, check_file_ref, read_upload
from .live_ui import live_modes
from .models import ModelRegistry
from .pool import InferencePool
from .service import (INTERNAL_ERROR, MAX_FACES, answer, decode_base64_image, megabytes, parse_options, predict_faces,
                      predict_image, predict_with_image)
from .settings import current
from .video_ui import build_video_tab

log = logging.getLogger(__name__)

DELETE_CACHE = (300, 900)  # every 5 min, uploads and results older than 15 min are deleted (all at shutdown)
FACE_SEARCH = [(name, r) for r, name in {"auto": "Auto", "short": "Near only", "full": "Every face"}.items()
               if r in RANGES]
INTRO = """# Emotion Detection
Finds every face in a photo and estimates its expression over 8 emotions (anger, contempt, disgust, fear, happy,
neutral, sad, surprise). When no emotion clearly wins, the face is marked *uncertain* and its caption gets a **?**.
REST: `POST /api/predict`, `POST /api/predict_video` ([docs](/docs)) · Python: `gradio_client`, endpoints `/predict`,
`/predict_video`."""


@contextmanager
def ui_errors():
    """Our errors become gr.Error with the same words the REST API uses; anything else is logged, not shown."""
    try:
        yield
    except gr.Error:
        raise
    except EmotionError as e:
        raise gr.Error(str(e), title="Cannot analyse this", print_exception=False) from None
    except Exception:
        log.exception("UI request failed")
        raise gr.Error(INTERNAL_ERROR) from None


def image_source(payload: Any) -> bytes:
    """An un-preprocessed gr.Image value -> the bytes of an upload this server received (or of a data URL).

    Only a file reference into Gradio's upload folder is read (`files.read_upload`); a bare path or
    anything else is refused: event data is written by the client.
    """
    if payload is None:
        raise EmotionError("no image: upload a photo, paste one, or take a webcam snapshot")
    if isinstance(payload, dict) and payload.get("path"):
        return read_upload(payload["path"])
    url = payload.get("url") if isinstance(payload, dict) else payload
    if isinstance(url, str) and url.startswith("data:"):
        return decode_base64_image(url)
    raise EmotionError(f"the image must be an uploaded file or a data URL: {SEND_A_FILE}")


def strokes_box(layers: list[Image.Image] | None) -> tuple[int, int, int, int] | None:
    """The (x, y, w, h) around everything painted on the editor's layers (RGBA, or their "L" alpha masks)."""
    masks = [layer.getchannel("A") if layer.mode == "RGBA" else layer for layer in layers or []
             if layer.mode in ("RGBA", "L")]
    boxes = [mask.getbbox() for mask in masks]
    boxes = [b for b in boxes if b]
    if not boxes:
        return None
    x0, y0 = min(b[0] for b in boxes), min(b[1] for b in boxes)
    x1, y1 = max(b[2] for b in boxes), max(b[3] for b in boxes)
    return x0, y0, x1 - x0, y1 - y0


class Previews:
    """The photos the predict step decoded, for the draw step that follows it: one decode per upload.

    References, not copies, keyed by the upload's checked path; the oldest are dropped beyond `max_pixels` in all
    (3 phone photos, or one of the largest we take), since an API call's photo is never drawn.
    """

    def __init__(self, max_pixels: int = MAX_PIXELS):
        self.max_pixels, self.pixels = max_pixels, 0
        self._items: OrderedDict[str, Image.Image] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def _key(payload: Any) -> str | None:
        path = payload.get("path") if isinstance(payload, dict) else None
        return str(check_file_ref(path)) if path else None

    def keep(self, payload: Any, image: Image.Image) -> None:
        key = self._key(payload)
        if key is None:  # a data URL: nothing to find it by
            return
        with self._lock:
            self._drop(key)
            self._items[key] = image
            self.pixels += image.width * image.height
            while self.pixels > self.max_pixels:
                self._drop(next(iter(self._items)))

    def take(self, payload: Any) -> Image.Image | None:
        """The decoded photo of this upload, or None when it was not kept (then decode it again)."""
        key = self._key(payload)
        with self._lock:
            return self._drop(key)

    def _drop(self, key: str | None) -> Image.Image | None:
        image = self._items.pop(key, None)
        if image is not None:
            self.pixels -= image.width * image.height
        return image


class Handlers:
    """The UI's event handlers, over one model registry and inference pool.

    The inference handlers run on the pool's workers (`bounded`, applied in __init__). Gradio names the private
    endpoints after the methods and reads the components' values from their parameters.
    """

    def __init__(self, registry: ModelRegistry, pool: InferencePool):
        self.registry, self.pool, self.previews = registry, pool, Previews()
        for name in ("predict_json", "draw", "live_frame", "predict_region"):
            setattr(self, name, self.bounded(getattr(self, name)))

    def bounded(self, fn):
        """`fn` as a handler that runs on an inference worker once the pool admits it (else a busy message)."""
        @functools.wraps(fn)
        def run(*args):
            with ui_errors(), self.pool.admit():
                return self.pool.call(fn, *args)
        return run

    def predict_json(self, image, model, max_faces, min_detection_score, range,  # noqa: A002
                     action_units=False) -> dict:
        options = photo_options(model, max_faces, min_detection_score, range, action_units)
        result, img = predict_with_image(self.registry, image_source(image), options)
        self.previews.keep(image, img)
        return result

    def predict(self, image, model, max_faces, min_detection_score, range, action_units=False,  # noqa: A002
                progress=gr.Progress()) -> dict:
        """Every face in the image with its box, emotion, confidence, uncertain flag and 8 probabilities; with
        `action_units`, also its action units, blendshapes and action_units_reason (as REST's option)."""
        if not self.registry.is_loaded(model or None):
            progress(0, desc="Loading the model (first request only)…")
        return self.predict_json(image, model, max_faces, min_detection_score, range, action_units)

    def predict_if_image(self, image, model, max_faces, min_detection_score, range,  # noqa: A002
                         action_units=False, progress=gr.Progress()):
        return None if image is None else self.predict(image, model, max_faces, min_detection_score, range,
                                                       action_units, progress)

    def draw(self, image, result):
        img = self.previews.take(image) or load_image(image_source(image))  # decoded by predict_json, if kept
        return render.preview(img, result["faces"])

    def show(self, image, result):
        if not result or image is None:
            return None, "", gr.Button(visible=False)
        summary = render.summary(result, listed=True)  # face_details' table lists a group's faces
        return self.draw(image, result), summary, gr.Button(visible=not result["faces"])

    def live_frame(self, frame, model, max_faces, min_detection_score, range, tracker):  # noqa: A002
        if frame is None:
            return None, "", tracker
        img = load_image(image_source(frame))
        options = photo_options(model, max_faces, min_detection_score, range)
        # One per browser session: smooths each face along its track; ended tracks are dropped (no summary here).
        tracker = tracker or FaceTracker(keep_closed=0)
        key, result, _ = predict_faces(self.registry, img, options)
        # Smoothed along their tracks so labels do not flicker; `uncertain` follows the smoothed confidence.
        result.faces = tracker.track(time.monotonic(), result.faces, self.registry.uncertain_threshold(key))
        shown = answer(self.registry, key, result)
        return render.preview(img, shown["faces"]), render.summary(shown, "No face in view."), tracker

    def predict_region(self, editor, model):
        if not editor or editor.get("background") is None:
            raise EmotionError("no image to crop: upload a photo here, or use “Crop the face yourself” on the "
                               "Photo tab")
        img = editor["background"]  # already decoded by SafeImageEditor: RGB, transparency on white
        box = strokes_box(editor.get("layers")) or (0, 0, img.width, img.height)
        result = predict_image(self.registry, img, parse_options({"model": model}, {"box": box}))
        return result, render.preview(img, result["faces"]), render.summary(result)


def photo_options(model, max_faces, min_detection_score, range, action_units=False):  # noqa: A002
    """The options row as the REST API's options, validated the same way (a forged event gets the same message)."""
    return parse_options({"model": model, "max_faces": max_faces, "min_detection_score": min_detection_score,
                          "range": range, "action_units": action_units})


def to_editor(image):
    """The Photo tab's upload into the Crop tab's editor, and that tab selected."""
    with ui_errors():
        if not isinstance(image, dict):
            raise EmotionError(f"no photo to crop: {SEND_A_FILE}")
        path = str(check_file_ref(image.get("path")))  # the editor shows this file: only an upload may be it
    return {"background": path, "layers": [], "composite": path}, gr.Tabs(selected="crop")


def webcam_tab(demo: gr.Blocks) -> tuple[gr.Image, gr.Image, gr.Markdown]:
    """The Live webcam tab: "On this device" (live_ui) and, in server mode, the stream in, the annotated frame and
    its summary out."""
    with gr.Tab("Live webcam", id="live") as live_tab, live_modes(demo, live_tab):
        with gr.Row():
            cam = gr.Image(sources=["webcam"], streaming=True, type="filepath", label="Webcam")
            live = gr.Image(label="Live result", interactive=False)
        live_status = gr.Markdown()
    return cam, live, live_status


def crop_tab() -> tuple:
    """The Crop a face tab's components: the editor and its button; the region, its summary and its JSON."""
    with gr.Tab("Crop a face", id="crop"):
        gr.Markdown("For a face the detector misses: crop the photo to the face with the crop tool, or paint "
                    "over the face with the brush. The region is classified directly, without detection.")
        with gr.Row():
            with gr.Column():
                editor = SafeImageEditor(image_mode="RGBA", transforms=("crop",), format="png",
                                         brush=gr.Brush(colors=["#ff0066"], color_mode="fixed"),
                                         layers=gr.LayerOptions(allow_additional_layers=False),
                                         label="Crop or mark the face", height=480)
                crop_run = gr.Button("Classify this region", variant="primary")
            with gr.Column():
                crop_annotated = gr.Image(label="Region", interactive=False, height=420)
                crop_status = gr.Markdown(elem_id="crop-summary")
                crop_result = gr.JSON(show_label=False, render=False)
                face_details(crop_result)
                with gr.Accordion("JSON (as returned by the API)", open=False):
                    crop_result.render()
    return editor, crop_run, crop_result, crop_annotated, crop_status


def controls(registry: ModelRegistry) -> tuple[gr.Dropdown, gr.Slider, gr.Slider, gr.Radio]:
    """The row every tab shares: model, max faces, min detection score, face search."""
    choices = [(f"{k} (default)" if k == registry.default else k, k) for k in registry.sources]
    with gr.Row(equal_height=True):
        # min_width: on a phone the model gets a line of its own, so its name is not cut
        model = gr.Dropdown(choices, value=registry.default, label="Model", scale=2, min_width=320,
                            elem_id="model", info=None if choices else "No model configured: set EMOTION_MODEL")
        max_faces = gr.Slider(1, MAX_FACES, value=DEFAULT_MAX_FACES, step=1, label="Max faces")
        min_score = gr.Slider(0.05, 1.0, value=DEFAULT_MIN_SCORE, step=0.05, label="Min detection score")
        face_range = gr.Radio(FACE_SEARCH, value=DEFAULT_RANGE, label="Face search", min_width=300,
                              info="Near only: fastest, big faces. Every face: also a small one beside a portrait.")
    return model, max_faces, min_score, face_range


def build_ui(registry: ModelRegistry, pool: InferencePool) -> gr.Blocks:
    """The Blocks app; models load on the first request, never here. Every handler runs on `pool`'s workers."""
    h = Handlers(registry, pool)
    with gr.Blocks(title="Emotion Detection", delete_cache=DELETE_CACHE) as demo:
        gr.Markdown(INTRO)
        model, max_faces, min_score, face_range = controls(registry)
        with gr.Tabs() as tabs:
            with gr.Tab("Photo", id="photo"):
                with gr.Row():
                    with gr.Column():
                        photo = gr.Image(type="filepath", sources=["upload", "clipboard", "webcam"], label="Photo",
                                         height=420, elem_id="photo")
                        run = gr.Button("Detect emotions", variant="primary")
                        au_box = action_units_box()
                        gr.Examples([[str(EXAMPLES / "astronaut.jpg")]], inputs=[photo],
                                    label="Example (NASA, public domain)")
                    with gr.Column():
                        annotated = gr.Image(label="Faces", interactive=False, height=420, elem_id="annotated")
                        status = gr.Markdown(f"Upload a photo (up to {megabytes(current().max_upload_bytes)}), paste "
                                             "one, or take a webcam snapshot.", elem_id="summary")
                        offer_crop = gr.Button("Crop the face yourself", visible=False, variant="secondary")
                        result = gr.JSON(show_label=False, elem_id="result-json", render=False)
                        face_details(result)  # above the JSON it is drawn from
                        action_unit_charts(result)
                        with gr.Accordion("JSON (as returned by the API)", open=False):
                            result.render()
            cam, live, live_status = webcam_tab(demo)
            editor, crop_run, crop_result, crop_annotated, crop_status = crop_tab()
            build_video_tab(registry, h.bounded, model, max_faces, min_score)

        inputs = [photo, model, max_faces, min_score, face_range, au_box]
        shown = [annotated, status, offer_crop]
        # preprocess=False: our loader reads the upload, so a bad file gets the same message as over REST.
        run.click(h.predict, inputs, result, api_name="predict", preprocess=False, concurrency_limit=2,
                  concurrency_id="inference").success(h.show, [photo, result], shown, preprocess=False,
                                                      api_visibility="private", concurrency_limit=None)
        changes = [photo.change, model.change, max_faces.release, min_score.release, face_range.change, au_box.change]
        gr.on(changes, h.predict_if_image, inputs, result, preprocess=False, api_visibility="private",
              concurrency_limit=2, concurrency_id="inference", trigger_mode="always_last",
              ).success(h.show, [photo, result], shown, preprocess=False, api_visibility="private",
                        concurrency_limit=None)
        offer_crop.click(to_editor, [photo], [editor, tabs], preprocess=False, api_visibility="private")
        # preprocess=False: Gradio would decode the frame itself, before our size check.
        tracker = gr.State(None)
        cam.stream(h.live_frame, [cam, model, max_faces, min_score, face_range, tracker], [live, live_status, tracker],
                   stream_every=0.2, preprocess=False,
                   concurrency_limit=1, trigger_mode="always_last", time_limit=600, show_progress="hidden",
                   api_visibility="private")
        crop_run.click(h.predict_region, [editor, model], [crop_result, crop_annotated, crop_status],
                       api_name="predict_crop", api_visibility="undocumented", concurrency_limit=2,
                       concurrency_id="inference")
    demo.queue(max_size=64)
    return demo
