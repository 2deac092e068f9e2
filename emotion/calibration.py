"""From a batch's raw logits to what serving answers, in numpy: the mirror average and the model's logit bias
(`merge_flipped`), then softmax(logits / temperature) (`probabilities`). Every backend (ONNX Runtime, torch) and the
trainer's evaluation pass their logits through these, so the answers differ only by the forward pass itself."""
from __future__ import annotations

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


def probabilities(logits: np.ndarray, temperature: float) -> np.ndarray:
    """Calibrated probabilities, float32 (N, classes): softmax(logits / temperature) over each row."""
    z = np.asarray(logits, np.float32) / np.float32(temperature)
    z = z.astype(np.float64) - z.max(axis=1, keepdims=True)  # shifted: exp never overflows
    e = np.exp(z)
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)
