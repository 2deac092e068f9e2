"""Box geometry for face search: overlap and non-maximum suppression.

Boxes are (x, y, w, h) in pixels. Nothing here knows about detectors or images.
"""
from __future__ import annotations

from typing import Callable, Sequence, TypeVar

T = TypeVar("T")


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two (x, y, w, h) boxes; 0 when either is empty."""
    ix = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def nms(items: Sequence[T], box: Callable[[T], Sequence[float]], score: Callable[[T], float],
        threshold: float) -> list[T]:
    """Highest score first; an item whose box overlaps a kept one by IoU > `threshold` is dropped."""
    kept: list[T] = []
    for item in sorted(items, key=lambda i: -score(i)):
        b = box(item)
        if b[2] > 0 and b[3] > 0 and all(iou(b, box(k)) <= threshold for k in kept):
            kept.append(item)
    return kept
