"""Face crop -> model input, in numpy. Training (`torch.from_numpy(to_array(...))` in trainer/data.py), serving in
ONNX Runtime and the torch backend all start from `to_array`, so they see the same pixels."""
from __future__ import annotations

from typing import Sequence

import numpy as np
from PIL import Image

from .info import ModelInfo

_RESAMPLE = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "nearest": Image.NEAREST}


def to_model_pixels(face: Image.Image, info: ModelInfo) -> Image.Image:
    """Grayscale, resized to the training data's native size (area-averaged), then to the model's input size.

    Going through `native_size` first makes a sharp 400 px face look like the 48 px faces the model learned from.
    """
    img = face.convert("L")  # the training faces are grayscale; RGB models get the gray replicated
    if img.size != (info.native_size, info.native_size):
        img = img.resize((info.native_size, info.native_size), Image.BOX if img.width > info.native_size
                         else _RESAMPLE.get(info.interpolation, Image.BILINEAR))
    h, w = info.input_size[1:]
    if img.size != (w, h):
        img = img.resize((w, h), _RESAMPLE.get(info.interpolation, Image.BILINEAR))
    return img


def normalise(pixels: Image.Image, info: ModelInfo, out: np.ndarray | None = None) -> np.ndarray:
    """`to_model_pixels`' gray image -> float32 (C, H, W): the gray in every channel, minus mean, over std (into
    `out` when given, a (C, H, W) float32 array)."""
    gray = np.asarray(pixels, dtype=np.float32) / 255.0
    mean = np.asarray(info.mean, np.float32).reshape(-1, 1, 1)
    std = np.asarray(info.std, np.float32).reshape(-1, 1, 1)
    if out is None:
        out = np.empty(info.input_size, np.float32)
    np.divide(gray - mean, std, out=out)  # float32 throughout: the same bits torch computed before
    return out


def to_array(face: Image.Image, info: ModelInfo) -> np.ndarray:
    """One face crop (PIL, any mode) -> the model's normalised input, float32 (C, H, W)."""
    return normalise(to_model_pixels(face, info), info)


def batch(faces: Sequence[Image.Image], info: ModelInfo) -> np.ndarray:
    """Several face crops -> float32 (N, C, H, W)."""
    out = np.empty((len(faces), *info.input_size), np.float32)
    for i, face in enumerate(faces):
        normalise(to_model_pixels(face, info), info, out[i])
    return out
