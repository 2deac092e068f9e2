"""Predictor: any image -> every face -> calibrated probabilities over the 8 emotions."""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image

from .faces import DEFAULT_MAX_FACES, DEFAULT_MIN_SCORE, DEFAULT_RANGE, Detections, FaceDetector, crop_box, crop_face
from .images import load_image
from .models import ModelInfo, load_model
from .preprocess import batch
from .sources import default_source, shipped_models  # noqa: F401  (re-exported)

log = logging.getLogger(__name__)


@dataclass
class FacePrediction:
    """One face: where it is and what the model thinks. `box` is (x, y, w, h) in original-image pixels."""

    box: tuple[int, int, int, int]
    emotion: str
    confidence: float
    uncertain: bool
    probabilities: dict[str, float]
    detection_score: float | None = None
    keypoints: list[tuple[float, float]] | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["box"] = dict(zip("xywh", self.box))
        return d


@dataclass
class ImagePrediction:
    """The faces kept (at most `max_faces`, left to right) and `faces_total`, the number found before that cut."""

    faces: list[FacePrediction]
    image_size: tuple[int, int]  # width, height
    timings_ms: dict[str, float] = field(default_factory=dict)
    faces_total: int | None = None  # None: as many as `faces`

    def __post_init__(self):
        if self.faces_total is None:
            self.faces_total = len(self.faces)

    @property
    def truncated(self) -> bool:
        """More faces were found than `max_faces` allowed; `faces` holds the highest-scoring ones."""
        return self.faces_total > len(self.faces)

    def to_dict(self) -> dict[str, Any]:
        return {"faces": [f.to_dict() for f in self.faces], "faces_total": self.faces_total,
                "truncated": self.truncated,
                "image_size": {"width": self.image_size[0], "height": self.image_size[1]},
                "timings_ms": {k: round(v, 2) for k, v in self.timings_ms.items()}}


@torch.inference_mode()
def face_logits(model: torch.nn.Module, x: torch.Tensor, info: ModelInfo, tta_flip: bool | None = None) -> torch.Tensor:
    """Preprocessed faces (N, C, H, W) -> (N, classes) float logits as serving uses them: averaged with the mirrored
    face when the model says so, plus the model's `logit_bias`. Serving and the trainer's evaluation both call this.
    """
    flip = info.tta_flip if tta_flip is None else tta_flip
    if flip:  # the mirrored faces in the same batch
        x = torch.cat([x, torch.flip(x, dims=[3])])
    # channels_last: oneDNN's faster CPU convolutions (measured, 1 thread, 2 faces: small_cnn 18.4 -> 15.8 ms,
    # resnet50 90 -> 82, efficientnet_lite0 35 -> 24; logits equal within 3e-6); load_model stores weights so too
    logits = model(x.contiguous(memory_format=torch.channels_last)).float()
    if flip:
        logits = (logits[: len(x) // 2] + logits[len(x) // 2:]) / 2
    bias = info.bias_vector()
    return logits if bias is None else logits + bias.to(logits.device)


class Predictor:
    """Detects faces and classifies their expressions with one loaded model. Thread-safe.

    Args:
        model: a classifier returning logits over `info.labels`.
        info: the model's facts (input size, normalisation, crop margin, temperature, ...).
        source: where it came from, for reports.
        detector: the face detector (a default `FaceDetector()` if None).
    """

    def __init__(self, model: torch.nn.Module, info: ModelInfo, source: str = "", detector: FaceDetector | None = None):
        self.model, self.info, self.source = model.eval(), info, source
        self.detector = detector or FaceDetector()
        self._lock = threading.Lock()  # torch modules are not re-entrant under concurrent calls on all backends

    @classmethod
    def from_pretrained(cls, source: str | None = None, *, min_score: float = DEFAULT_MIN_SCORE,
                        max_faces: int = DEFAULT_MAX_FACES, range: str = DEFAULT_RANGE) -> "Predictor":  # noqa: A002
        """Load `hf-hub:org/name[@revision]`, `local-dir:/path` or a shipped model's name such as "resnet50"
        (default: EMOTION_MODEL or the shipped default)."""
        source = source or default_source()
        model, info, _ = load_model(source)
        return cls(model, info, source, FaceDetector(min_score=min_score, max_faces=max_faces, range=range))

    @property
    def labels(self) -> list[str]:
        return list(self.info.labels)

    # ---------------------------------------------------------------------------------------------- classify
    def probabilities(self, crops: Sequence[Image.Image]) -> np.ndarray:
        """Face crops -> (N, 8) calibrated probabilities, softmax(logits / temperature), one forward pass."""
        if not crops:
            return np.zeros((0, len(self.info.labels)), np.float32)
        with self._lock:
            logits = face_logits(self.model, batch(crops, self.info), self.info)
        return torch.softmax(logits / self.info.temperature, dim=1).numpy()

    def _face_result(self, probs: np.ndarray, box, score=None, keypoints=None) -> FacePrediction:
        top = int(probs.argmax())
        return FacePrediction(
            box=tuple(int(v) for v in box), emotion=self.info.labels[top], confidence=float(probs[top]),
            uncertain=bool(probs[top] < self.info.uncertain_threshold),
            probabilities={lab: float(p) for lab, p in zip(self.info.labels, probs)},
            detection_score=None if score is None else float(score),
            keypoints=None if keypoints is None else [tuple(map(float, k)) for k in keypoints])

    # ------------------------------------------------------------------------------------------------ public
    def detect(self, image: Any, **options) -> tuple[Image.Image, Detections]:
        """The loaded image and its `Detections` (faces kept, and how many were found before `max_faces`)."""
        img = load_image(image)
        return img, self.detector.find(img, **{k: v for k, v in options.items() if v is not None})

    def predict(self, image: Any, *, max_faces: int | None = None, min_score: float | None = None,
                range: str | None = None) -> ImagePrediction:  # noqa: A002
        """Every face in one image (path, bytes, PIL or numpy) with its emotion probabilities."""
        return self.predict_batch([image], max_faces=max_faces, min_score=min_score, range=range)[0]

    def predict_batch(self, images: Sequence[Any], **options) -> list[ImagePrediction]:
        """Several images; all their faces are classified in one batch."""
        t0 = time.perf_counter()
        loaded = [self.detect(im, **options) for im in images]
        return self.classify_detected(loaded, t0)

    def classify_detected(self, loaded: Sequence[tuple[Image.Image, Detections]],
                          t0: float | None = None) -> list[ImagePrediction]:
        """Images already decoded and searched (`detect`'s results): all their faces classified in one batch.

        Lets a caller that must survive bad images (batch prediction) detect one image at a time, then classify
        the good ones together. `t0` is when detection started, for the timings.
        """
        t1 = time.perf_counter()
        t0 = t1 if t0 is None else t0
        n = max(1, len(loaded))
        crops = [crop_face(img, f, self.info.crop_margin, self.info.align_eyes, self.info.crop_offset_y)
                 for img, found in loaded for f in found.faces]
        probs = self.probabilities(crops)
        t2 = time.perf_counter()
        out, i = [], 0
        for img, found in loaded:
            results = [self._face_result(probs[i + j], f.box, f.score, f.keypoints)
                       for j, f in enumerate(found.faces)]
            i += len(found.faces)
            out.append(ImagePrediction(results, img.size, {"detect": (t1 - t0) * 1000 / n,
                                                           "classify": (t2 - t1) * 1000 / n},
                                       faces_total=found.total))
        return out

    def predict_video(self, path: str | Path, *, every: int | None = None, fps: float | None = None,
                      progress: bool = True, max_faces: int | None = None, min_score: float | None = None,
                      range: str | None = None):  # noqa: A002
        """Every face in a video, followed along tracks, probabilities smoothed per track (`emotion.video`).

        Args:
            path: a video file PyAV can decode (MP4, WebM, MOV, AVI, MKV, ...).
            every: analyse every Nth frame (default: every frame, unless `fps` is given).
            fps: analyse about this many frames per second instead.
            progress: show a progress bar on stderr.

        Returns:
            A `VideoPrediction`: per-frame rows (time, track, box, 8 probabilities, top emotion), a summary per
            track, and `interrupted` when Ctrl-C stopped it early (the rows so far are kept).
        """
        from .video import predict_video

        options = {k: v for k, v in {"max_faces": max_faces, "min_score": min_score, "range": range}.items()
                   if v is not None}
        return predict_video(self, path, every, fps, progress, **options)

    def predict_crop(self, image: Any, box: tuple[int, int, int, int] | None = None) -> FacePrediction:
        """Classify a face the caller has already cut out (or the `box` (x, y, w, h) of `image`); no detection."""
        img = load_image(image)
        if box is not None:
            crop = crop_box(img, box)
        else:
            crop, box = img, (0, 0, img.width, img.height)
        return self._face_result(self.probabilities([crop])[0], box)
