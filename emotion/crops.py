"""Face crops: the aligned square the model sees around a detected face, and a caller-given box."""
from __future__ import annotations

import math

import cv2
import numpy as np
from PIL import Image

from .errors import EmotionError
from .info import default


def crop_face(image: Image.Image, face, margin: float = default("crop_margin"),
              align: bool = default("align_eyes"), offset_y: float = default("crop_offset_y")) -> Image.Image:
    """Cuts a square around a face, optionally rotated so the eyes are level.

    Args:
        image: the image `face` was detected in.
        face: the detection (an `emotion.faces.Face`: its box and keypoints are used).
        margin: extra context on each side, as a fraction of the box's longer side.
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
    # Output pixel (u, v) samples patch point centre + u' * (cos, sin) + v' * (-sin, cos), u' = u - side / 2: PIL's
    # AFFINE coefficients, which measure from pixel corners. OpenCV's warpAffine measures from pixel centres (hence
    # the half-pixel terms) and resamples several times faster than Image.transform; in float32 and truncated, as
    # PIL truncates, its pixels are PIL's (a rare one differs by one grey level; in uint8 half of them did, and the
    # posed photos read 155 of 204 right instead of 156).
    px, py = cx - x0, cy - y0
    coeffs = np.array([[cos, -sin, px - side / 2 * (cos - sin)], [sin, cos, py - side / 2 * (sin + cos)]])
    coeffs[:, 2] += (coeffs[:, 0] + coeffs[:, 1]) / 2 - 0.5
    out = cv2.warpAffine(np.asarray(patch, np.float32), coeffs, (side, side),
                         flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE)
    return Image.fromarray(out.astype(np.uint8), patch.mode)  # truncated, as PIL does


def crop_box(image: Image.Image, box: tuple[int, int, int, int]) -> Image.Image:
    """Cuts the user-given box (x, y, w, h) out of `image`, refusing boxes that are empty or leave the image."""
    x, y, w, h = checked_box(box, image.size)
    return image.crop((x, y, x + w, y + h))


def checked_box(box, size: tuple[int, int]) -> tuple[int, int, int, int]:
    """The user-given box (x, y, w, h) as whole pixels, refused (EmotionError naming the fix) where it is not four
    finite numbers, is empty, or leaves an image of `size`."""
    width, height = size
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
    return x, y, w, h


def _edge_padded(image: Image.Image, x0: int, y0: int, x1: int, y1: int) -> Image.Image:
    """The region [x0, x1) x [y0, y1) of `image`; where it leaves the image, the nearest edge pixel repeats."""
    w, h = image.size
    if x0 >= 0 and y0 >= 0 and x1 <= w and y1 <= h:  # the usual face, wholly inside: PIL copies just the region
        return image.crop((x0, y0, x1, y1))
    # Crop the part inside the image first, so a 40 MP photo is never copied whole.
    cx0, cy0 = min(max(x0, 0), w - 1), min(max(y0, 0), h - 1)
    cx1, cy1 = min(max(x1, cx0 + 1), w), min(max(y1, cy0 + 1), h)
    inside = np.asarray(image.crop((cx0, cy0, cx1, cy1)))
    rows = np.clip(np.arange(y0, y1), cy0, cy1 - 1) - cy0
    cols = np.clip(np.arange(x0, x1), cx0, cx1 - 1) - cx0
    return Image.fromarray(np.ascontiguousarray(inside[rows][:, cols]))
