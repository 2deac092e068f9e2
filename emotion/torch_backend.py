"""The classifier's forward pass in torch: for the trainer's evaluation (`face_logits`) and wherever torch serves
(EMOTION_BACKEND=torch, or a model folder without a current model.onnx where torch is installed: `TorchBackend`).

Only the trainer and `emotion.backends.make_backend` import this module, the latter lazily: a process that serves in
ONNX Runtime never loads torch. The logits go through the same numpy post-processing as ONNX Runtime's
(`emotion.calibration.served_logits`), from the same pixels (`emotion.preprocess`).
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from .calibration import served_logits
from .info import ModelInfo
from .preprocess import batch
from .threads import apply_to_torch


@torch.inference_mode()
def face_logits(model: torch.nn.Module, x: torch.Tensor, info: ModelInfo, tta_flip: bool | None = None) -> torch.Tensor:
    """Preprocessed faces (N, C, H, W) on the model's device -> (N, classes) float32 logits on the CPU, as serving
    uses them: averaged with the mirrored face when the model says so, plus the model's `logit_bias`. Serving in
    torch and the trainer's evaluation both call this."""
    device = x.device

    def run(batch: np.ndarray) -> np.ndarray:
        # channels_last: oneDNN's faster CPU convolutions (measured, 1 thread, 2 faces: small_cnn 18.4 -> 15.8 ms,
        # resnet50 90 -> 82, efficientnet_lite0 35 -> 24; logits equal within 3e-6); load_model stores weights so too
        t = torch.from_numpy(batch).to(device).contiguous(memory_format=torch.channels_last)
        return model(t).float().cpu().numpy()

    return torch.from_numpy(served_logits(run, x.float().cpu().numpy(), info, tta_flip))


class TorchBackend:
    """The torch module itself (channels_last, `face_logits`); one call at a time."""

    name = "torch"

    def __init__(self, model: torch.nn.Module, info: ModelInfo):
        apply_to_torch()  # the thread count the server or batch runner chose before torch was loaded
        self.model, self.info = model.eval(), info
        self._lock = threading.Lock()  # torch modules are not re-entrant under concurrent calls on all backends

    @classmethod
    def from_folder(cls, folder: str | Path, info: ModelInfo) -> "TorchBackend":
        """The folder's model.safetensors, built in torch (`emotion.models.load_model`)."""
        from .models import load_model

        model, _, _ = load_model(f"local-dir:{folder}")
        return cls(model, info)

    def logits(self, crops: Sequence[Image.Image]) -> np.ndarray:
        """Face crops -> float32 (N, classes) logits as serving uses them."""
        x = torch.from_numpy(batch(crops, self.info))
        with self._lock:
            return face_logits(self.model, x, self.info).numpy()
