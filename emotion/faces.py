"""Face detection: YuNet finds every face in one pass at any photo size; BlazeFace frames each one as before.

YuNet (emotion/yunet.py) finds faces from ~12-16 px up wherever they are in the image it is given, so one run on the
photo at a bounded size finds near and far faces alike: no tiles, no second whole-photo model. The search:

1. "near" pass: the photo shrunk to NEAR_SIDE (faces down to ~8% of its long side). A portrait, a selfie, a couple
   or a webcam frame (one or two faces, each at least PORTRAIT_FRACTION of the long side) ends the search here: with
   `range="auto"` a much smaller face beside them is not looked for (`range="full"` looks);
2. the whole photo at `detect_side` (its long side times MIN_INPUT_FACE / `min_face`, kept within DETECT_SIDE ..
   MAX_DETECT_SIDE): faces down to `min_face` px of a photo up to MAX_DETECT_SIDE * min_face / MIN_INPUT_FACE px;
3. each candidate once through BlazeFace short range on its view (emotion/blazeface.py: a 128 px square in which
   it fills VIEW_FILL; all the views of a pass in one ONNX Runtime batch). YuNet's eyes hardly follow a tilted
   head and its box is taller than wide; the crops the models were trained on were levelled by BlazeFace's eyes
   and framed by its square box from this same view, so the view gives each face its box, keypoints and score
   (calibrated: `min_score` 0.5 is the operating point bench_detect.py measured, <= 0.01 false faces per
   face-free photo), and drops what YuNet took for a face in a texture. Where BlazeFace sees nothing in a view
   (dark glasses, a mask), YuNet's own run on it decides.

`FaceDetector.passes` counts the detector runs by pass ("near", "photo", "views").
The crops the classifier sees live in `crops.py` (re-exported here).
"""
from __future__ import annotations

import math
import numbers
import threading
import time
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from .boxes import iou, nms
from .crops import crop_box, crop_face  # noqa: F401  (re-exported: callers import them from here)
from .errors import EmotionError
from .images import file_pixels, load_image, planned_size
from .blazeface import BlazeFace
from .threads import wide_threads
from .yunet import YuNet

ASSETS = Path(__file__).resolve().parent / "assets"
RANGES = ("short", "full", "auto")
# The detector's defaults, for every entry point (Python, CLI, batch, REST, UI): written here only.
DEFAULT_MIN_SCORE, DEFAULT_MAX_FACES, DEFAULT_RANGE = 0.5, 20, "auto"
NEAR_SIDE = 192  # the near pass: portraits and webcam frames (faces from ~8% of the long side; ~1 ms here)
DETECT_SIDE = 640  # the whole-photo pass runs at least at this long side (YuNet's design size) ...
MAX_DETECT_SIDE = 960  # ... and at most at this one: its time grows with the pixels (~23 ms per megapixel here);
# 960 is half a 1080p photo's side (a JPEG decodes at half size in the DCT, and Image.reduce halves one fast)
SIDE_SLACK = 1.07  # an image at most this much larger than a pass's side runs as it is (no resampling)
MIN_SIDE = 96  # smaller images (a 48 px face crop) are enlarged to this: YuNet's priors start at 8 px cells
MIN_INPUT_FACE = 16  # px: the smallest face YuNet finds reliably on a busy background (bench_detect.py)
MIN_FACE = 24  # px: the smallest face looked for in the photo, as far as MAX_DETECT_SIDE allows
MIN_CROP_FACE = 64  # px: a face smaller than this in a photo decoded at reduced scale is cut from a finer decode
AHEAD_PIXELS = 1920 * 1088  # a finer decode at most this large is started beside the search (`_decode_ahead`)
MERGE_IOU = 0.5  # two boxes overlapping more than this are one face
CANDIDATE_SCORE = 0.25  # a pass's raw YuNet scores below this are not worth a view (bench_detect.py)
MAX_CANDIDATES = 256  # views per pass at most
# Each candidate's view: a VIEW_SIDE square around it in which it fills VIEW_FILL, through BlazeFace short range
# (emotion/blazeface.py). Its box, eyes and score are what the crops and `min_score` use, as before YuNet (the
# crops the models were trained on came from this view). The textures that fool YuNet's pass (star fields, engines,
# cat faces) score low there: see OPERATING_POINT.
VIEW_SIDE, VIEW_FILL = 128, 0.3
VIEW_FLOOR = 0.05  # the view reports whatever it sees; the threshold applies to the calibrated score
VIEW_MATCH_IOU = 0.3  # the view's face must be where the candidate was
# BlazeFace's view score at which face-free photos gave <= 0.01 false faces per photo (bench_detect.py) is mapped to
# 0.5, so the default min_score 0.5 is that operating point; the map is piecewise linear, monotone.
OPERATING_POINT = 0.75
YUNET_OPERATING_POINT = 0.85  # the same for YuNet's score on a view BlazeFace found nothing in
PORTRAIT_FACES = 2  # at most this many near faces: a portrait, searched no further with range "auto"
PORTRAIT_FRACTION = 0.15  # ... each at least this fraction of the photo's long side
# BlazeFace's square box from YuNet's (x, y, w, h): side SQUARE_SIDE * sqrt(w * h), centre SQUARE_DOWN * sqrt(w * h)
# below YuNet's along the face's own vertical axis. Fitted on 300 Taiwanese posed photos (0.903, 0.100) and the 85
# JAFFE photos (0.943, 0.078), scale spread 3.5%, shift spread 0.026 (2026-12-07).
SQUARE_SIDE = 0.92
SQUARE_DOWN = 0.09


_ahead_pool = ThreadPoolExecutor(1, thread_name_prefix="decode-ahead")
_ahead_free = threading.Semaphore(1)


@dataclass(frozen=True)
class Face:
    """One detected face, in pixels of the image given to `FaceDetector.detect`.

    Attributes:
        box: (x, y, w, h), square (as the crops expect), clipped to the image.
        score: detection score in 0..1 (YuNet's, calibrated: 0.5 is the default operating point).
        keypoints: five (x, y) points in YuNet's order: right eye, left eye, nose tip, right mouth corner, left
            mouth corner ("right" is the person's right, i.e. the left of the picture).
    """

    box: tuple[int, int, int, int]
    score: float
    keypoints: tuple[tuple[float, float], ...]


@dataclass(frozen=True)
class Detections:
    """The faces kept (at most `max_faces`, left to right) and how many passed `min_score` in all."""

    faces: list[Face]
    total: int
    decode_ms: float = 0.0  # the time `decode_and_find` spent decoding the file (0 for an image given decoded)

    @property
    def truncated(self) -> bool:
        return self.total > len(self.faces)


class FaceDetector:
    """Finds faces with YuNet. Safe to share between threads; the model loads on first use.

    Args:
        min_score: faces whose calibrated score is below this are dropped (0..1).
        max_faces: keep at most this many faces, the highest-scoring ones.
        range: "auto" runs the near pass and, unless it shows a portrait, the whole-photo pass (see the module
            docstring); "short" the near pass only (faces down to ~5% of the long side: the cheapest); "full" the
            whole-photo pass only (it also finds a small face beside a portrait).
        min_face: the smallest face, in pixels of the photo, the whole-photo pass looks for (as far as
            MAX_DETECT_SIDE allows).
    """

    def __init__(self, min_score: float = DEFAULT_MIN_SCORE, max_faces: int = DEFAULT_MAX_FACES,
                 range: str = DEFAULT_RANGE,  # noqa: A002
                 min_face: int = MIN_FACE):
        self.min_score, self.max_faces, self.range = _check_options(min_score, max_faces, range)
        self.min_face = max(8, int(min_face))
        self.yunet = YuNet()
        self.blazeface = BlazeFace(VIEW_FLOOR)  # ONNX Runtime: every view of a photo in one run
        # Detector runs so far by pass ("near", "photo"), for tests and benchmarks that check which passes a photo
        # took (clear it to count one call).
        self.passes: Counter[str] = Counter()
        self._count = threading.Lock()

    def detect(self, image: Image.Image, min_score: float | None = None, max_faces: int | None = None,
               range: str | None = None) -> list[Face]:  # noqa: A002
        """Finds the faces in `image` (see `find`); returns only the faces kept, left to right."""
        return self.find(image, min_score, max_faces, range).faces

    def find(self, image: Image.Image, min_score: float | None = None, max_faces: int | None = None,
             range: str | None = None, finer=None) -> Detections:  # noqa: A002
        """Finds the faces in `image`, and counts them before the `max_faces` cut.

        Args:
            image: a PIL image (converted to RGB if needed); use `images.load_image` to get one from a file.
            min_score: overrides the detector's `min_score` for this call.
            max_faces: overrides the detector's `max_faces` for this call.
            range: overrides the detector's `range` for this call.
            finer: for an image decoded at a reduced scale (`decode_and_find`), a callable that decodes the same
                file at a long side of at least its argument: a face too small in `image` for its view is looked
                at in that finer decode.

        Returns:
            `Detections`: the highest-scoring `max_faces` faces sorted left to right (by box x), in pixels of
            `image`, and the number of faces found in all. An image without faces gives no faces and total 0.
        """
        min_score, max_faces, range = self._options(min_score, max_faces, range)  # noqa: A001
        if not isinstance(image, Image.Image):
            raise EmotionError(f"detect() takes a PIL image, not {type(image).__name__}: "
                               "read files with emotion.images.load_image first")
        rgb = image if image.mode == "RGB" else image.convert("RGB")
        return _kept(self._search(rgb, range, min_score, finer), min_score, max_faces)

    def _options(self, min_score, max_faces, range):  # noqa: A002
        """This call's options, the detector's own where a call gives None; checked."""
        return _check_options(self.min_score if min_score is None else min_score,
                              self.max_faces if max_faces is None else max_faces,
                              self.range if range is None else range)

    def close(self) -> None:
        """Kept for callers that closed the MediaPipe detectors this class ran before: ONNX Runtime's sessions need
        no closing."""

    def follow(self, image: Image.Image, boxes, min_score: float | None = None, max_faces: int | None = None,
               range: str | None = None) -> Detections:  # noqa: A002
        """For a video's frames between full searches (emotion/video.py): the near pass (a new face near the camera
        is found at once) and a view around each of `boxes` (the previous frame's faces, (x, y, w, h)), no
        whole-photo pass: a new small face waits for the next full search. Scores as `find`'s."""
        min_score, max_faces, range = self._options(min_score, max_faces, range)  # noqa: A001
        rgb = image if image.mode == "RGB" else image.convert("RGB")
        near = self._confirm(rgb, self._pass(rgb, NEAR_SIDE, "near"), []) if range != "full" else []
        hints = [Face(box=tuple(int(v) for v in b), score=1.0, keypoints=()) for b in boxes]
        return _kept(self._confirm(rgb, (rgb, hints), near), min_score, max_faces)

    def detect_side(self, long_side: int) -> int:
        """The long side the whole-photo pass runs at, for a photo of `long_side` px (never above the photo's own,
        except for images under MIN_SIDE)."""
        wanted = round(long_side * MIN_INPUT_FACE / self.min_face)
        return max(MIN_SIDE, min(long_side, max(DETECT_SIDE, min(MAX_DETECT_SIDE, wanted))))

    def _search(self, rgb: Image.Image, range: str, min_score: float, finer=None) -> list[Face]:  # noqa: A002
        """The near pass, the whole-photo pass, or the near pass and (unless it shows a portrait) the other; every
        candidate confirmed on its view."""
        found: list[Face] = []
        if range != "full":
            found = self._confirm(rgb, self._pass(rgb, NEAR_SIDE, "near"), found, finer)
            if range == "short" or (range == "auto" and _portrait(found, min_score, max(rgb.size))):
                return found
        # Sized by the file: a JPEG decoded at 1/2 scale for this search still runs its whole-photo pass at the side
        # its full size asks for (a 1920x1080 photo at 960, not at 640 of the 960 decoded), so `min_face` holds
        return self._confirm(rgb, self._pass(rgb, self.detect_side(max(file_pixels(rgb)[0])), "photo"), found, finer)

    def _pass(self, rgb: Image.Image, side: int, name: str) -> tuple[Image.Image | None, list[Face]]:
        """YuNet on `rgb` resized to a long side of `side` (or MIN_SIDE for tiny images): the image to cut its
        candidates' views from (the near pass's own; None for the whole-photo pass, whose fast shrink only YuNet
        sees: `view_source` cuts from the photo) and its candidates, in pixels of `rgb`."""
        side = max(MIN_SIDE, min(side, max(rgb.size)))
        if name == "near":
            work = _resized(rgb, side)
            pixels = np.asarray(work)
        else:
            work, pixels = None, _shrunk_fast(rgb, side)
        rows = self.yunet.detect(pixels, CANDIDATE_SCORE)
        self._counted(name)
        sx, sy = rgb.width / pixels.shape[1], rgb.height / pixels.shape[0]
        return work, [square_face(row, (sx, sy), (0.0, 0.0), rgb.size) for row in rows]

    def _confirm(self, rgb: Image.Image, searched: tuple[Image.Image | None, list[Face]], found: list[Face],
                 finer=None) -> list[Face]:
        """`found` plus the new candidates (not overlapping a face found) whose view confirms them."""
        work, candidates = searched
        new = [c for c in nms(candidates, _box, _score, MERGE_IOU)
               if all(iou(c.box, f.box) <= MERGE_IOU for f in found)][:MAX_CANDIDATES]
        seen = self._views(rgb, work, new, finer)
        return nms(found + [f for f in seen if f is not None], _box, _score, MERGE_IOU)

    def _views(self, rgb: Image.Image, work: Image.Image | None, candidates: list[Face],
               finer=None) -> list[Face | None]:
        """Each candidate as BlazeFace sees it in its view (`view`), all in one batch: the face found there, in
        photo pixels, with BlazeFace's box, keypoints and calibrated score (so a score means the same at any face
        size and place), or None when the view shows no face where the candidate was. Where BlazeFace sees
        nothing (dark glasses, a mask), YuNet's own run on the view decides."""
        if not candidates:
            return []
        source = view_source(rgb, work, candidates, finer)
        cut = [view(source, rgb, c) for c in candidates]
        pixels = np.stack([np.asarray(image) for image, _, _ in cut])
        self._counted("views", len(cut))
        out = []
        for face, (_, scale, offset), found in zip(candidates, cut, self.blazeface.detect(pixels)):
            match = _matching([_in_photo(*d, scale, offset, rgb.size) for d in found], face)
            if match is None:
                self._counted("yunet views")
                rows = self.yunet.detect(pixels[len(out)], VIEW_FLOOR)
                match = _matching([_yunet_face(square_face(r, scale, offset, rgb.size)) for r in rows], face)
            out.append(match)
        return out

    def _counted(self, name: str, runs: int = 1) -> None:
        with self._count:
            self.passes[name] += runs


def view_source(rgb: Image.Image, work: Image.Image | None, candidates: list[Face], finer=None) -> Image.Image:
    """The smallest image to cut the candidates' views from in which the smallest of them still fills its view
    (VIEW_SIDE * VIEW_FILL px): the pass's image `work` (None: the pass has none to offer), the photo reduced by a
    whole factor, the photo, or, where `rgb` was decoded at a reduced scale and the face is smaller than its view
    there, a finer decode of the file (`finer`: see `FaceDetector.find`)."""
    need = VIEW_SIDE * VIEW_FILL
    smallest = min(max(c.box[2], c.box[3]) for c in candidates)
    if work is not None and smallest * work.width / rgb.width >= need:
        return work
    factor = int(smallest // need)
    if factor >= 2:
        return rgb.reduce(factor)
    if factor == 0 and finer is not None:
        larger = finer(math.ceil(max(rgb.size) * need / max(1, smallest)))
        if larger.width > rgb.width:
            return larger
    return rgb


def view(source: Image.Image, rgb: Image.Image, face: Face) -> tuple[Image.Image, tuple, tuple]:
    """The candidate's view: a VIEW_SIDE square in which it fills VIEW_FILL, cut from `source` (the photo `rgb` at
    some scale: `view_source`); with the scale and offset from its pixels to the photo's. Parts outside the photo
    come out black, like BlazeFace's own letterbox."""
    x, y, w, h = face.box
    k = source.width / rgb.width
    side = max(w, h) / VIEW_FILL * k
    x0, y0 = round((x + w / 2) * k - side / 2), round((y + h / 2) * k - side / 2)
    x1, y1 = max(x0 + 1, round((x + w / 2) * k + side / 2)), max(y0 + 1, round((y + h / 2) * k + side / 2))
    image = source.crop((x0, y0, x1, y1)).resize((VIEW_SIDE, VIEW_SIDE), Image.BILINEAR)
    return image, ((x1 - x0) / VIEW_SIDE / k, (y1 - y0) / VIEW_SIDE / k), (x0 / k, y0 / k)


def square_face(row: np.ndarray, scale: tuple[float, float], offset: tuple[float, float],
                size: tuple[int, int]) -> Face:
    """One YuNet row (see `YuNet.detect`) from an image whose pixel (u, v) is the photo's (u * sx + dx,
    v * sy + dy) -> a candidate Face in the photo's pixels: BlazeFace's square box (SQUARE_SIDE, SQUARE_DOWN, so its
    view frames it as BlazeFace expects), clipped to the photo, YuNet's five landmarks and raw score."""
    (sx, sy), (dx, dy) = scale, offset
    x, y, w, h = row[0] * sx + dx, row[1] * sy + dy, row[2] * sx, row[3] * sy
    points = row[4:14].reshape(5, 2) * (sx, sy) + (dx, dy)
    (rx, ry), (lx, ly) = points[0], points[1]
    angle = np.arctan2(ly - ry, lx - rx)
    unit = float(np.sqrt(max(w * h, 0.0)))
    side = SQUARE_SIDE * unit
    # "Down" in the face's own frame is (-sin, cos), as in crops.crop_face.
    cx = x + w / 2 - SQUARE_DOWN * unit * np.sin(angle)
    cy = y + h / 2 + SQUARE_DOWN * unit * np.cos(angle)
    x0, y0 = round(cx - side / 2), round(cy - side / 2)
    x1, y1 = x0 + round(side), y0 + round(side)
    box = (max(0, x0), max(0, y0), min(size[0], x1) - max(0, x0), min(size[1], y1) - max(0, y0))
    keypoints = tuple((float(px), float(py)) for px, py in points)
    return Face(box=tuple(int(v) for v in box), score=float(row[14]), keypoints=keypoints)


def _matching(seen: list[Face], face: Face) -> Face | None:
    """Of the faces a view saw, the one where the candidate was (IoU >= VIEW_MATCH_IOU), or None."""
    match = max(seen, key=lambda f: iou(f.box, face.box), default=None)
    return match if match is not None and iou(match.box, face.box) >= VIEW_MATCH_IOU else None


def _yunet_face(face: Face) -> Face:
    """A face only YuNet's view saw: its score calibrated on YuNet's scale, and four keypoints in MediaPipe's order
    (eyes, nose tip, mouth centre: the middle of its mouth corners; it has no ears)."""
    eyes_nose, (right, left) = face.keypoints[:3], face.keypoints[3:5]
    mouth = ((right[0] + left[0]) / 2, (right[1] + left[1]) / 2)
    return Face(box=face.box, score=calibrated(face.score, YUNET_OPERATING_POINT), keypoints=(*eyes_nose, mouth))


def _in_photo(box, score: float, points, scale: tuple[float, float], offset: tuple[float, float],
              size: tuple[int, int]) -> Face:
    """A BlazeFace detection in a view whose pixel (u, v) is the photo's (u * sx + dx, v * sy + dy) -> a Face in
    the photo's pixels, its box clipped to the photo and its score calibrated."""
    (sx, sy), (dx, dy) = scale, offset
    x0, y0 = round(box[0] * sx + dx), round(box[1] * sy + dy)
    x1, y1 = round((box[0] + box[2]) * sx + dx), round((box[1] + box[3]) * sy + dy)
    clipped = (max(0, x0), max(0, y0), min(size[0], x1) - max(0, x0), min(size[1], y1) - max(0, y0))
    keypoints = tuple((float(px * sx + dx), float(py * sy + dy)) for px, py in points)
    return Face(box=tuple(int(v) for v in clipped), score=calibrated(score), keypoints=keypoints)


def _resized(rgb: Image.Image, side: int) -> Image.Image:
    """`rgb` with its long side at `side` (shrunk only if it is more than SIDE_SLACK above; enlarged if below).

    Shrinking goes through `Image.reduce` by the whole factor first (a box average, ~2 ms on a 1080p photo here,
    where a BOX resize to 1024 px took 12 ms), then a BOX resize of what is left."""
    long_side = max(rgb.size)
    if long_side < side:
        scale = side / long_side
        return rgb.resize((max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale))), Image.BILINEAR)
    work, size = _reduced(rgb, side)
    return work if size is None else work.resize(size, Image.BOX)


def _shrunk_fast(rgb: Image.Image, side: int) -> np.ndarray:
    """The whole-photo pass's input: `rgb` with its long side at `side` as an array, as `_resized` sizes it, but the
    part of the shrink left after `Image.reduce`'s whole factor done by OpenCV's bilinear resize (as YuNet's own demo
    resizes; for a 1200x800 photo 0.7 ms, 1.2 with the array, where Pillow's BOX took 4.6: 2026-12-07, under
    load). Only YuNet sees it: its candidates' views are cut from the photo's own pixels, so the faces' boxes, eyes
    and crops do not depend on it."""
    if max(rgb.size) < side:
        return np.asarray(_resized(rgb, side))
    work, size = _reduced(rgb, side)
    return np.asarray(work) if size is None else cv2.resize(np.asarray(work), size, interpolation=cv2.INTER_LINEAR)


def _reduced(rgb: Image.Image, side: int) -> tuple[Image.Image, tuple[int, int] | None]:
    """The shrink of a photo at least `side` long, but its last step: the photo as it is (at most SIDE_SLACK above
    `side`) or reduced by `Image.reduce`'s whole factor, and the size the rest of the shrink goes to (None: none)."""
    long_side = max(rgb.size)
    if long_side <= side * SIDE_SLACK:
        return rgb, None
    factor = long_side // side
    work = rgb.reduce(factor) if factor >= 2 else rgb
    if max(work.size) <= side * SIDE_SLACK:
        return work, None
    scale = side / max(work.size)
    return work, (max(1, round(work.width * scale)), max(1, round(work.height * scale)))


def decode_and_find(src, detector: FaceDetector, **options) -> tuple[Image.Image, Detections]:
    """`src` (anything `images.load_image` takes) decoded at the size detection needs (a large JPEG at 1/2, 1/4 or
    1/8 scale), its faces found, and decoded again at a finer scale where a face is too small there for its crop
    (MIN_CROP_FACE). The faces are in pixels of the image returned; `images.file_pixels` maps them to the file's."""
    if hasattr(src, "read"):  # read once: a finer decode needs the bytes again
        src = src.read()
    spent, decoded = [0.0], []

    def decode(side) -> Image.Image:
        t0 = time.perf_counter()
        out = load_image(src, min_side=side)
        spent[0] += time.perf_counter() - t0
        return out

    def finer(side: int) -> Image.Image:
        """The file decoded at a long side of at least `side` (or whole), once: later calls reuse it."""
        full = max(file_pixels(img)[0])
        if ahead:  # the next finer decode, started beside the search
            t0 = time.perf_counter()
            decoded.append(ahead.pop().result())
            spent[0] += time.perf_counter() - t0
        if not decoded or max(decoded[-1].size) < min(side, full):
            decoded.append(decode(side))
        return decoded[-1]

    # The finer decode a small face will need starts first, from the header's sizes, so that it runs beside the
    # reduced decode (one core's work) rather than only beside the search's passes (both cores')
    planned = planned_size(src, detector.detect_side)
    ahead = [job] if planned and (job := _decode_ahead(src, *planned)) is not None else []
    try:
        img = decode(detector.detect_side)
        reduced = file_pixels(img)[1][0] > 1
        found = detector.find(img, finer=finer if reduced else None, **options)
        smallest = min((max(f.box[2], f.box[3]) for f in found.faces), default=MIN_CROP_FACE)
        if reduced and smallest < MIN_CROP_FACE:
            fine = finer(math.ceil(max(img.size) * MIN_CROP_FACE / max(1, smallest)))
            k = fine.width / img.width
            found = Detections([_scaled(f, k, fine.size) for f in found.faces], found.total)
            img = fine
    finally:
        for job in ahead:  # not needed: dropped (if it has started, it ends on its own)
            job.cancel()
    return img, replace(found, decode_ms=0.0 if isinstance(src, Image.Image) else spent[0] * 1000)


def _decode_ahead(src, file_size: tuple[int, int], size: tuple[int, int]) -> Future | None:
    """For a file that decodes at a reduced scale (`size`, of `file_size`: `images.planned_size`): its next finer
    decode, started on a spare core beside the reduced one and the search (a face too small for its view or crop
    needs it: then it is ready), or None. Only while no other prediction is in flight
    (`emotion.threads.wide_threads`), only one at a time, and only where that decode is at most AHEAD_PIXELS: a
    1920x1080 JPEG's whole decode (~3.5 ms here) ends within its ~9 ms search, a 12 MP photo's half-scale one
    (~15 ms) would not, and is made only when a face asks for it."""
    (width, height), (w, h) = file_size, size
    if w >= width or min(width, w * 2) * min(height, h * 2) > AHEAD_PIXELS or wide_threads() < 2:
        return None
    if not _ahead_free.acquire(blocking=False):
        return None

    def job() -> Image.Image:
        try:
            return load_image(src, min_side=max(size) * 2)
        finally:
            _ahead_free.release()

    try:
        return _ahead_pool.submit(job)
    except RuntimeError:  # the interpreter is shutting down
        _ahead_free.release()
        return None


def _scaled(face: Face, k: float, size: tuple[int, int]) -> Face:
    """`face` in an image `k` times larger, its box clipped to `size`."""
    x, y, w, h = (round(v * k) for v in face.box)
    box = (x, y, min(w, size[0] - x), min(h, size[1] - y))
    return Face(box=box, score=face.score, keypoints=tuple((px * k, py * k) for px, py in face.keypoints))


def largest_faces(images, min_score: float = DEFAULT_MIN_SCORE) -> list[tuple[Image.Image, Face | None]]:
    """Each photo (RGB) with its largest face, or None where none is found: one detector for the whole list.

    `images` holds PIL images or `datasets` image dicts ({"bytes": ...}).
    """
    import io

    detector = FaceDetector(min_score=min_score, max_faces=5)
    out = []
    for img in images:
        img = img if isinstance(img, Image.Image) else Image.open(io.BytesIO(img["bytes"]))
        rgb = img.convert("RGB")
        faces = detector.detect(rgb)
        out.append((rgb, max(faces, key=lambda f: f.box[2] * f.box[3]) if faces else None))
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


def calibrated(raw: float, operating_point: float = OPERATING_POINT) -> float:
    """A view's score -> the score users threshold: `operating_point` (BlazeFace's by default) becomes 0.5, 0 stays
    0, 1 stays 1."""
    if raw < operating_point:
        return 0.5 * raw / operating_point
    return min(1.0, 0.5 + 0.5 * (raw - operating_point) / (1 - operating_point))


def _check_options(min_score, max_faces, range):  # noqa: A002
    if range not in RANGES:
        raise EmotionError(f"range must be one of {', '.join(RANGES)}, not {range!r}: 'auto' (the default) for "
                           "any photo, 'short' for faces near the camera only (fastest), 'full' to look for small "
                           "faces beside a portrait too")
    if isinstance(min_score, bool) or not isinstance(min_score, numbers.Real) or not 0.0 <= min_score <= 1.0:
        raise EmotionError(f"min_score must be between 0 and 1, not {min_score}: 0.5 is a good default")
    if isinstance(max_faces, bool) or not isinstance(max_faces, int) or max_faces < 1:
        raise EmotionError(f"max_faces must be a whole number >= 1, not {max_faces!r}")
    return float(min_score), max_faces, range


def _kept(faces: list[Face], min_score: float, max_faces: int) -> Detections:
    """The faces scoring at least `min_score`: the best `max_faces` of them, left to right, and how many in all."""
    found = [f for f in faces if f.score >= min_score and f.box[2] > 0 and f.box[3] > 0]
    kept = sorted(found, key=lambda f: -f.score)[:max_faces]
    return Detections(sorted(kept, key=lambda f: (f.box[0], f.box[1])), len(found))


def _portrait(faces: list[Face], min_score: float, long_side: int) -> bool:
    """One or two faces, each at least PORTRAIT_FRACTION of the long side: a portrait, a selfie, a couple, a
    webcam frame. With range "auto" the search stops at the near pass that shows one: a much smaller face beside
    such faces is not looked for, which keeps a portrait at one small pass."""
    sides = [max(f.box[2], f.box[3]) for f in faces if f.score >= min_score]
    return 0 < len(sides) <= PORTRAIT_FACES and min(sides) >= PORTRAIT_FRACTION * long_side


def _box(face: Face) -> tuple[int, int, int, int]:
    return face.box


def _score(face: Face) -> float:
    return face.score
