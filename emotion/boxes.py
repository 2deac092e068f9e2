"""Box geometry for face search: overlap, non-maximum suppression and the tiles of a multi-scale search.

Boxes are (x, y, w, h) in pixels. Nothing here knows about detectors or images.
"""
from __future__ import annotations

import math
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


def positions(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of side `tile` covering [0, length), neighbours sharing at least `overlap` pixels.

    The first tile starts at 0 and the last ends at `length`; the ones between are spread evenly. A `length` no
    longer than a tile gives one tile at 0 (the tile then reaches past the end, as a letterbox would).
    """
    if length <= tile:
        return [0]
    n = math.ceil((length - tile) / max(1, tile - overlap)) + 1
    step = (length - tile) / (n - 1)
    return [round(i * step) for i in range(n)]


def tiles(width: int, height: int, tile: int, overlap: int) -> list[tuple[int, int]]:
    """(x, y) top-left corners of the square tiles covering a width x height image (see `positions`)."""
    return [(x, y) for y in positions(height, tile, overlap) for x in positions(width, tile, overlap)]


def has_room(width: int, height: int, covered: Sequence[Sequence[float]], side: float) -> bool:
    """Whether a square of `side` px fits in a width x height image without touching any `covered` region
    ((x0, y0, x1, y1), may reach past the image).

    Checked on a grid of side/4 cells, a cell touched by a region counting as covered: a free square of `side`
    always holds 3 x 3 whole free cells, so this answers True for it, and for some squares down to 3/4 of `side`
    (it errs towards room).
    """
    import numpy as np

    cell = max(1.0, side / 4)
    cols, rows = math.ceil(width / cell), math.ceil(height / cell)
    free = np.ones((rows, cols), bool)
    for x0, y0, x1, y1 in covered:
        c0, r0 = max(0, math.floor(x0 / cell)), max(0, math.floor(y0 / cell))
        free[r0:max(r0, math.ceil(y1 / cell)), c0:max(c0, math.ceil(x1 / cell))] = False
    k = 3 if side >= 4 else 1
    if rows < k or cols < k:
        return False
    table = np.pad(free.astype(np.int32).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    blocks = table[k:, k:] - table[:-k, k:] - table[k:, :-k] + table[:-k, :-k]
    return bool((blocks == k * k).any())
