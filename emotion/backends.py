"""The forward pass of a loaded classifier: torch, or ONNX Runtime where the model folder has a current model.onnx.

Both take the same face crops and give the same logits as serving uses them (`merge_flipped`: each face averaged
with its mirror, both in one batch, plus the model's logit bias); `Predictor` applies the temperature and softmax.
ONNX Runtime was faster than torch for every shipped model on this project's CPUs (2-core AMD EPYC, 1 thread,
under contention: small_cnn 14.1 vs 24.3 ms for 1 face, 94 vs 115 for 6; resnet50 56 vs 162; efficientnet_lite0 18
vs 52), so "auto" takes it whenever it can: onnxruntime imports and model.onnx was made from the folder's present
model.safetensors (`onnx_export.is_current`); otherwise torch, with the reason logged.
"""
from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from .errors import EmotionError
from .info import ModelInfo
from .preprocess import batch, to_model_pixels

log = logging.getLogger(__name__)

BACKENDS = ("auto", "torch", "onnxruntime")
# ONNX Runtime's input buffer is kept for batches up to this many rows (faces and mirrors: 8 video frames of 4
# faces; 4.9 MB at 3x80x80); a larger batch gets a buffer of its own, so one group photo does not hold memory.
REUSED_ROWS = 64


def merge_flipped(logits: torch.Tensor, flipped: bool, info: ModelInfo) -> torch.Tensor:
    """(2N or N, classes) logits of faces [then their mirrors] -> (N, classes): mirror-averaged, plus the bias."""
    if flipped:
        logits = (logits[: len(logits) // 2] + logits[len(logits) // 2:]) / 2
    bias = info.bias_vector()
    return logits if bias is None else logits + bias.to(logits.device)


@torch.inference_mode()
def face_logits(model: torch.nn.Module, x: torch.Tensor, info: ModelInfo, tta_flip: bool | None = None) -> torch.Tensor:
    """Preprocessed faces (N, C, H, W) -> (N, classes) float logits as serving uses them: averaged with the mirrored
    face when the model says so, plus the model's `logit_bias`. Serving and the trainer's evaluation (through
    `emotion.predict.face_logits`) both call this.
    """
    flip = info.tta_flip if tta_flip is None else tta_flip
    if flip:  # the mirrored faces in the same batch
        x = torch.cat([x, torch.flip(x, dims=[3])])
    # channels_last: oneDNN's faster CPU convolutions (measured, 1 thread, 2 faces: small_cnn 18.4 -> 15.8 ms,
    # resnet50 90 -> 82, efficientnet_lite0 35 -> 24; logits equal within 3e-6); load_model stores weights so too
    return merge_flipped(model(x.contiguous(memory_format=torch.channels_last)).float(), flip, info)


class TorchBackend:
    """The torch module itself (channels_last, `face_logits`); one call at a time."""

    name = "torch"

    def __init__(self, model: torch.nn.Module, info: ModelInfo):
        self.model, self.info = model, info
        self._lock = threading.Lock()  # torch modules are not re-entrant under concurrent calls on all backends

    def logits(self, crops: Sequence[Image.Image]) -> torch.Tensor:
        """Face crops -> (N, classes) logits as serving uses them."""
        x = batch(crops, self.info)
        with self._lock:
            return face_logits(self.model, x, self.info)


class OnnxBackend:
    """An ONNX Runtime session on the folder's model.onnx, `threads` intra-op threads (torch's count by default,
    which the server and the batch runner size per worker). Calls are serialised: the input buffer is reused."""

    name = "onnxruntime"

    def __init__(self, path: str | Path, info: ModelInfo, threads: int | None = None):
        import onnxruntime as ort

        from .onnx_export import INPUT_NAME, OUTPUT_NAME

        options = ort.SessionOptions()
        options.intra_op_num_threads = max(1, threads or torch.get_num_threads())
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.info, self.threads = info, options.intra_op_num_threads
        self._names = ([OUTPUT_NAME], INPUT_NAME)
        self._mean = np.asarray(info.mean, np.float32).reshape(-1, 1, 1)
        self._std = np.asarray(info.std, np.float32).reshape(-1, 1, 1)
        self._buffer = np.empty((0, *info.input_size), np.float32)
        self._lock = threading.Lock()

    def logits(self, crops: Sequence[Image.Image]) -> torch.Tensor:
        """Face crops -> (N, classes) logits as serving uses them (the same pixels as `preprocess.to_tensor`)."""
        n, flip = len(crops), self.info.tta_flip
        pixels = [np.asarray(to_model_pixels(c, self.info), dtype=np.float32) / 255.0 for c in crops]
        with self._lock:
            rows = 2 * n if flip else n
            if rows > REUSED_ROWS:
                x = np.empty((rows, *self.info.input_size), np.float32)
            else:
                if len(self._buffer) < rows:  # the first batch's size; REUSED_ROWS once a larger one comes
                    size = REUSED_ROWS if len(self._buffer) else rows
                    self._buffer = np.empty((size, *self.info.input_size), np.float32)
                x = self._buffer[:rows]
            for i, arr in enumerate(pixels):
                x[i] = (arr - self._mean) / self._std  # the gray face in every channel, as to_tensor does
            if flip:
                x[n:] = x[:n, :, :, ::-1]
            out = self.session.run(self._names[0], {self._names[1]: x})[0]
        return merge_flipped(torch.from_numpy(out).float(), flip, self.info)


def make_backend(model: torch.nn.Module, info: ModelInfo, folder: str | Path | None, choice: str = "auto",
                 threads: int | None = None) -> TorchBackend | OnnxBackend:
    """The backend `choice` names: "torch", "onnxruntime" (an EmotionError naming the fix when it cannot run), or
    "auto" (ONNX Runtime when the folder has a current model.onnx and onnxruntime imports, else torch)."""
    if choice not in BACKENDS:
        raise EmotionError(f"unknown backend {choice!r}: choose one of {', '.join(BACKENDS)}")
    if choice == "torch":
        return TorchBackend(model, info)
    why = _onnx_unusable(folder)
    if why is None:
        from .onnx_export import ONNX_NAME

        return OnnxBackend(Path(folder) / ONNX_NAME, info, threads)
    if choice == "onnxruntime":
        raise EmotionError(f"the onnxruntime backend cannot run this model: {why}")
    log.info("classifying in torch: %s", why)
    return TorchBackend(model, info)


def _onnx_unusable(folder: str | Path | None) -> str | None:
    """Why the folder's model.onnx cannot serve (None when it can)."""
    if folder is None:
        return "no model folder given (a model built in memory has no model.onnx)"
    try:
        import onnxruntime  # noqa: F401

        from .onnx_export import is_current
    except ImportError:
        return "onnxruntime is not installed (pip install -r requirements.txt)"
    try:
        if not is_current(folder):
            return (f"{folder} has no model.onnx made from its present model.safetensors (write one with "
                    f"python -m trainer export-onnx {folder})")
    except (EmotionError, OSError, ValueError) as e:
        return f"its model.onnx cannot be read ({e})"
    return None
