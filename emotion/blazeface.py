"""BlazeFace short range (MediaPipe, 128x128) on faces' views, in ONNX Runtime, all the views of a photo in one batch.

YuNet finds faces at any size in one pass, but its landmarks hardly follow a tilted head (the eyes of a face turned
15 degrees in the picture read ~1-8 degrees: measured on the astronaut and 40 Taiwanese posed photos, 2026-12-07),
and the crops the models were trained on were levelled by BlazeFace's eyes and framed by its square box. So each
face YuNet finds is looked at once more, as BlazeFace sees a face best: a 128 px square in which it fills a set
fraction (emotion/faces.py: `FaceDetector._views`).

The model is the shipped face_detection_short_range.tflite converted to ONNX with a free batch dimension
(assets/make_blazeface_onnx.py; its sha256 is checked on load). Around it, what MediaPipe's face_detection_short_range
graph does, written once: 896 SSD anchors (strides 8, 16, 16, 16; fixed size), boxes and six keypoints decoded
against them, sigmoid scores, and weighted non-maximum suppression at IoU 0.3. tests/test_blazeface.py compares
it with MediaPipe's FaceDetector on the same views.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .checked import read_checked
from .threads import Sessions, wide_threads

ASSETS = Path(__file__).resolve().parent / "assets"
MODEL_PATH = ASSETS / "face_detection_short_range.tflite"  # as published (the /live page runs it in the browser)
ONNX_PATH = ASSETS / "face_detection_short_range.onnx"
SHA256 = "79ab26b16d6d02d1c8af3433ff4472b5ec6d3fec60c03873fdb730282676d947"
INPUT_SIDE = 128
NMS_IOU = 0.3  # MediaPipe's min_suppression_threshold for face detection


def anchors() -> np.ndarray:
    """The 896 anchor centres (x, y) in 0..1, in the model's output order: MediaPipe's SsdAnchorsCalculator with
    the short-range options (strides 8, 16, 16, 16; two anchors a layer, all of size 1; layers of one stride share
    a grid: 16 x 16 cells x 2, then 8 x 8 cells x 6)."""
    out = []
    for grid, per_cell in ((16, 2), (8, 6)):
        y, x = np.mgrid[0:grid, 0:grid]
        centres = np.stack([(x + 0.5) / grid, (y + 0.5) / grid], axis=-1).reshape(-1, 1, 2)
        out.append(np.repeat(centres, per_cell, axis=1).reshape(-1, 2))
    return np.concatenate(out).astype(np.float32)


ANCHORS = anchors()


class BlazeFace:
    """BlazeFace short range on batches of 128x128 views. Safe to share between threads; loads on first use.

    Args:
        floor: detections scoring below this are not reported.
        threads: ONNX Runtime intra-op threads (serving runs one per worker); more while no other prediction is
            in flight (`emotion.threads.wide_threads()`).
    """

    def __init__(self, floor: float, threads: int = 1):
        self.floor, self.threads = floor, max(1, int(threads))
        self._sessions = Sessions(read_model)

    def detect(self, views: np.ndarray) -> list[list[tuple[tuple[float, float, float, float], float, np.ndarray]]]:
        """Faces in each of `views` (N, 128, 128, 3) uint8 RGB: per view a list of (box (x, y, w, h) in whole
        pixels, score, six keypoints (6, 2)) in its pixels, highest score first. Runs on the cores no other
        prediction is using (`emotion.threads.wide_threads`: six views 8-11 -> ~6.4 ms on 2 cores here).

        Keypoints in MediaPipe's order: right eye, left eye, nose tip, mouth centre, right ear tragion, left ear
        tragion ("right" is the person's right, i.e. the left of the picture)."""
        if len(views) == 0:
            return []
        pixels = views.astype(np.float32) / 127.5 - 1.0  # what BlazeFace was trained on: [-1, 1]
        session = self._sessions.get(max(self.threads, wide_threads()))
        regressors, scores = session.run(None, {"input": pixels})
        logits = np.clip(scores[..., 0].astype(np.float64), -100.0, 100.0)  # MediaPipe's score_clipping_thresh
        probability = 1.0 / (1.0 + np.exp(-logits))
        return [_decoded(regressors[i], probability[i], self.floor) for i in range(len(views))]

    def close(self) -> None:
        """Kept for callers that closed MediaPipe's detector: an ONNX Runtime session needs no closing."""


def read_model(path: Path = ONNX_PATH) -> bytes:
    """The ONNX file's bytes, refused unless its sha256 is SHA256."""
    return read_checked(path, SHA256, "reinstall the package, or rebuild it with emotion/assets/make_blazeface_onnx.py "
                        "(emotion/assets/README.md)")


def _decoded(raw: np.ndarray, score: np.ndarray, floor: float) -> list:
    """One view's (896, 16) regressors and (896,) scores -> its detections in view pixels, after weighted NMS."""
    keep = np.flatnonzero(score >= floor)
    if keep.size == 0:
        return []
    values = raw[keep] / INPUT_SIDE  # offsets in units of the (size 1) anchors, which span the input
    centre = values[:, :2] + ANCHORS[keep]
    half = values[:, 2:4] / 2
    boxes = np.concatenate([centre - half, centre + half], axis=1) * INPUT_SIDE  # x0, y0, x1, y1
    points = (values[:, 4:16].reshape(-1, 6, 2) + ANCHORS[keep][:, None, :]) * INPUT_SIDE
    return _weighted_nms(boxes, points, score[keep])


def _weighted_nms(boxes: np.ndarray, points: np.ndarray, scores: np.ndarray) -> list:
    """MediaPipe's WEIGHTED suppression: the best box and every box overlapping it by IoU > NMS_IOU become one
    detection, their corners and keypoints averaged with the scores as weights, the best one's score kept."""
    order = np.argsort(-scores, kind="stable")
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    # Every pair's IoU at once (a view has a few dozen boxes above the floor): the loop below only indexes it.
    lo = np.maximum(boxes[:, None, :2], boxes[None, :, :2])
    hi = np.minimum(boxes[:, None, 2:], boxes[None, :, 2:])
    inter = np.prod(np.clip(hi - lo, 0, None), axis=2)
    overlaps = inter / np.maximum(area[:, None] + area[None, :] - inter, 1e-9) > NMS_IOU
    out = []
    while order.size:
        top = order[0]
        joined = overlaps[top, order]
        joined[0] = True  # the top box is in its cluster even when it is degenerate (no area: no IoU with itself)
        cluster, order = order[joined], order[~joined]
        weights = scores[cluster] / scores[cluster].sum()
        x0, y0, x1, y1 = weights @ boxes[cluster]
        # Whole pixels, truncated, as MediaPipe's Tasks give the box (the crops the models were trained on).
        box = tuple(float(int(v)) for v in (x0, y0, x1 - x0, y1 - y0))
        out.append((box, float(scores[top]), np.tensordot(weights, points[cluster], axes=1)))
    return out
