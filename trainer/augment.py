"""Training augmentation for the faces people upload, by family, each switchable from the config (`augment`).

Families (measured on the posed validation split, see README):
  framing     tight to loose crops and the detector's jitter (loose crops repeat the edge where the data has no context)
  geometry    small rotations and mirror images
  light       brightness, contrast and gamma
  degrade     blur, low resolution, JPEG artefacts and sensor noise
  gray        colour photos turned gray with random channel weights (cameras and converters differ)
  occlusion   a random patch erased (hands, glasses, hair)

Every random draw comes from the `rng` passed in, so one (seed, epoch, row) always gives the same picture.
"""
from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image, ImageFilter

FAMILIES = ("framing", "geometry", "light", "degrade", "gray", "occlusion")


def reframe(img: Image.Image, context: float, rng: np.random.Generator | None = None, *, scale_min: float = 1.0,
            scale_max: float = 1.0, shift: float = 0.0) -> Image.Image:
    """The serving crop out of an image holding `context` extra margin per side, randomly re-framed when `rng`.

    Without `rng` this is the exact serving crop. With it, the side varies from `scale_min` (tight, in area) to
    `scale_max` (loose, in side) of the serving crop and the centre moves by up to `shift` of it: the detector's box
    jitters by about 6%, and other tools' crops (tight 48 px sets, aligned film faces) frame faces differently. The
    defaults vary nothing; training passes TrainConfig's `scale_min`, `scale_max` and `shift`.

    A crop that is not square (SFEW's 143x181 film faces) is served whole and squeezed to the model's square input
    (`emotion.preprocess.to_model_pixels`), so its re-framed windows keep its aspect: each side varies and moves in
    proportion, and the resize that follows squeezes them as serving does. (A square window cut from its middle
    taught the model undistorted faces that serving never shows it.)
    """
    w, h = img.size
    # the serving crop's sides in this image's pixels
    base_w, base_h = (w / (1 + 2 * context), h / (1 + 2 * context)) if context else (w, h)
    if rng is None:
        if not context:
            return img
        x0, y0 = (w - base_w) / 2, (h - base_h) / 2
        return img.crop((round(x0), round(y0), round(x0 + base_w), round(y0 + base_h)))
    k = math.sqrt(rng.uniform(scale_min, 1.0)) if rng.random() < 0.5 else rng.uniform(1.0, scale_max)
    cx = w / 2 + rng.uniform(-shift, shift) * base_w
    cy = h / 2 + rng.uniform(-shift, shift) * base_h
    return _edge_crop(img, cx - k * base_w / 2, cy - k * base_h / 2, k * base_w, k * base_h)


def _edge_crop(img: Image.Image, x0: float, y0: float, width: float, height: float) -> Image.Image:
    """A window that may leave the image; outside pixels repeat the nearest edge (no black borders)."""
    arr = np.asarray(img)
    n, m = max(1, round(width)), max(1, round(height))
    cols = np.clip(np.round(x0 + np.arange(n) * (width / n)).astype(int), 0, arr.shape[1] - 1)
    rows = np.clip(np.round(y0 + np.arange(m) * (height / m)).astype(int), 0, arr.shape[0] - 1)
    return Image.fromarray(np.ascontiguousarray(arr[rows][:, cols]))


def to_gray(img: Image.Image, rng: np.random.Generator | None) -> Image.Image:
    """RGB -> L; with `rng`, random channel weights around the usual 0.299/0.587/0.114."""
    if img.mode == "L":
        return img
    if rng is None:
        return img.convert("L")
    w = np.array([0.299, 0.587, 0.114]) * rng.uniform(0.6, 1.4, 3)
    w = w / w.sum()
    arr = np.asarray(img.convert("RGB"), dtype=np.float32) @ w.astype(np.float32)
    return Image.fromarray(np.clip(arr + 0.5, 0, 255).astype(np.uint8))


def geometry(img: Image.Image, rng: np.random.Generator, rotate: float, hflip: bool) -> Image.Image:
    if hflip and rng.random() < 0.5:
        img = img.transpose(Image.FLIP_LEFT_RIGHT)
    if rotate:  # corners filled with the mean grey rather than black, which no real crop has
        fill = int(np.asarray(img).mean())
        img = img.rotate(rng.uniform(-rotate, rotate), resample=Image.BILINEAR, fillcolor=fill)
    return img


def light(img: Image.Image, rng: np.random.Generator, jitter: float) -> Image.Image:
    arr = np.asarray(img, dtype=np.float32) / 255.0
    if jitter:
        arr = arr * rng.uniform(1 - jitter, 1 + jitter)  # brightness
        mean = arr.mean()
        arr = (arr - mean) * rng.uniform(1 - jitter, 1 + jitter) + mean  # contrast
    if rng.random() < 0.5:
        arr = np.clip(arr, 0, 1) ** rng.uniform(0.6, 1.6)  # gamma: dim rooms, blown-out flash
    return Image.fromarray((np.clip(arr, 0, 1) * 255 + 0.5).astype(np.uint8))


def degrade(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Blur, low resolution, JPEG and noise, each with probability 0.25 (at the training size, 48 px)."""
    size = img.size
    if rng.random() < 0.25:
        img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.2)))
    if rng.random() < 0.25:
        small = max(12, round(size[0] * rng.uniform(0.35, 0.8)))
        img = img.resize((small, small), Image.BOX).resize(size, Image.BILINEAR)
    if rng.random() < 0.25:
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=int(rng.integers(20, 85)))
        img = Image.open(io.BytesIO(buf.getvalue())).convert(img.mode)
    if rng.random() < 0.25:
        arr = np.asarray(img, dtype=np.float32) + rng.normal(0, rng.uniform(2, 10), (size[1], size[0]))
        img = Image.fromarray(np.clip(arr + 0.5, 0, 255).astype(np.uint8))
    return img


def occlusion(x, rng: np.random.Generator, p: float):
    """Erase one random patch (2-20% of the face, aspect 0.3-3.3) of a (C, H, W) tensor with noise, with prob. p."""
    if rng.random() >= p:
        return x
    _, h, w = x.shape
    area = h * w * rng.uniform(0.02, 0.2)
    aspect = math.exp(rng.uniform(math.log(0.3), math.log(3.3)))
    eh, ew = min(h, round(math.sqrt(area * aspect))), min(w, round(math.sqrt(area / aspect)))
    y0, x0 = int(rng.integers(0, h - eh + 1)), int(rng.integers(0, w - ew + 1))
    x = x.clone()
    x[:, y0:y0 + eh, x0:x0 + ew] = float(rng.normal())
    return x
