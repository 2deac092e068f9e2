"""Predictor: any image -> every face -> calibrated probabilities over the 8 emotions."""
from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image

from .backends import BACKENDS, make_backend  # noqa: F401  (re-exported)
from .calibration import probabilities
from .faces import (DEFAULT_MAX_FACES, DEFAULT_MIN_SCORE, DEFAULT_RANGE, Detections, Face, FaceDetector, crop_box,
                    crop_face, decode_and_find)
from .images import file_pixels, load_image
from .info import ModelInfo
from .records import FacePrediction, ImagePrediction  # noqa: F401  (re-exported: the currency every path passes on)
from .sources import default_source, resolve, shipped_models  # noqa: F401  (re-exported)

log = logging.getLogger(__name__)


class Predictor:
    """Detects faces and classifies their expressions with one loaded model. Thread-safe.

    Args:
        model: a torch classifier returning logits over `info.labels`, or None: the `folder`'s model.onnx serves
            (or, where torch is installed, its model.safetensors in torch: `backend`).
        info: the model's facts (input size, normalisation, crop margin, temperature, ...).
        source: where it came from, for reports.
        detector: the face detector (a default `FaceDetector()` if None).
        folder: the model's folder; with `backend` "auto" its current model.onnx (if any) serves in ONNX Runtime.
        backend: "auto", "torch" or "onnxruntime" (`emotion.backends.make_backend`); `self.backend` says which
            one runs.
        blendshape_head: apply the model's blendshape head where it has one (emotion/blendshape_head.py); False
            skips it and its landmarker runs (faster on faces near the head's label, and those answers change).
    """

    def __init__(self, model, info: ModelInfo, source: str = "", detector: FaceDetector | None = None,
                 folder: str | Path | None = None, backend: str = "auto", blendshape_head: bool = True):
        self.info, self.source = info, source
        self.detector = detector or FaceDetector()
        self._backend = make_backend(model, info, folder, backend)
        self.model = getattr(self._backend, "model", model)  # the torch module where torch runs; else what was given
        self.au_reader = None  # an ActionUnitReader, loaded on first use (action units, or the blendshape head)
        self._head = info.head() if blendshape_head else None
        self._au_lock = threading.Lock()

    @classmethod
    def from_pretrained(cls, source: str | None = None, *, min_score: float = DEFAULT_MIN_SCORE,
                        max_faces: int = DEFAULT_MAX_FACES, range: str = DEFAULT_RANGE,  # noqa: A002
                        backend: str = "auto", blendshape_head: bool = True) -> "Predictor":
        """Load `hf-hub:org/name[@revision]`, `local-dir:/path` or a shipped model's name such as "resnet50"
        (default: EMOTION_MODEL or the shipped default); `backend` and `blendshape_head` as in `Predictor`.

        Only config.json is read here; the classifier is the folder's model.onnx in ONNX Runtime, and torch is
        loaded only where the backend is torch (chosen, or a folder without a current model.onnx)."""
        source = source or default_source()
        folder = resolve(source)
        info = ModelInfo.from_folder(folder)
        return cls(None, info, source, FaceDetector(min_score=min_score, max_faces=max_faces, range=range), folder,
                   backend, blendshape_head)

    @property
    def backend(self) -> str:
        """What runs the classifier: "onnxruntime" or "torch"."""
        return self._backend.name

    @property
    def labels(self) -> list[str]:
        return list(self.info.labels)

    # ---------------------------------------------------------------------------------------------- classify
    def probabilities(self, crops: Sequence[Image.Image]) -> np.ndarray:
        """Face crops -> (N, 8) calibrated probabilities, softmax(logits / temperature), one forward pass of the
        faces and their mirrors (in ONNX Runtime or torch: `backend`), plus the model's blendshape head where it
        has one (the landmarker on the faces its gate lets through: emotion/blendshape_head.py)."""
        if not crops:
            return np.zeros((0, len(self.info.labels)), np.float32)
        logits = self._backend.logits(crops)
        if self._head is not None:
            logits = self._head.apply(logits, crops, self.info.labels, self.read_action_units, self.info.logit_bias)
        return probabilities(logits, self.info.temperature)

    @property
    def uncertain_threshold(self) -> float:
        """A face whose top probability is below this is marked `uncertain` (the model's own threshold)."""
        return self.info.uncertain_threshold

    def crops(self, image: Image.Image, faces: Sequence[Face | tuple[int, int, int, int]]) -> list[Image.Image]:
        """The squares the model sees: a detected `Face` cut as the model was trained (its crop margin, eyes
        levelled, its vertical offset); a plain (x, y, w, h) box, given by the caller, cut exactly as given."""
        return [crop_face(image, f, self.info.crop_margin, self.info.align_eyes, self.info.crop_offset_y)
                if isinstance(f, Face) else crop_box(image, f) for f in faces]

    def classify(self, crops: Sequence[Image.Image],
                 faces: Sequence[Face | tuple[int, int, int, int]]) -> list[FacePrediction]:
        """Face crops (`crops`) and the faces they were cut from -> one `FacePrediction` each, in one forward pass.

        Every prediction is made here: photos (`classify_detected`, `predict_crop`) and videos (a batch of
        frames' crops at a time) call it. A detected face's box, score and keypoints go with its prediction; a
        given box has neither score nor keypoints."""
        out = []
        for probs, face in zip(self.probabilities(crops), faces, strict=True):
            detected = isinstance(face, Face)
            box, score, keypoints = (face.box, face.score, face.keypoints) if detected else (face, None, None)
            out.append(FacePrediction.from_probabilities(probs, self.info.labels, self.uncertain_threshold, box, score,
                                                         keypoints))
        return out

    def predict_faces(self, image: Image.Image, faces: Sequence[Face | tuple[int, int, int, int]]
                      ) -> list[FacePrediction]:
        """One image and its faces (detected, or boxes the caller gives) -> their predictions."""
        return self.classify(self.crops(image, faces), faces)

    # ------------------------------------------------------------------------------------------ action units
    def read_action_units(self, image: Image.Image, faces: Sequence[Face | tuple[int, int, int, int]]) -> list:
        """Each face's action units (`emotion.action_units.FaceActionUnits`, in the order given), read on `image`
        by this predictor's one shared `ActionUnitReader`, which loads here on first use."""
        if self.au_reader is None:
            with self._au_lock:
                if self.au_reader is None:
                    from .action_units import ActionUnitReader

                    self.au_reader = ActionUnitReader()
        return self.au_reader.read(image, faces)

    def add_action_units(self, image: Image.Image, predictions: Sequence[FacePrediction]) -> list[FacePrediction]:
        """The predictions of faces of `image`, each with its action units, blendshapes and reason."""
        read = self.read_action_units(image, [p.box for p in predictions])
        return [p.with_action_units(r) for p, r in zip(predictions, read, strict=True)]

    # ------------------------------------------------------------------------------------------------ public
    def detect(self, image: Any, **options) -> tuple[Image.Image, Detections]:
        """The loaded image and its `Detections` (faces kept, and how many were found before `max_faces`)."""
        # A large JPEG is decoded at the size detection needs, and finer only where a face is small (faces.py).
        return decode_and_find(image, self.detector, **{k: v for k, v in options.items() if v is not None})

    def predict(self, image: Any, *, max_faces: int | None = None, min_score: float | None = None,
                range: str | None = None, action_units: bool = False) -> ImagePrediction:  # noqa: A002
        """Every face in one image (path, bytes, PIL or numpy) with its emotion probabilities; with `action_units`
        also each face's FACS action units and 52 blendshapes (docs/action_units.md; ~12-25 ms more per face)."""
        return self.predict_batch([image], max_faces=max_faces, min_score=min_score, range=range,
                                  action_units=action_units)[0]

    def predict_batch(self, images: Sequence[Any], action_units: bool = False, **options) -> list[ImagePrediction]:
        """Several images; all their faces are classified in one batch (`action_units`: as in `predict`)."""
        t0 = time.perf_counter()
        loaded = [self.detect(im, **options) for im in images]
        return self.classify_detected(loaded, t0, action_units)

    def classify_detected(self, loaded: Sequence[tuple[Image.Image, Detections]], t0: float | None = None,
                          action_units: bool = False) -> list[ImagePrediction]:
        """Images already decoded and searched (`detect`'s results): all their faces classified in one batch,
        and with `action_units` their action units read.

        Lets a caller that must survive bad images (batch prediction) detect one image at a time, then classify
        the good ones together. `t0` is when detection started, for the timings.
        """
        t1 = time.perf_counter()
        t0 = t1 if t0 is None else t0
        n = max(1, len(loaded))
        faces = [f for _, found in loaded for f in found.faces]
        predictions = self.classify([c for img, found in loaded for c in self.crops(img, found.faces)], faces)
        t2 = time.perf_counter()
        out, i = [], 0
        for img, found in loaded:
            faces = predictions[i:i + len(found.faces)]
            faces = self.add_action_units(img, faces) if action_units else faces
            size, (sx, sy) = file_pixels(img)  # the file's pixels, where it was decoded at a reduced scale
            out.append(ImagePrediction([face.scaled(sx, sy) for face in faces], size,
                                       {"detect": (t1 - t0) * 1000 / n, "classify": (t2 - t1) * 1000 / n},
                                       faces_total=found.total))
            i += len(found.faces)
        if action_units:
            per_image = (time.perf_counter() - t2) * 1000 / n
            for result in out:
                result.timings_ms["action_units"] = per_image
        return out

    def predict_video(self, path: str | Path, *, every: int | None = None, fps: float | None = None,
                      progress: bool = True, max_faces: int | None = None, min_score: float | None = None,
                      range: str | None = None, action_units: bool = False):  # noqa: A002
        """Every face in a video, followed along tracks, probabilities smoothed per track (`emotion.video`).

        Args:
            path: a video file PyAV can decode (MP4, WebM, MOV, AVI, MKV, ...).
            every: analyse every Nth frame (default: every frame, unless `fps` is given).
            fps: analyse about this many frames per second instead.
            progress: show a progress bar on stderr.
            action_units: also each face's action units per frame, smoothed along its track (columns au_1, ...).

        Returns:
            A `VideoPrediction`: per-frame rows (time, track, box, 8 probabilities, top emotion), a summary per
            track, and `interrupted` when Ctrl-C stopped it early (the rows so far are kept).
        """
        from .video import predict_video

        options = {k: v for k, v in {"max_faces": max_faces, "min_score": min_score, "range": range}.items()
                   if v is not None}
        return predict_video(self, path, every, fps, progress, action_units=action_units, **options)

    def predict_crop(self, image: Any, box: tuple[int, int, int, int] | None = None,
                     action_units: bool = False) -> FacePrediction:
        """Classify a face the caller has already cut out (or the `box` (x, y, w, h) of `image`); no detection.
        With `action_units`, its action units are read on the box too (null with a reason if it is too small)."""
        img = load_image(image)
        faces = self.predict_faces(img, [box if box is not None else (0, 0, img.width, img.height)])
        return (self.add_action_units(img, faces) if action_units else faces)[0]
