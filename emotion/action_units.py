"""Facial action units (FACS AUs) per face, from MediaPipe Face Landmarker's 52 blendshapes.

The landmarker (`assets/face_landmarker.task`) runs on each face our detector found, on a square crop around its
box with a gray margin, resized to CROP_SIDE px: never on the whole photo, so every face of a group gets its AUs and
the boxes stay ours. Its blendshapes are ARKit-style scores in 0..1; this table turns them into the action units
they stand for. "Left"/"Right" are the person's own sides.

| AU | FACS name | blendshapes | combined |
|---|---|---|---|
| AU1 | inner brow raiser | browInnerUp | as is |
| AU2 | outer brow raiser | browOuterUpLeft, browOuterUpRight | max |
| AU4 | brow lowerer | browDownLeft, browDownRight | max |
| AU5 | upper lid raiser | eyeWideLeft, eyeWideRight | max |
| AU6 | cheek raiser | cheekSquintLeft, cheekSquintRight | max |
| AU7 | lid tightener | eyeSquintLeft, eyeSquintRight | max |
| AU9 | nose wrinkler | noseSneerLeft, noseSneerRight | max |
| AU10 | upper lip raiser | mouthUpperUpLeft, mouthUpperUpRight | max |
| AU12 | lip corner puller | mouthSmileLeft, mouthSmileRight | max |
| AU14 | dimpler | mouthDimpleLeft, mouthDimpleRight | max |
| AU15 | lip corner depressor | mouthFrownLeft, mouthFrownRight | max |
| AU16 | lower lip depressor | mouthLowerDownLeft, mouthLowerDownRight | max |
| AU17 | chin raiser | mouthShrugLower | as is |
| AU18 | lip pucker | mouthPucker | as is |
| AU20 | lip stretcher | mouthStretchLeft, mouthStretchRight | max |
| AU22 | lip funneler | mouthFunnel | as is |
| AU24 | lip presser | mouthPressLeft, mouthPressRight | max |
| AU26 | jaw drop | jawOpen | as is |
| AU28 | lip suck | mouthRollLower, mouthRollUpper | max |
| AU29 | jaw thrust | jawForward | as is |
| AU30 | jaw sideways | jawLeft, jawRight | max |
| AU34 | cheek puff | cheekPuff | as is |
| AU43 | eyes closed | eyeBlinkLeft, eyeBlinkRight | max |

Left and right are combined by **max**: FACS scores an AU when it acts on either side (a one-sided AU is still
coded, as R12 or L14), and the one-sided actions are exactly the informative ones (contempt's one-sided dimpler, a
smirk); a mean would halve them. The two sides stay apart in `blendshapes` for whoever needs asymmetry.
Not in the table: AU23 (lip tightener) and AU25 (lips part) have no blendshape of their own (the lips narrowing
without pressing or rolling; lips apart is implied by AU16/AU26); eye gaze (eyeLook*), mouthLeft/Right, mouthClose,
mouthShrugUpper and _neutral are not facial actions FACS scores as AUs here. Blendshapes are not certified FACS
coding: measured on posed photos (docs/action_units.md), AU12, AU1, AU2, AU26 follow the posed emotions; AU6 and
AU9 never move (the model's cheekSquint and noseSneer stay at 0), AU24 does not separate anger from happy.
"""
from __future__ import annotations

import logging
import math
import queue
import threading
import weakref
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from .blendshape_head import BLENDSHAPES  # noqa: F401  (the landmarker's 52 names; re-exported)
from .checked import read_checked
from .errors import EmotionError
from .mediapipe_tasks import close_later, native_stderr_quiet

logger = logging.getLogger(__name__)

MODEL_PATH = Path(__file__).resolve().parent / "assets" / "face_landmarker.task"
MODEL_SHA256 = "64184e229b263107bc2b804c6625db1341ff2bb731874b0bcc2fe6544e0bc9ff"

# AU -> the blendshapes that make it; the value is the max of them (see the module docstring).
AU_TABLE: dict[str, tuple[str, ...]] = {
    "AU1": ("browInnerUp",),
    "AU2": ("browOuterUpLeft", "browOuterUpRight"),
    "AU4": ("browDownLeft", "browDownRight"),
    "AU5": ("eyeWideLeft", "eyeWideRight"),
    "AU6": ("cheekSquintLeft", "cheekSquintRight"),
    "AU7": ("eyeSquintLeft", "eyeSquintRight"),
    "AU9": ("noseSneerLeft", "noseSneerRight"),
    "AU10": ("mouthUpperUpLeft", "mouthUpperUpRight"),
    "AU12": ("mouthSmileLeft", "mouthSmileRight"),
    "AU14": ("mouthDimpleLeft", "mouthDimpleRight"),
    "AU15": ("mouthFrownLeft", "mouthFrownRight"),
    "AU16": ("mouthLowerDownLeft", "mouthLowerDownRight"),
    "AU17": ("mouthShrugLower",),
    "AU18": ("mouthPucker",),
    "AU20": ("mouthStretchLeft", "mouthStretchRight"),
    "AU22": ("mouthFunnel",),
    "AU24": ("mouthPressLeft", "mouthPressRight"),
    "AU26": ("jawOpen",),
    "AU28": ("mouthRollLower", "mouthRollUpper"),
    "AU29": ("jawForward",),
    "AU30": ("jawLeft", "jawRight"),
    "AU34": ("cheekPuff",),
    "AU43": ("eyeBlinkLeft", "eyeBlinkRight"),
}
AU_NAMES = {
    "AU1": "inner brow raiser", "AU2": "outer brow raiser", "AU4": "brow lowerer", "AU5": "upper lid raiser",
    "AU6": "cheek raiser", "AU7": "lid tightener", "AU9": "nose wrinkler", "AU10": "upper lip raiser",
    "AU12": "lip corner puller", "AU14": "dimpler", "AU15": "lip corner depressor", "AU16": "lower lip depressor",
    "AU17": "chin raiser", "AU18": "lip pucker", "AU20": "lip stretcher", "AU22": "lip funneler",
    "AU24": "lip presser", "AU26": "jaw drop", "AU28": "lip suck", "AU29": "jaw thrust", "AU30": "jaw sideways",
    "AU34": "cheek puff", "AU43": "eyes closed",
}
MARGIN = 0.25  # crop side = box side * 1.5: closest to the landmarker on the whole photo (docs/action_units.md)
CROP_SIDE = 256  # every crop is resized to this: small faces upscaled, big ones shrunk (the models see 192 px)
MIN_FACE = 24  # px: smaller boxes get no AUs; below this the readings drift (docs/action_units.md)
GRAY = 128  # the margin beyond the photo's edge
MAX_INSTANCES = 4  # landmarkers held at most (one per concurrent caller): bounds memory under many threads


@dataclass(frozen=True)
class FaceActionUnits:
    """One face's AUs and blendshapes, or None for both with the reason why none could be read."""

    action_units: dict[str, float] | None
    blendshapes: dict[str, float] | None
    reason: str | None = None
    # The 478 landmarks (x, y, z) in the crop's normalised coordinates, for the blendshape head's geometry
    # (emotion/face_geometry.py); not part of the JSON shape.
    landmarks: np.ndarray | None = field(default=None, compare=False, repr=False)

    def as_dict(self) -> dict:
        """The JSON shape: {"action_units": {...} | None, "blendshapes": {...} | None, "action_units_reason"}."""
        return {"action_units": self.action_units, "blendshapes": self.blendshapes,
                "action_units_reason": self.reason}


def action_units(blendshapes: dict[str, float]) -> dict[str, float]:
    """The AUs of AU_TABLE from blendshape scores: each the max of its blendshapes, clipped to 0..1."""
    missing = sorted({n for names in AU_TABLE.values() for n in names} - set(blendshapes))
    if missing:
        raise EmotionError(f"blendshapes lack {', '.join(missing)}: pass the landmarker's 52 scores by name")
    return {au: float(min(1.0, max(0.0, max(blendshapes[n] for n in names)))) for au, names in AU_TABLE.items()}


class ActionUnitReader:
    """Reads AUs on faces our detector found. Safe to share between threads; the model loads on first use.

    Args:
        margin: context around each box on every side, as a fraction of the box's longer side.
        crop_side: the side, in px, each crop is resized to before the landmarker sees it.
        min_face: boxes whose longer side is below this many px get None with a reason.
    """

    def __init__(self, margin: float = MARGIN, crop_side: int = CROP_SIDE, min_face: int = MIN_FACE):
        if not (isinstance(margin, (int, float)) and 0.0 <= margin <= 2.0):
            raise EmotionError(f"margin must be between 0 and 2, not {margin!r}: {MARGIN} is the default")
        self.margin, self.crop_side, self.min_face = float(margin), int(crop_side), int(min_face)
        self._idle: queue.SimpleQueue = queue.SimpleQueue()
        self._all: list = []
        self._lock = threading.Lock()
        # Close before interpreter teardown: MediaPipe's own __del__ fails noisily once its C bindings are gone.
        weakref.finalize(self, close_later, _close_all, self._all)  # closed on the closer thread (mediapipe_tasks)

    def read(self, image, boxes) -> list[FaceActionUnits]:
        """The AUs of each face in `boxes`, in the same order.

        Args:
            image: an RGB image, a numpy array (H, W, 3) of uint8 or a PIL image (converted to RGB).
            boxes: (x, y, w, h) in pixels of `image`, or `emotion.faces.Face` objects (their `.box` is used).

        Returns:
            One `FaceActionUnits` per box; a face too small or one the landmarker cannot see gets
            `action_units=None` and a `reason`, never an exception.
        """
        rgb = _rgb_array(image)
        out = []
        for box in boxes:
            x, y, w, h = _box(box)
            # Clipped to the photo: a caller's huge or stray box must not allocate a huge crop.
            x0, y0, x1, y1 = max(0, x), max(0, y), min(rgb.shape[1], x + w), min(rgb.shape[0], y + h)
            x, y, w, h = x0, y0, max(0, x1 - x0), max(0, y1 - y0)
            if max(w, h) < self.min_face:
                out.append(FaceActionUnits(None, None, f"face too small for landmarks: {max(w, h)} px, "
                                                       f"needs at least {self.min_face} px"))
                continue
            out.append(self._read_one(self.crop(rgb, (x, y, w, h))))
        return out

    def crop(self, rgb: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
        """The square around `box` with `margin`, gray beyond the photo's edge, resized to `crop_side` px."""
        x, y, w, h = box
        side = max(1, round(max(w, h) * (1 + 2 * self.margin)))
        x0, y0 = round(x + w / 2 - side / 2), round(y + h / 2 - side / 2)
        square = np.full((side, side, 3), GRAY, dtype=np.uint8)
        sx0, sy0 = max(0, x0), max(0, y0)
        sx1, sy1 = min(rgb.shape[1], x0 + side), min(rgb.shape[0], y0 + side)
        if sx1 > sx0 and sy1 > sy0:
            square[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = rgb[sy0:sy1, sx0:sx1]
        if side == self.crop_side:
            return square
        return np.asarray(Image.fromarray(square).resize((self.crop_side, self.crop_side), Image.BILINEAR))

    def _read_one(self, crop: np.ndarray) -> FaceActionUnits:
        """The landmarker on one crop; of the faces it finds, the one nearest the crop's centre (our face)."""
        import mediapipe as mp

        landmarker = self._acquire()
        try:
            result = landmarker.detect(mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(crop)))
        finally:
            self._idle.put(landmarker)
        centre = [_distance_to_centre(points) for points in result.face_landmarks]
        if not centre or min(centre) > 0.25:  # a neighbour in the margin is not our face
            return FaceActionUnits(None, None, "the landmarker found no face in the crop around the box")
        ours = int(np.argmin(centre))
        blendshapes = {c.category_name: float(c.score) for c in result.face_blendshapes[ours]}
        landmarks = np.array([(p.x, p.y, p.z) for p in result.face_landmarks[ours]], dtype=np.float32)
        return FaceActionUnits(action_units(blendshapes), blendshapes, None, landmarks)

    def _acquire(self):
        """An idle landmarker, a new one while fewer than MAX_INSTANCES exist, else wait for one."""
        try:
            return self._idle.get_nowait()
        except queue.Empty:
            pass
        with self._lock:
            if len(self._all) < MAX_INSTANCES:
                self._all.append(_load())
                return self._all[-1]
        return self._idle.get()

    def close(self) -> None:
        """Frees the landmarkers; the next `read` loads one again. Call it only when no `read` is running."""
        with self._lock:
            while not self._idle.empty():
                self._idle.get_nowait()
            _close_all(self._all)


def check_model(path: Path = MODEL_PATH) -> bytes:
    """The model file's bytes after checking its sha256 against MODEL_SHA256 (see assets/README.md)."""
    return read_checked(path, MODEL_SHA256, "reinstall the package or copy the shipped face_landmarker.task there "
                        "(emotion/assets/README.md names it)")


def _load():
    from mediapipe.tasks.python import BaseOptions, vision

    options = vision.FaceLandmarkerOptions(
        base_options=BaseOptions(model_asset_buffer=check_model()),
        running_mode=vision.RunningMode.IMAGE,
        num_faces=2,  # our face and at most one neighbour in the margin; the nearest to the centre is ours
        output_face_blendshapes=True)
    with native_stderr_quiet():
        landmarker = vision.FaceLandmarker.create_from_options(options)
        # One run on a blank crop here, hidden: the first run's native warnings (LiteRT's memory alignment, absl's
        # "Logging before InitGoogle") would otherwise reach the terminal in the middle of a CLI's output.
        import mediapipe as mp

        landmarker.detect(mp.Image(image_format=mp.ImageFormat.SRGB,
                                   data=np.full((CROP_SIDE, CROP_SIDE, 3), GRAY, dtype=np.uint8)))
    logger.debug("loaded the face landmarker")
    return landmarker


def _close_all(landmarkers: list) -> None:
    with native_stderr_quiet():
        for landmarker in landmarkers:
            try:
                landmarker.close()
            except RuntimeError:  # at interpreter exit MediaPipe's dispatcher may already be shut down
                pass
    landmarkers.clear()


def _distance_to_centre(points) -> float:
    """How far the landmarks' mean lies from the crop's centre, in crop sides (normalised coordinates)."""
    return math.hypot(float(np.mean([p.x for p in points])) - 0.5, float(np.mean([p.y for p in points])) - 0.5)


def _rgb_array(image) -> np.ndarray:
    if isinstance(image, Image.Image):
        return np.asarray(image if image.mode == "RGB" else image.convert("RGB"))
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        got = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
        raise EmotionError(f"read() takes an RGB image, a uint8 array of shape (H, W, 3), not {got}: "
                           "convert it with np.asarray(PIL.Image.open(path).convert('RGB'))")
    return image


def _box(box) -> tuple[int, int, int, int]:
    values = getattr(box, "box", box)
    try:
        x, y, w, h = (round(float(v)) for v in values)
    except (TypeError, ValueError, OverflowError):
        raise EmotionError(f"a box must be (x, y, w, h) or a Face, not {box!r}") from None
    return x, y, w, h
