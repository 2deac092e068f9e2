"""YuNet (libfacedetection, MIT) in ONNX Runtime: one pass finds faces from ~10 px up at any image size.

The shipped model (`assets/face_detection_yunet_2023mar.onnx`, its digest checked on load) declares a 640x640
input, but its reshapes are all `-1`: any height and width divisible by 32 run. ONNX Runtime checks the declared
size, so the two 640s of the input are renamed to free dimensions in memory (the same bytes, see `free_input`); the
file stays as published. Decoding follows OpenCV's `FaceDetectorYN` (objdetect/src/face_detect.cpp): per stride
8, 16 and 32 one prior per cell, score sqrt(cls * obj), box centre (cell + offset) * stride, size exp(.) * stride,
five landmarks (cell + offset) * stride, then non-maximum suppression at IoU 0.3. tests/test_yunet.py compares the
boxes with `cv2.FaceDetectorYN` where OpenCV is installed.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from .checked import read_checked
from .errors import EmotionError
from .threads import Sessions, wide_threads

MODEL_PATH = Path(__file__).resolve().parent / "assets" / "face_detection_yunet_2023mar.onnx"
SHA256 = "8f2383e4dd3cfbb4553ea8718107fc0423210dc964f9f4280604804ed2552fa4"
STRIDES = (8, 16, 32)
DIVISOR = 32  # the input's sides must be multiples of the largest stride
NMS_IOU = 0.3  # OpenCV's default for FaceDetectorYN
TOP_K = 5000  # candidates kept for NMS, as OpenCV
# The input's declared shape 1x3x640x640 as protobuf: Dimension{dim_value: 640} is `08 80 05` inside a 3-byte
# TensorShapeProto.dim entry; Dimension{dim_param: "h"} is `12 01 68`, the same length, so no enclosing length changes.
_DIM_640 = b"\x0a\x03\x08\x80\x05"
_INPUT_SHAPE = b"\x0a\x02\x08\x01\x0a\x02\x08\x03" + _DIM_640 + _DIM_640
_FREE_SHAPE = b"\x0a\x02\x08\x01\x0a\x02\x08\x03\x0a\x03\x12\x01h\x0a\x03\x12\x01w"


class YuNet:
    """The YuNet face detector on RGB uint8 arrays. Safe to share between threads; the session loads on first use.

    Args:
        path: the ONNX file (the shipped one by default; its sha256 must be SHA256).
        threads: ONNX Runtime intra-op threads (serving runs one per worker); more while no other prediction is
            in flight (`emotion.threads.wide_threads()`).
    """

    def __init__(self, path: str | Path = MODEL_PATH, threads: int = 1):
        self.path, self.threads = Path(path), max(1, int(threads))
        # quiet: the outputs' declared 640x640 sizes differ at other sizes, which ONNX Runtime would warn about
        self._sessions = Sessions(lambda: free_input(read_model(self.path)), quiet=True)

    def detect(self, rgb: np.ndarray, min_score: float) -> np.ndarray:
        """Faces in `rgb` (H, W, 3) uint8, at the size given: an (N, 15) float32 array of rows
        (x, y, w, h, right eye x, y, left eye x, y, nose tip x, y, right mouth corner x, y, left mouth corner x, y,
        score), highest score first, in pixels of `rgb` (boxes may reach past its edges). "Right" is the person's
        right: the left of the picture. Runs on the cores no other prediction is using (`emotion.threads.wide_threads`:
        a 960x544 pass 13.5 -> 7.4 ms on 2 cores here, 2026-12-07)."""
        blob = input_blob(rgb)
        pad_h, pad_w = blob.shape[2:]
        session = self._sessions.get(max(self.threads, wide_threads()))
        outputs = dict(zip(OUTPUTS, session.run(OUTPUTS, {"input": blob})))
        rows = np.concatenate([_decode(outputs, s, pad_h // s, pad_w // s, min_score) for s in STRIDES])
        return rows[_nms(rows, NMS_IOU)]


OUTPUTS = tuple(f"{kind}_{s}" for kind in ("cls", "obj", "bbox", "kps") for s in STRIDES)


def input_blob(rgb: np.ndarray) -> np.ndarray:
    """YuNet's input for an (H, W, 3) uint8 RGB image: (1, 3, H', W') float32 BGR planes, 0-255 (what YuNet was
    trained on), padded below and right with black to multiples of DIVISOR, as OpenCV pads. Each plane is written
    from `cv2.split`'s copy: a 960x540 photo in ~0.3 ms, where numpy's strided transpose took 0.7-1.2 (2026-12-07)."""
    height, width = rgb.shape[:2]
    pad_h, pad_w = -(-height // DIVISOR) * DIVISOR, -(-width // DIVISOR) * DIVISOR
    blob = np.empty((1, 3, pad_h, pad_w), np.float32)
    blob[0, :, height:] = 0
    blob[0, :, :height, width:] = 0
    for channel, plane in enumerate(cv2.split(np.ascontiguousarray(rgb))[::-1]):
        blob[0, channel, :height, :width] = plane
    return blob


def read_model(path: Path = MODEL_PATH) -> bytes:
    """The model file's bytes, refused unless its sha256 is the published SHA256."""
    return read_checked(path, SHA256, "reinstall the package, or copy face_detection_yunet_2023mar.onnx back "
                        "(emotion/assets/README.md says where it comes from)")


def free_input(model: bytes) -> bytes:
    """The model with its input's 640x640 renamed to free dimensions h and w (same length: nothing else moves)."""
    at = model.find(b"\x0a\x05input\x12")  # ValueInfoProto{name: "input", type: ...}
    start = model.find(_INPUT_SHAPE, at)
    if at < 0 or start < 0 or start - at > 32:
        raise EmotionError("the face detector's input is not the 1x3x640x640 that face_detection_yunet_2023mar.onnx "
                           "declares: restore the shipped file")
    return model[:start] + _FREE_SHAPE + model[start + len(_INPUT_SHAPE):]


def _decode(outputs: dict[str, np.ndarray], stride: int, rows: int, cols: int, min_score: float) -> np.ndarray:
    """One stride's candidates scoring at least `min_score`, as (N, 15) rows (see `YuNet.detect`)."""
    cls = np.clip(outputs[f"cls_{stride}"].reshape(-1), 0, 1)
    obj = np.clip(outputs[f"obj_{stride}"].reshape(-1), 0, 1)
    score = np.sqrt(cls * obj)
    keep = np.flatnonzero(score >= min_score)
    if keep.size > TOP_K:
        keep = keep[np.argsort(-score[keep])[:TOP_K]]
    cell = np.stack([keep % cols, keep // cols], axis=1).astype(np.float32)  # (c, r) of each kept prior
    bbox = outputs[f"bbox_{stride}"].reshape(-1, 4)[keep]
    size = np.exp(bbox[:, 2:]) * stride
    corner = (cell + bbox[:, :2]) * stride - size / 2
    points = (outputs[f"kps_{stride}"].reshape(-1, 5, 2)[keep] + cell[:, None, :]) * stride
    return np.concatenate([corner, size, points.reshape(-1, 10), score[keep, None]], axis=1).astype(np.float32)


def _nms(rows: np.ndarray, threshold: float) -> list[int]:
    """Indices of `rows` kept by greedy NMS, highest score first: a box overlapping a kept one by IoU > threshold
    is dropped."""
    order = np.argsort(-rows[:, 14], kind="stable")[:TOP_K]
    x0, y0 = rows[:, 0], rows[:, 1]
    x1, y1 = x0 + rows[:, 2], y0 + rows[:, 3]
    area = rows[:, 2] * rows[:, 3]
    kept: list[int] = []
    while order.size:
        i, rest = order[0], order[1:]
        kept.append(int(i))
        inter = (np.clip(np.minimum(x1[i], x1[rest]) - np.maximum(x0[i], x0[rest]), 0, None)
                 * np.clip(np.minimum(y1[i], y1[rest]) - np.maximum(y0[i], y0[rest]), 0, None))
        iou = inter / np.maximum(area[i] + area[rest] - inter, 1e-9)
        order = rest[iou <= threshold]
    return kept
