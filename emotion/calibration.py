"""From a batch's raw logits to what serving answers, in numpy: the mirror average and the model's logit bias
(`served_logits`, `merge_flipped`), then softmax(logits / temperature) (`probabilities`). Every backend (ONNX Runtime,
torch) and the trainer's evaluation pass their logits through these, so the answers differ only by the forward pass
itself."""
from __future__ import annotations

from typing import Callable

import numpy as np

from .info import ModelInfo


def merge_flipped(logits: np.ndarray, flipped: bool, info: ModelInfo) -> np.ndarray:
    """(2N or N, classes) logits of faces [then their mirrors] -> float32 (N, classes): mirror-averaged, plus the
    model's `logit_bias`."""
    logits = np.asarray(logits, np.float32)
    if flipped:
        half = len(logits) // 2
        logits = (logits[:half] + logits[half:]) / np.float32(2)
    bias = info.bias_vector()
    return logits if bias is None else logits + bias


def served_logits(run: Callable[[np.ndarray], np.ndarray], x: np.ndarray, info: ModelInfo,
                  flip: bool | None = None) -> np.ndarray:
    """Preprocessed faces `x` (N, C, H, W) float32 -> float32 (N, classes) logits as served, where `run` is the
    forward pass (a batch in, its raw logits out).

    With `flip` (the model's `tta_flip` by default) each face is averaged with its mirror image: every face, in one
    batch with the faces, when the model has no `flip_margin`; otherwise only the faces whose two highest logits
    (after `logit_bias`) are closer than `flip_margin`, mirrored in a second, smaller batch. A clear answer then
    costs one row instead of two (a group photo of smiling faces: half the classifier's time), and the mirror is
    spent where it can change the answer. Then the model's `logit_bias`."""
    flip = info.tta_flip if flip is None else flip
    if not flip or len(x) == 0:
        return merge_flipped(run(x), False, info)
    if info.flip_margin is None:
        return merge_flipped(run(np.concatenate([x, x[..., ::-1]])), True, info)
    out = np.array(run(x), np.float32)
    rows = np.flatnonzero(top_two_margin(merge_flipped(out, False, info)) < info.flip_margin)
    if rows.size:
        mirrored = np.asarray(run(np.ascontiguousarray(x[rows][..., ::-1])), np.float32)
        out[rows] = (out[rows] + mirrored) / np.float32(2)
    return merge_flipped(out, False, info)


def top_two_margin(logits: np.ndarray) -> np.ndarray:
    """Each row's highest logit minus its second highest (N,); inf for a single class."""
    if logits.shape[1] < 2:
        return np.full(len(logits), np.inf, np.float32)
    top = np.partition(logits, -2, axis=1)
    return top[:, -1] - top[:, -2]


def probabilities(logits: np.ndarray, temperature: float) -> np.ndarray:
    """Calibrated probabilities, float32 (N, classes): softmax(logits / temperature) over each row."""
    z = np.asarray(logits, np.float32) / np.float32(temperature)
    z = z.astype(np.float64) - z.max(axis=1, keepdims=True)  # shifted: exp never overflows
    e = np.exp(z)
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)
