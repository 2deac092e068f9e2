"""MediaPipe BlazeFace (short range, 128x128) on one face's view: its score, square box and six keypoints.

YuNet finds faces at any size in one pass, but its landmarks hardly follow a tilted head (the eyes of a face turned
15 degrees in the picture read ~1-8 degrees: measured on the astronaut and 40 Taiwanese posed photos, 2026-12-07),
and the crops the models were trained on were levelled by BlazeFace's eyes and framed by its square box. So each
face YuNet finds is looked at once more, as BlazeFace sees a face best: a 128 px square in which it fills a set
fraction. That run gives the face's box, keypoints and score (emotion/faces.py: `FaceDetector._view`).
"""
from __future__ import annotations

import contextlib
import logging
import threading
import weakref
from pathlib import Path

import numpy as np

from .mediapipe_tasks import close_later, native_stderr_quiet

logger = logging.getLogger(__name__)

MODEL_PATH = Path(__file__).resolve().parent / "assets" / "face_detection_short_range.tflite"
INPUT_SIDE = 128  # the short-range model's input: a view of this side runs without resampling


class BlazeFace:
    """BlazeFace short range on small square images. Safe to share between threads; loads on first use.

    Args:
        floor: detections scoring below this are not reported (fixed when the MediaPipe task is created).
    """

    def __init__(self, floor: float):
        self.floor = floor
        self._task: list = []  # the MediaPipe task, once loaded (a list, so the finalizer can close it)
        self._ran = False  # its first run prints native warnings: hidden
        # MediaPipe task objects are not thread-safe; a run takes ~1-2 ms, so one lock costs little.
        self._lock = threading.Lock()
        # Close before interpreter teardown: MediaPipe's own __del__ fails noisily once its C bindings are gone.
        weakref.finalize(self, close_later, _close_all, self._task)

    def detect(self, rgb: np.ndarray) -> list[tuple[tuple[float, float, float, float], float, tuple]]:
        """Faces in `rgb` (H, W, 3) uint8: (box (x, y, w, h), score, six keypoints (x, y)) in its pixels.

        Keypoints in MediaPipe's order: right eye, left eye, nose tip, mouth centre, right ear tragion, left ear
        tragion ("right" is the person's right, i.e. the left of the picture)."""
        import mediapipe as mp  # lazily: ~0.5 s to import, and the trainer's CLI help should not pay it

        height, width = rgb.shape[:2]
        image = mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(rgb))
        with self._lock:
            task = self._task[0] if self._task else self._load()
            with native_stderr_quiet() if not self._ran else contextlib.nullcontext():
                result = task.detect(image)
            self._ran = True
        out = []
        for d in result.detections:
            b = d.bounding_box
            score = d.categories[0].score if d.categories else 0.0
            points = tuple((k.x * width, k.y * height) for k in d.keypoints)
            out.append(((float(b.origin_x), float(b.origin_y), float(b.width), float(b.height)), float(score), points))
        return out

    def close(self) -> None:
        """Frees the MediaPipe task; the next `detect` loads it again."""
        with self._lock:
            _close_all(self._task)

    def _load(self):
        from mediapipe.tasks.python import BaseOptions, vision

        if not MODEL_PATH.is_file():
            raise FileNotFoundError(f"{MODEL_PATH} is missing: run emotion/assets/make_face_models.py "
                                    "(see emotion/assets/README.md)")
        options = vision.FaceDetectorOptions(base_options=BaseOptions(model_asset_buffer=MODEL_PATH.read_bytes()),
                                             running_mode=vision.RunningMode.IMAGE,
                                             min_detection_confidence=self.floor)
        with native_stderr_quiet():
            self._task.append(vision.FaceDetector.create_from_options(options))
        logger.debug("loaded BlazeFace short range (floor %.2f)", self.floor)
        return self._task[0]


def _close_all(tasks: list) -> None:
    with native_stderr_quiet():
        for task in tasks:
            task.close()
    tasks.clear()
