"""Face detection (MediaPipe BlazeFace) -> boxes and keypoints in original pixels, and the face crops the model sees.

The detector models live in `assets/` (see its README for their origin). Detection runs on at most
DETECT_MAX_SIDE pixels per side: BlazeFace letterboxes its input to 128 or 192 px anyway, so a bigger image
only costs resize time.
"""
from __future__ import annotations

import logging
import math
import numbers
import threading
import weakref
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .errors import EmotionError
from .info import default

logger = logging.getLogger(__name__)

ASSETS = Path(__file__).resolve().parent / "assets"
MODEL_FILES = {"short": "face_detection_short_range.tflite", "full": "face_detection_full_range.tflite"}
RANGES = ("short", "full", "auto")
DETECT_MAX_SIDE = 1280
MERGE_IOU = 0.5  # two boxes overlapping more than this are one face
MAX_CACHED_DETECTORS = 4  # per FaceDetector: one per (model, min_score) in use; a UI slider must not pile them up


@dataclass(frozen=True)
class Face:
    """One detected face, in pixels of the image given to `FaceDetector.detect`.

    Attributes:
        box: (x, y, w, h), clipped to the image.
        score: detection score in 0..1.
        keypoints: six (x, y) points in MediaPipe order: right eye, left eye, nose tip, mouth centre,
            right ear tragion, left ear tragion ("right" is the person's right, i.e. the left of the picture).
    """

    box: tuple[int, int, int, int]
    score: float
    keypoints: tuple[tuple[float, float], ...]


class FaceDetector:
    """Finds faces with MediaPipe BlazeFace. Safe to share between threads; the models load on first use.

    Args:
        min_score: detections scoring below this are dropped (0..1).
        max_faces: keep at most this many faces, the highest-scoring ones.
        range: "short" for faces within ~2 m of the camera (selfies, webcams), "full" for small or far
            faces (group photos), "auto" to try "short" and fall back to "full" when it finds nothing.
    """

    def __init__(self, min_score: float = 0.5, max_faces: int = 20, range: str = "auto"):  # noqa: A002
        self.min_score, self.max_faces, self.range = _check_options(min_score, max_faces, range)
        self._detectors: dict[tuple[str, float], object] = {}
        # MediaPipe task objects are not thread-safe; a detection takes ~1-3 ms, so one lock costs little.
        self._lock = threading.Lock()
        # Close before interpreter teardown: MediaPipe's own __del__ fails noisily once its C bindings are gone.
        weakref.finalize(self, _close_all, self._detectors)

    def detect(self, image: Image.Image, min_score: float | None = None, max_faces: int | None = None,
               range: str | None = None) -> list[Face]:  # noqa: A002
        """Finds the faces in `image`.

        Args:
            image: a PIL image (converted to RGB if needed); use `images.load_image` to get one from a file.
            min_score: overrides the detector's `min_score` for this call.
            max_faces: overrides the detector's `max_faces` for this call.
            range: overrides the detector's `range` for this call.

        Returns:
            The faces sorted left to right (by box x), in pixels of `image`. An image without faces gives [].
        """
        min_score, max_faces, range = _check_options(  # noqa: A001
            self.min_score if min_score is None else min_score,
            self.max_faces if max_faces is None else max_faces,
            self.range if range is None else range)
        if not isinstance(image, Image.Image):
            raise EmotionError(f"detect() takes a PIL image, not {type(image).__name__}: "
                               "read files with emotion.images.load_image first")
        small, scale = _detection_image(image)
        faces: list[Face] = []
        for model in (("short", "full") if range == "auto" else (range,)):
            faces = self._run(model, min_score, small, scale, image.size)
            if faces:
                break
        faces = _suppress_duplicates(faces)[:max_faces]
        return sorted(faces, key=lambda f: (f.box[0], f.box[1]))

    def close(self) -> None:
        """Frees the MediaPipe detectors; the next `detect` loads them again."""
        with self._lock:
            _close_all(self._detectors)

    def _run(self, model: str, min_score: float, small: np.ndarray, scale: float,
             size: tuple[int, int]) -> list[Face]:
        import mediapipe as mp  # lazily: ~0.5 s to import, and the trainer's CLI help should not pay it

        with self._lock:
            detector = self._detector(model, min_score)
            result = detector.detect(mp.Image(image_format=mp.ImageFormat.SRGB, data=small))
        return [_to_face(d, small.shape[1], small.shape[0], scale, size) for d in result.detections]

    def _detector(self, model: str, min_score: float):
        """One MediaPipe detector per (model, threshold): the threshold is fixed when it is created."""
        key = (model, min_score)
        if key not in self._detectors:
            if len(self._detectors) >= MAX_CACHED_DETECTORS:
                self._detectors.pop(next(iter(self._detectors))).close()  # the oldest
            from mediapipe.tasks.python import BaseOptions, vision

            path = ASSETS / MODEL_FILES[model]
            if not path.is_file():
                raise FileNotFoundError(f"{path} is missing: run emotion/assets/make_face_models.py "
                                        "(see emotion/assets/README.md)")
            options = vision.FaceDetectorOptions(
                base_options=BaseOptions(model_asset_buffer=path.read_bytes()),
                running_mode=vision.RunningMode.IMAGE,
                min_detection_confidence=min_score)
            self._detectors[key] = vision.FaceDetector.create_from_options(options)
            logger.debug("loaded the %s-range face detector (min_score %.2f)", model, min_score)
        return self._detectors[key]


def crop_face(image: Image.Image, face: Face, margin: float = default("crop_margin"),
              align: bool = default("align_eyes"), offset_y: float = default("crop_offset_y")) -> Image.Image:
    """Cuts a square around a face, optionally rotated so the eyes are level.

    Args:
        image: the image `face` was detected in.
        face: the detection.
        margin: extra context on each side, as a fraction of the box's longer side. The defaults of margin, align
            and offset_y are ModelInfo's (how the shipped models were trained to see faces).
        align: rotate about the box centre so that the eyes (keypoints 0 and 1) are horizontal.
        offset_y: move the crop's centre along the face's vertical axis by this fraction of the box's longer
            side (negative = towards the forehead), to match how the training faces were framed.

    Returns:
        A square image of side round(max(w, h) * (1 + 2 * margin)), in the mode of `image`. Parts outside
        the image repeat its edge pixels, so a face at the border still gives a full-size crop.
    """
    if margin < 0:
        raise EmotionError(f"margin must be >= 0, not {margin}: 0.25 adds a quarter of the face on each side")
    if image.mode not in ("RGB", "RGBA", "L"):
        image = image.convert("RGB")
    x, y, w, h = face.box
    side = max(1, round(max(w, h) * (1 + 2 * margin)))
    cx, cy = x + w / 2, y + h / 2
    angle = 0.0
    if align and len(face.keypoints) >= 2:
        (rx, ry), (lx, ly) = face.keypoints[0], face.keypoints[1]
        angle = math.atan2(ly - ry, lx - rx)
    cx -= offset_y * max(w, h) * math.sin(angle)  # "down" in the face's own frame is (-sin, cos)
    cy += offset_y * max(w, h) * math.cos(angle)
    # Only the patch the rotated square can reach is padded and resampled, not the whole photo.
    reach = side / 2 * (abs(math.cos(angle)) + abs(math.sin(angle))) + 2
    x0, y0 = math.floor(cx - reach), math.floor(cy - reach)
    patch = _edge_padded(image, x0, y0, math.ceil(cx + reach), math.ceil(cy + reach))
    cos, sin = math.cos(angle), math.sin(angle)
    # Output pixel (u, v) samples patch point centre + u' * (cos, sin) + v' * (-sin, cos), u' = u - side / 2.
    px, py = cx - x0, cy - y0
    coeffs = (cos, -sin, px - side / 2 * (cos - sin), sin, cos, py - side / 2 * (sin + cos))
    return patch.transform((side, side), Image.AFFINE, coeffs, resample=Image.BILINEAR)


def crop_box(image: Image.Image, box: tuple[int, int, int, int]) -> Image.Image:
    """Cuts the user-given box (x, y, w, h) out of `image`, refusing boxes that are empty or leave the image."""
    width, height = image.size
    fix = f"send (x, y, w, h) with w, h > 0, x + w <= {width} and y + h <= {height}"
    try:
        values = [float(v) for v in box]
    except (TypeError, ValueError):
        raise EmotionError(f"a box must be four numbers (x, y, w, h), not {box!r}: {fix}") from None
    if len(values) != 4 or not all(math.isfinite(v) for v in values):
        raise EmotionError(f"a box must be four finite numbers (x, y, w, h), not {box!r}: {fix}")
    x, y, w, h = (round(v) for v in values)
    if w <= 0 or h <= 0:
        raise EmotionError(f"the box {box!r} is empty: {fix}")
    if x < 0 or y < 0 or x + w > width or y + h > height:
        raise EmotionError(f"the box {box!r} goes outside the {width}x{height} image: {fix}")
    return image.crop((x, y, x + w, y + h))


def _close_all(detectors: dict) -> None:
    for detector in detectors.values():
        detector.close()
    detectors.clear()


def _check_options(min_score, max_faces, range):  # noqa: A002
    if range not in RANGES:
        raise EmotionError(f"range must be one of {', '.join(RANGES)}, not {range!r}: 'short' for faces near "
                           "the camera, 'full' for small or far faces, 'auto' to try both")
    if isinstance(min_score, bool) or not isinstance(min_score, numbers.Real) or not 0.0 <= min_score <= 1.0:
        raise EmotionError(f"min_score must be between 0 and 1, not {min_score}: 0.5 is a good default")
    if isinstance(max_faces, bool) or not isinstance(max_faces, int) or max_faces < 1:
        raise EmotionError(f"max_faces must be a whole number >= 1, not {max_faces!r}")
    return float(min_score), max_faces, range


def _detection_image(image: Image.Image) -> tuple[np.ndarray, float]:
    """RGB uint8 pixels with the long side at most DETECT_MAX_SIDE, and the factor they were scaled by."""
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    scale = min(1.0, DETECT_MAX_SIDE / max(rgb.size))
    if scale < 1.0:
        size = (max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale)))
        rgb = rgb.resize(size, Image.BOX)  # area averaging: anti-aliased, and faster than bilinear here
        scale = rgb.width / image.width
    return np.ascontiguousarray(np.asarray(rgb)), scale


def _to_face(detection, det_w: int, det_h: int, scale: float, size: tuple[int, int]) -> Face:
    """A MediaPipe detection on the scaled image -> a Face in original pixels, box clipped to the image."""
    b = detection.bounding_box
    x0, y0 = max(0, round(b.origin_x / scale)), max(0, round(b.origin_y / scale))
    x1 = min(size[0], round((b.origin_x + b.width) / scale))
    y1 = min(size[1], round((b.origin_y + b.height) / scale))
    keypoints = tuple((k.x * det_w / scale, k.y * det_h / scale) for k in detection.keypoints)
    score = detection.categories[0].score if detection.categories else 0.0
    return Face(box=(x0, y0, max(0, x1 - x0), max(0, y1 - y0)), score=float(score), keypoints=keypoints)


def _iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    ix = max(0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def _suppress_duplicates(faces: list[Face]) -> list[Face]:
    """Highest score first; a face overlapping a kept one by IoU > MERGE_IOU is the same face, and dropped."""
    kept: list[Face] = []
    for face in sorted(faces, key=lambda f: -f.score):
        if face.box[2] > 0 and face.box[3] > 0 and all(_iou(face.box, k.box) <= MERGE_IOU for k in kept):
            kept.append(face)
    return kept


def _edge_padded(image: Image.Image, x0: int, y0: int, x1: int, y1: int) -> Image.Image:
    """The region [x0, x1) x [y0, y1) of `image`; where it leaves the image, the nearest edge pixel repeats."""
    w, h = image.size
    # Crop the part inside the image first, so a 40 MP photo is never copied whole.
    cx0, cy0 = min(max(x0, 0), w - 1), min(max(y0, 0), h - 1)
    cx1, cy1 = min(max(x1, cx0 + 1), w), min(max(y1, cy0 + 1), h)
    inside = np.asarray(image.crop((cx0, cy0, cx1, cy1)))
    rows = np.clip(np.arange(y0, y1), cy0, cy1 - 1) - cy0
    cols = np.clip(np.arange(x0, x1), cx0, cx1 - 1) - cx0
    return Image.fromarray(np.ascontiguousarray(inside[rows][:, cols]))
