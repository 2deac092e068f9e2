"""Face detection (MediaPipe BlazeFace) -> boxes and keypoints in original pixels, for portraits and group photos.

BlazeFace shrinks whatever it is given to 128 px (short range) or 192 px (full range), so on its own it misses any
face under ~7% of the photo's long side, and its score for the same face moves with scale and position. The search:

1. short range on the whole photo (big, near faces); the search stops here on a portrait (one or two faces, each
   at least SHORT_MIN_FRACTION of the long side) and where near faces' people leave no room for a farther face
   (`_no_room`: a face smaller than all of them is farther away, so it cannot show through their bodies);
2. full range on the whole photo (faces down to ~8% of the long side); the same two stops;
3. full range on overlapping square tiles, one scale per octave of face size, down to `min_face` px (where the
   photo is large enough to hold faces the whole-photo pass cannot see);
4. every candidate is re-scored on two canonical views (square crops in which the face fills 30% and 50%, through
   the short-range model), so a score means the same wherever and at whatever size the face was found, and one
   threshold (`min_score`) applies everywhere; duplicates from overlapping tiles are merged by NMS.

A portrait or a webcam frame costs one short-range run and two short-range views per face (no full-range run;
bench/bench_speed.py times it against the search before), and so does a group shot whose near faces fill it; a
photo that leaves room for smaller faces, or shows none, costs the full-range run and the tiles too. The price:
beside one or two faces that big, a face under 15% of the long side is not looked for (range "full" looks).
`FaceDetector.passes` counts the detector calls by step.
The crops the classifier sees live in `crops.py` (re-exported here).
"""
from __future__ import annotations

import atexit
import contextlib
import logging
import numbers
import queue
import os
import sys
import threading
import weakref
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image

from .boxes import has_room, iou, nms, tiles
from .crops import crop_box, crop_face  # noqa: F401  (re-exported: callers import them from here)
from .errors import EmotionError

logger = logging.getLogger(__name__)

ASSETS = Path(__file__).resolve().parent / "assets"
MODEL_FILES = {"short": "face_detection_short_range.tflite", "full": "face_detection_full_range.tflite"}
INPUT_SIDE = {"short": 128, "full": 192}
RANGES = ("short", "full", "auto")
# The detector's defaults, for every entry point (Python, CLI, batch, REST, UI): written here only.
DEFAULT_MIN_SCORE, DEFAULT_MAX_FACES, DEFAULT_RANGE = 0.5, 20, "auto"
DETECT_MAX_SIDE = 1280  # whole-photo passes: BlazeFace sees 128/192 px anyway, a bigger image only costs resizing
TILE_MAX_SIDE = 2048  # tiles are cut from the photo shrunk to this: bounds the work on a 50 MP photo
MIN_FACE = 24  # px: the smallest face the tiles look for (in the photo shrunk to TILE_MAX_SIDE)
MERGE_IOU = 0.5  # two boxes overlapping more than this are one face
CANDIDATE_SCORE = 0.25  # raw BlazeFace scores below this are not worth re-scoring (measured: bench_detect.py)
RESCORE_VIEWS = (0.3, 0.5)  # face side / crop side in the canonical views (short range scores faces ~0.95 there)
# The views' geometric mean at which face-free photos gave <= 0.01 false faces per photo (bench_detect.py) is
# mapped to 0.5, so the default min_score 0.5 is that operating point; the map is piecewise linear, monotone.
OPERATING_POINT = 0.75
SHORT_MIN_FRACTION = 0.15  # short range misses faces smaller than this fraction of its input's side
FULL_MIN_FRACTION = 0.08  # full range finds faces down to about this fraction of its input's side
PORTRAIT_FACES = 2  # at most this many big faces after the short-range pass: a portrait, searched no further
# A person hides what is behind: shoulders ~2.9 face widths (40 cm / 14 cm), hair ~half a face above the brow, the
# body down to the photo's edge. A face smaller than every face found is farther away, so it can only show
# outside those regions: where they leave no room, the search stops.
PERSON_WIDTH = 3.0  # face-box widths
PERSON_ABOVE = 0.5  # face-box heights
MAX_CANDIDATES = 256  # re-scoring runs at most this many detector calls per photo
MAX_CACHED_DETECTORS = 4  # per FaceDetector: one per (model, score) in use; a UI slider must not pile them up


@dataclass(frozen=True)
class Face:
    """One detected face, in pixels of the image given to `FaceDetector.detect`.

    Attributes:
        box: (x, y, w, h), clipped to the image.
        score: detection score in 0..1, measured on the canonical view (comparable between faces and photos).
        keypoints: six (x, y) points in MediaPipe order: right eye, left eye, nose tip, mouth centre,
            right ear tragion, left ear tragion ("right" is the person's right, i.e. the left of the picture).
    """

    box: tuple[int, int, int, int]
    score: float
    keypoints: tuple[tuple[float, float], ...]


@dataclass(frozen=True)
class Detections:
    """The faces kept (at most `max_faces`, left to right) and how many passed `min_score` in all."""

    faces: list[Face]
    total: int

    @property
    def truncated(self) -> bool:
        return self.total > len(self.faces)


class FaceDetector:
    """Finds faces with MediaPipe BlazeFace. Safe to share between threads; the models load on first use.

    Args:
        min_score: faces whose canonical score is below this are dropped (0..1).
        max_faces: keep at most this many faces, the highest-scoring ones.
        range: "short" searches the whole photo with the short-range model only (selfies, webcams; cheapest),
            "full" with the full-range model and tiles, "auto" the short-range model first and the rest unless
            its faces make a portrait or fill the photo (see the module docstring).
        min_face: the smallest face, in pixels, the tiles look for.
    """

    def __init__(self, min_score: float = DEFAULT_MIN_SCORE, max_faces: int = DEFAULT_MAX_FACES,
                 range: str = DEFAULT_RANGE,  # noqa: A002
                 min_face: int = MIN_FACE):
        self.min_score, self.max_faces, self.range = _check_options(min_score, max_faces, range)
        self.min_face = max(8, int(min_face))
        self._detectors: dict[tuple[str, float], object] = {}
        self._ran: set[int] = set()  # detectors that have run once (their first run prints native warnings)
        # Detector calls so far by step ("short", "full": whole-photo passes; "tiles"; "views": re-scoring), for
        # tests and benchmarks that check which passes a photo took (clear it to count one call).
        self.passes: Counter[str] = Counter()
        # MediaPipe task objects are not thread-safe; a detection takes a few ms, so one lock costs little.
        self._lock = threading.Lock()
        # Close before interpreter teardown: MediaPipe's own __del__ fails noisily once its C bindings are gone.
        weakref.finalize(self, close_later, _close_all, self._detectors)

    def detect(self, image: Image.Image, min_score: float | None = None, max_faces: int | None = None,
               range: str | None = None) -> list[Face]:  # noqa: A002
        """Finds the faces in `image` (see `find`); returns only the faces kept, left to right."""
        return self.find(image, min_score, max_faces, range).faces

    def find(self, image: Image.Image, min_score: float | None = None, max_faces: int | None = None,
             range: str | None = None) -> Detections:  # noqa: A002
        """Finds the faces in `image`, and counts them before the `max_faces` cut.

        Args:
            image: a PIL image (converted to RGB if needed); use `images.load_image` to get one from a file.
            min_score: overrides the detector's `min_score` for this call.
            max_faces: overrides the detector's `max_faces` for this call.
            range: overrides the detector's `range` for this call.

        Returns:
            `Detections`: the highest-scoring `max_faces` faces sorted left to right (by box x), in pixels of
            `image`, and the number of faces found in all. An image without faces gives no faces and total 0.
        """
        min_score, max_faces, range = self._options(min_score, max_faces, range)  # noqa: A001
        if not isinstance(image, Image.Image):
            raise EmotionError(f"detect() takes a PIL image, not {type(image).__name__}: "
                               "read files with emotion.images.load_image first")
        rgb = image if image.mode == "RGB" else image.convert("RGB")
        return _kept(self._search(rgb, range, min_score), min_score, max_faces)

    def _options(self, min_score, max_faces, range):  # noqa: A002
        """This call's options, the detector's own where a call gives None; checked."""
        return _check_options(self.min_score if min_score is None else min_score,
                              self.max_faces if max_faces is None else max_faces,
                              self.range if range is None else range)

    def close(self) -> None:
        """Frees the MediaPipe detectors; the next `detect` loads them again."""
        with self._lock:
            _close_all(self._detectors)

    # ------------------------------------------------------------------------------------------------- search
    def _search(self, rgb: Image.Image, range: str, min_score: float) -> list[Face]:  # noqa: A002
        """Re-scored faces from the whole-photo passes and, where needed, the tiles.

        Candidates are taken down to CANDIDATE_SCORE (their raw scores are not comparable yet); which passes run
        is decided on the faces that re-score at `min_score` or more: an "auto" search stops after the first
        pass whose faces make a portrait or leave no room for smaller ones (`_complete`).
        """
        floor = min(min_score, CANDIDATE_SCORE)
        small, scale = _shrunk(rgb, DETECT_MAX_SIDE)
        found: list[Face] = []
        for model in {"short": ("short",), "full": ("full",), "auto": ("short", "full")}[range]:
            found = self._confirm(rgb, self._run(model, small, scale, floor, model), found, floor)
            if range == "short" or (range == "auto" and self._complete(found, min_score, rgb.size)):
                return found
        return self._confirm(rgb, self._tiled(rgb, floor), found, floor)

    def _complete(self, found: list[Face], min_score: float, size: tuple[int, int]) -> bool:
        """Whether the faces found so far end an "auto" search: a portrait (`_portrait`), or near faces whose
        people leave no room (`_no_room`) for a face as small as the later passes look for."""
        side = self.min_face * max(1.0, max(size) / TILE_MAX_SIDE)  # min_face is in the tiles' pixels
        return _portrait(found, min_score, max(size)) or _no_room(found, min_score, size, side)

    def follow(self, image: Image.Image, boxes, min_score: float | None = None, max_faces: int | None = None,
               range: str | None = None) -> Detections:  # noqa: A002
        """For a video's frames between full searches: one whole-frame pass (the short-range one, or the
        full-range one if `range` is "full": faces that came near) plus a look around each of `boxes` (the faces
        of the previous frame, (x, y, w, h)); no tiles. A face that was not in the previous frame and is too small
        for that pass waits for the next full search. Scores are the same calibrated scores as `find`'s; on a
        720p frame with two faces it costs five short-range detector calls instead of a tiled search's dozens."""
        min_score, max_faces, range = self._options(min_score, max_faces, range)  # noqa: A001
        rgb = image if image.mode == "RGB" else image.convert("RGB")
        floor = min(min_score, CANDIDATE_SCORE)
        small, scale = _shrunk(rgb, DETECT_MAX_SIDE)
        model = "full" if range == "full" else "short"
        near = self._confirm(rgb, self._run(model, small, scale, floor, model), [], floor)
        hints = [Face(box=tuple(int(v) for v in b), score=1.0, keypoints=()) for b in boxes]
        return _kept(self._confirm(rgb, hints, near, floor), min_score, max_faces)

    def _tiled(self, rgb: Image.Image, floor: float) -> list[Face]:
        """Full-range candidates from overlapping square tiles, one scale per octave of face size."""
        work, scale = _shrunk(rgb, TILE_MAX_SIDE)
        found: list[Face] = []
        lo = float(self.min_face)
        while (tile := round(lo / FULL_MIN_FRACTION)) < max(work.size):  # bigger faces: the whole-photo pass
            # Neighbours overlap by more than the biggest face this scale looks for (2 * lo), so it is whole in one.
            for x, y in tiles(work.width, work.height, tile, round(2.5 * lo)):
                patch = work.crop((x, y, x + tile, y + tile)).resize((192, 192), Image.BILINEAR)
                found += [_shifted(f, tile / 192, x, y, scale) for f in self._run("full", patch, 1.0, floor, "tiles")]
            lo *= 2
        return found

    def _confirm(self, rgb: Image.Image, candidates: list[Face], found: list[Face], floor: float) -> list[Face]:
        """`found` plus the new candidates that re-score at or above `floor`, duplicates merged."""
        new = [c for c in nms(candidates, _box, _score, MERGE_IOU) if all(iou(c.box, f.box) <= MERGE_IOU
                                                                       for f in found)]
        rescored = [self._rescore(rgb, c) for c in new[:MAX_CANDIDATES]]
        return nms(found + [f for f in rescored if f is not None and f.score >= floor], _box, _score, MERGE_IOU)

    def _rescore(self, rgb: Image.Image, face: Face) -> Face | None:
        """The face as the short-range model sees it in RESCORE_VIEWS: square crops where it fills a set fraction.

        The score is the geometric mean of the views' scores, calibrated (see `calibrated`); box and keypoints
        come from the first view. None when the first view sees no face where the candidate was.
        """
        scores, first = [], None
        for fraction in RESCORE_VIEWS:
            x, y, w, h = face.box
            side = max(8, round(max(w, h) / fraction))
            x0, y0 = round(x + w / 2 - side / 2), round(y + h / 2 - side / 2)
            # Parts outside the photo come out black, like BlazeFace's own letterbox.
            view = rgb.crop((x0, y0, x0 + side, y0 + side)).resize((128, 128), Image.BILINEAR)
            raw = self._run("short", view, 1.0, CANDIDATE_SCORE, "views")
            seen = [_shifted(f, side / 128, x0, y0, 1.0) for f in raw]
            match = max(seen, key=lambda f: iou(f.box, face.box), default=None)
            if match is None or iou(match.box, face.box) < 0.3:
                if first is None:
                    return None
                scores.append(0.0)
                continue
            first = first or match
            scores.append(match.score)
        return replace(_clipped(first, rgb.size), score=calibrated(float(np.prod(scores)) ** (1 / len(scores))))

    def _run(self, model: str, image: Image.Image, scale: float, floor: float, step: str) -> list[Face]:
        """Raw detections of `model` on `image`, in pixels of the photo `image` was shrunk from by `scale`;
        counted in `passes[step]`."""
        import mediapipe as mp  # lazily: ~0.5 s to import, and the trainer's CLI help should not pay it

        pixels = np.ascontiguousarray(np.asarray(image))
        with self._lock:
            detector = self._detector(model, floor)
            first = id(detector) not in self._ran
            with _native_stderr_quiet() if first else contextlib.nullcontext():  # its alignment warning
                result = detector.detect(mp.Image(image_format=mp.ImageFormat.SRGB, data=pixels))
            self._ran.add(id(detector))
            self.passes[step] += 1
        return [_to_face(d, image.width, image.height, scale) for d in result.detections]

    def _detector(self, model: str, min_score: float):
        """One MediaPipe detector per (model, threshold): the threshold is fixed when it is created."""
        key = (model, min_score)
        if key not in self._detectors:
            if len(self._detectors) >= MAX_CACHED_DETECTORS:
                with _native_stderr_quiet():
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
            with _native_stderr_quiet():
                self._detectors[key] = vision.FaceDetector.create_from_options(options)
            logger.debug("loaded the %s-range face detector (min_score %.2f)", model, min_score)
        return self._detectors[key]


def largest_faces(images, min_score: float = DEFAULT_MIN_SCORE) -> list[tuple[Image.Image, Face | None]]:
    """Each photo (RGB) with its largest face, or None where none is found: one detector for the whole list.

    `images` holds PIL images or `datasets` image dicts ({"bytes": ...}).
    """
    import io

    detector = FaceDetector(min_score=min_score, max_faces=5)
    out = []
    try:
        for img in images:
            img = img if isinstance(img, Image.Image) else Image.open(io.BytesIO(img["bytes"]))
            rgb = img.convert("RGB")
            faces = detector.detect(rgb)
            out.append((rgb, max(faces, key=lambda f: f.box[2] * f.box[3]) if faces else None))
    finally:
        detector.close()
    return out


def crop_largest_faces(images, margin: float, align_eyes: bool = True, offset_y: float = 0.0,
                       min_score: float = DEFAULT_MIN_SCORE) -> tuple[list[Image.Image], np.ndarray]:
    """Each photo's largest face, cropped as serving crops it; a photo without a face stays whole (RGB).

    For scoring and training on photo data sets. Returns the images and, per photo, whether a face was found.
    """
    found = largest_faces(images, min_score)
    return crops_of(found, margin, align_eyes, offset_y), np.array([f is not None for _, f in found], dtype=bool)


def crops_of(found: list[tuple[Image.Image, Face | None]], margin: float, align_eyes: bool = True,
             offset_y: float = 0.0) -> list[Image.Image]:
    """`largest_faces`' photos cut around their face (a photo without one stays whole)."""
    return [rgb if face is None else crop_face(rgb, face, margin, align_eyes, offset_y) for rgb, face in found]


def calibrated(view_score: float) -> float:
    """The canonical views' geometric mean -> the score users threshold: OPERATING_POINT becomes 0.5."""
    if view_score < OPERATING_POINT:
        return 0.5 * view_score / OPERATING_POINT
    return 0.5 + 0.5 * (view_score - OPERATING_POINT) / (1 - OPERATING_POINT)


_TO_CLOSE: queue.SimpleQueue = queue.SimpleQueue()  # (close function, its argument) for the closer thread


def close_later(close, tasks) -> None:
    """Close MediaPipe task objects on the closer thread, never on the caller's. For weakref finalizers: the garbage
    collector may run one in the middle of a MediaPipe call on this very thread, and closing there re-enters
    MediaPipe's dispatcher (a thread pool's non-reentrant lock) and deadlocks (seen: a test hung for good inside
    FaceDetector.detect). `SimpleQueue.put` is reentrant, made for finalizers; at exit, `_close_queued` closes
    what is still queued, on the main thread."""
    _TO_CLOSE.put((close, tasks))


def _closer() -> None:
    while True:
        close, tasks = _TO_CLOSE.get()
        with contextlib.suppress(Exception):  # a task already closed, or MediaPipe shutting down at exit
            close(tasks)


@atexit.register
def _close_queued() -> None:  # registered before any finalizer's own exit hook, so it runs after them (LIFO)
    while not _TO_CLOSE.empty():
        close, tasks = _TO_CLOSE.get_nowait()
        with contextlib.suppress(Exception):
            close(tasks)


threading.Thread(target=_closer, name="mediapipe-closer", daemon=True).start()


def _close_all(detectors: dict) -> None:
    with _native_stderr_quiet():
        for detector in detectors.values():
            detector.close()
    detectors.clear()


@contextlib.contextmanager
def _native_stderr_quiet():
    """Hides what MediaPipe's C++ (LiteRT, XNNPACK, absl) writes straight to file descriptor 2 meanwhile.

    Those INFO lines and warnings bypass Python's logging and interleave with progress bars. They show when this
    module logs at DEBUG (`--verbose` on the command line). Only detector creation, its first run and its closing
    are wrapped: fd 2 is process-wide, so other threads' stderr is hidden too for those few milliseconds.
    """
    if logger.isEnabledFor(logging.DEBUG):
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no fd 2 (some embedded interpreters): nothing to hide
        yield
        return
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.close(devnull)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _check_options(min_score, max_faces, range):  # noqa: A002
    if range not in RANGES:
        raise EmotionError(f"range must be one of {', '.join(RANGES)}, not {range!r}: 'short' for faces near "
                           "the camera, 'full' for small or far faces, 'auto' to try both")
    if isinstance(min_score, bool) or not isinstance(min_score, numbers.Real) or not 0.0 <= min_score <= 1.0:
        raise EmotionError(f"min_score must be between 0 and 1, not {min_score}: 0.5 is a good default")
    if isinstance(max_faces, bool) or not isinstance(max_faces, int) or max_faces < 1:
        raise EmotionError(f"max_faces must be a whole number >= 1, not {max_faces!r}")
    return float(min_score), max_faces, range


def _kept(faces: list[Face], min_score: float, max_faces: int) -> Detections:
    """The faces scoring at least `min_score`: the best `max_faces` of them, left to right, and how many in all."""
    found = [f for f in faces if f.score >= min_score]
    kept = sorted(found, key=lambda f: -f.score)[:max_faces]
    return Detections(sorted(kept, key=lambda f: (f.box[0], f.box[1])), len(found))


def _shrunk(rgb: Image.Image, max_side: int) -> tuple[Image.Image, float]:
    """`rgb` with the long side at most `max_side`, and the factor it was scaled by."""
    if max(rgb.size) <= max_side:
        return rgb, 1.0
    scale = max_side / max(rgb.size)
    size = (max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale)))
    small = rgb.resize(size, Image.BOX)  # area averaging: anti-aliased, and faster than bilinear here
    return small, small.width / rgb.width


def _to_face(detection, width: int, height: int, scale: float) -> Face:
    """A MediaPipe detection on an image shrunk by `scale` -> a Face in the unshrunk image's pixels (unclipped)."""
    b = detection.bounding_box
    box = (round(b.origin_x / scale), round(b.origin_y / scale), round(b.width / scale), round(b.height / scale))
    keypoints = tuple((k.x * width / scale, k.y * height / scale) for k in detection.keypoints)
    score = detection.categories[0].score if detection.categories else 0.0
    return Face(box=box, score=float(score), keypoints=keypoints)


def _shifted(face: Face, factor: float, dx: float, dy: float, scale: float) -> Face:
    """A face found in a patch (scaled by 1/factor, at dx, dy of an image shrunk by `scale`) in photo pixels."""
    x, y, w, h = face.box
    box = (round((x * factor + dx) / scale), round((y * factor + dy) / scale), round(w * factor / scale),
           round(h * factor / scale))
    keypoints = tuple(((kx * factor + dx) / scale, (ky * factor + dy) / scale) for kx, ky in face.keypoints)
    return replace(face, box=box, keypoints=keypoints)


def _clipped(face: Face, size: tuple[int, int]) -> Face:
    x, y, w, h = face.box
    x0, y0, x1, y1 = max(0, x), max(0, y), min(size[0], x + w), min(size[1], y + h)
    return replace(face, box=(x0, y0, max(0, x1 - x0), max(0, y1 - y0)))


def _portrait(faces: list[Face], min_score: float, long_side: int) -> bool:
    """One or two faces, each at least SHORT_MIN_FRACTION of the long side: a portrait, a selfie, a couple, a
    webcam frame.

    The search stops at the first whole-photo pass that shows one (the short-range pass, which is all a portrait
    needs): a smaller face beside such a face is not looked for, which keeps a portrait at one short-range pass
    and its re-scoring; any other photo gets the full-range pass and the tiles.
    """
    sides = [max(f.box[2], f.box[3]) for f in faces if f.score >= min_score]
    return 0 < len(sides) <= PORTRAIT_FACES and min(sides) >= SHORT_MIN_FRACTION * long_side


def _no_room(faces: list[Face], min_score: float, size: tuple[int, int], side: float) -> bool:
    """Faces all near (at least SHORT_MIN_FRACTION of the long side) whose people (PERSON_WIDTH, PERSON_ABOVE,
    down to the bottom) cover the photo, leaving no square of `side` px where a farther face could show."""
    near = [f.box for f in faces if f.score >= min_score]
    if not near or min(max(w, h) for _, _, w, h in near) < SHORT_MIN_FRACTION * max(size):
        return False
    people = [(x + w / 2 - PERSON_WIDTH * w / 2, y - PERSON_ABOVE * h, x + w / 2 + PERSON_WIDTH * w / 2, size[1])
              for x, y, w, h in near]
    return not has_room(size[0], size[1], people, side)


def _box(face: Face) -> tuple[int, int, int, int]:
    return face.box


def _score(face: Face) -> float:
    return face.score
