"""Face crop -> model input tensor. Training and serving both call `to_tensor`, so they see the same pixels."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
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


def to_tensor(face: Image.Image, info: ModelInfo) -> torch.Tensor:
    """One face crop (PIL, any mode) -> normalised float tensor (C, H, W)."""
    arr = np.asarray(to_model_pixels(face, info), dtype=np.float32) / 255.0
    x = torch.from_numpy(arr).unsqueeze(0).expand(info.channels, -1, -1)
    mean = torch.tensor(info.mean).view(-1, 1, 1)
    std = torch.tensor(info.std).view(-1, 1, 1)
    return (x - mean) / std


def batch(faces: Sequence[Image.Image], info: ModelInfo) -> torch.Tensor:
    """Several face crops -> (N, C, H, W)."""
    h, w = info.input_size[1:]
    if not faces:
        return torch.empty(0, info.channels, h, w)
    return torch.stack([to_tensor(f, info) for f in faces])
