"""The forward pass of a loaded classifier: ONNX Runtime on the folder's model.onnx, or torch where it is installed.

Both take the same face crops (`emotion.preprocess`) and hand their raw logits to the same numpy post-processing
(`emotion.calibration.served_logits`: each face averaged with its mirror, in one batch with it or, for a model with a
`flip_margin`, only where the answer is close; plus the model's logit bias); `Predictor` applies the temperature
and softmax. ONNX Runtime was faster than torch for every shipped model on this project's CPUs (2-core AMD EPYC,
1 thread, under contention: small_cnn 14.1 vs 24.3 ms for 1 face, 94 vs 115 for 6; resnet50 56 vs 162;
efficientnet_lite0 18 vs 52), so "auto" takes it whenever it can: onnxruntime imports and model.onnx records the
digest of the folder's present model.safetensors. Otherwise torch (`emotion.torch_backend`,
imported only then), with the reason logged; where torch is not installed (the serving set, requirements.txt) the
reason becomes an error that names the fix.
"""
from __future__ import annotations

import importlib.util
import logging
import threading
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from .calibration import served_logits
from .errors import EmotionError
from .info import INT8_NAME, ONNX_NAME, ModelInfo
from .preprocess import normalise, to_model_pixels
from .threads import Sessions, get_threads, wide_threads

log = logging.getLogger(__name__)

BACKENDS = ("auto", "torch", "onnxruntime", "int8")
# ONNX Runtime's input buffer is kept for batches up to this many rows (faces and mirrors: 8 video frames of 4
# faces; 4.9 MB at 3x80x80); a larger batch gets a buffer of its own, so one group photo does not hold memory.
REUSED_ROWS = 64
TRAIN_SET = "pip install -r requirements-train.txt, or pip install .[train]"


WIDE_MAX_BYTES = 16 * 2**20  # a model file up to this size gets a second, wider session (see OnnxBackend)


class OnnxBackend:
    """An ONNX Runtime session on a model.onnx, `threads` intra-op threads (`emotion.threads` by default, which the
    server and the batch runner size per worker). Calls are serialised: the input buffer is reused."""

    name = "onnxruntime"

    def __init__(self, path: str | Path, info: ModelInfo, threads: int | None = None):
        import onnxruntime as ort

        if Path(path).name == INT8_NAME:
            self.name = "onnxruntime-int8"

        from .onnx_export import DIGEST_KEY, INPUT_NAME, OUTPUT_NAME

        options = ort.SessionOptions()
        options.intra_op_num_threads = max(1, threads or get_threads())
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.info, self.threads = info, options.intra_op_num_threads
        # A lone prediction's batch runs on every core (emotion.threads.wide_threads): 6 faces 4.9 -> 2.8 ms on 2
        # cores here. A second session holds its own copy of the weights, so a large model keeps to one (resnet50's
        # 47 MB model.onnx: +177 MB resident), as does a backend given its own thread count.
        small = Path(path).stat().st_size <= WIDE_MAX_BYTES
        self._wide = Sessions(Path(path).read_bytes) if small and not threads else None
        # the model.safetensors it was made from (emotion.onnx_export writes it; read here without the onnx package)
        self.digest = self.session.get_modelmeta().custom_metadata_map.get(DIGEST_KEY)
        self._names = ([OUTPUT_NAME], INPUT_NAME)
        self._buffer = np.empty((0, *info.input_size), np.float32)
        self._lock = threading.Lock()

    def logits(self, crops: Sequence[Image.Image]) -> np.ndarray:
        """Face crops -> float32 (N, classes) logits as serving uses them (`emotion.calibration.served_logits`)."""
        n = len(crops)
        pixels = [to_model_pixels(c, self.info) for c in crops]  # the resizing, outside the lock
        with self._lock:
            if n > REUSED_ROWS:
                x = np.empty((n, *self.info.input_size), np.float32)
            else:
                if len(self._buffer) < n:  # the first batch's size; REUSED_ROWS once a larger one comes
                    size = REUSED_ROWS if len(self._buffer) else n
                    self._buffer = np.empty((size, *self.info.input_size), np.float32)
                x = self._buffer[:n]
            for i, img in enumerate(pixels):
                normalise(img, self.info, x[i])
            return served_logits(self._run, x, self.info)

    def _run(self, x: np.ndarray) -> np.ndarray:
        wide = wide_threads() if self._wide is not None else self.threads
        session = self.session if wide <= self.threads else self._wide.get(wide)
        return session.run(self._names[0], {self._names[1]: x})[0]


def torch_installed() -> bool:
    """Whether torch can be imported here (found without importing it: that alone costs ~1 s and ~300 MB)."""
    return importlib.util.find_spec("torch") is not None


def make_backend(model, info: ModelInfo, folder: str | Path | None, choice: str = "auto", threads: int | None = None):
    """The backend `choice` names, for a torch `model` (or None) and the model's `folder` (or None).

    "onnxruntime": the folder's current model.onnx, or an EmotionError naming the fix. "int8": its current
    model.int8.onnx (`emotion.quantize`), likewise. "torch": `model`, or the folder's model.safetensors loaded in
    torch. "auto": the int8 file where the folder has a current one, else model.onnx, else torch where torch is
    installed, else an EmotionError saying why and how to write a model.onnx."""
    if choice not in BACKENDS:
        raise EmotionError(f"unknown backend {choice!r}: choose one of {', '.join(BACKENDS)}")
    if choice in ("auto", "int8"):
        backend, why = _open_onnx(folder, info, threads, INT8_NAME)
        if backend is not None:
            return backend
        if choice == "int8":
            raise EmotionError(f"the int8 backend cannot run this model: {why}")
    if choice != "torch":
        backend, why = _open_onnx(folder, info, threads)
        if backend is not None:
            return backend
        if choice == "onnxruntime":
            raise EmotionError(f"the onnxruntime backend cannot run this model: {why}")
        if model is None and not torch_installed():
            raise EmotionError(f"this model cannot be served: {why}; and torch, which could run its model.safetensors "
                               f"instead, is not installed ({TRAIN_SET})")
        log.info("classifying in torch: %s", why)
    elif model is None and not torch_installed():
        raise EmotionError(f"the torch backend needs torch, which the serving set (requirements.txt) leaves out: "
                           f"{TRAIN_SET}, or serve with the onnxruntime backend")
    if model is None and folder is None:
        raise EmotionError("a classifier needs a torch model or an exported model folder: give one")
    from .torch_backend import TorchBackend

    return TorchBackend(model, info) if model is not None else TorchBackend.from_folder(folder, info)


def _open_onnx(folder: str | Path | None, info: ModelInfo, threads: int | None,
               name: str = ONNX_NAME) -> tuple[OnnxBackend | None, str]:
    """The folder's model.onnx (or `name`: model.int8.onnx) in ONNX Runtime, or None and why it cannot serve (a
    sentence naming the fix)."""
    if folder is None:
        return None, "no model folder given (a model built in memory has no model.onnx)"
    if importlib.util.find_spec("onnxruntime") is None:
        return None, "onnxruntime is not installed (pip install -r requirements.txt)"
    from .onnx_export import weights_digest

    path = Path(folder) / name
    missing = (f"{folder} has no {name} made from its present model.safetensors (write one with "
               f"python -m trainer export-onnx {'--int8 DATA ' if name == INT8_NAME else ''}{folder})")
    if not path.is_file():
        return None, missing
    try:
        digest = weights_digest(folder)
        backend = OnnxBackend(path, info, threads)
    except EmotionError as e:
        return None, str(e)
    except Exception as e:  # noqa: BLE001  onnxruntime's load errors (a truncated or foreign file) derive from it
        return None, f"its {name} cannot be read ({e})"
    return (backend, "") if backend.digest == digest else (None, missing)
