"""ONNX export of an exported model folder: `model.onnx` beside `model.safetensors`, for ONNX Runtime (Python, or
onnxruntime-web in the visitor's browser: the /live page).

The graph is the classifier alone: input `pixels`, float32 (batch, C, H, W), the face already cropped, resized and
normalised as config.json says (`emotion.preprocess.to_array`); output `logits`, float32 (batch, num_classes), in
config.json's label order. Mirror averaging, the logit bias, the temperature and the "uncertain" threshold stay
outside, as in `emotion.predict`, and are read from config.json. The batch axis is dynamic; opset OPSET.

Weights come from model.safetensors only. A model stored in half precision (resnet50: 47 MB) keeps its weights in
half precision here too, each followed by a Cast to float32: ONNX Runtime folds the casts when it loads the model,
so it computes in float32 on exactly the weights torch uses, at half the file size (94 -> 47 MB). Weights that do
not fit float16 exactly stay float32.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import warnings
from pathlib import Path

import numpy as np

from .atomic import atomic_write
from .errors import EmotionError
from .info import ONNX_NAME, WEIGHTS_NAME  # noqa: F401  (ONNX_NAME re-exported)

OPSET = 17  # supported by onnxruntime >= 1.14 and onnxruntime-web; every layer of the shipped models has it
INPUT_NAME, OUTPUT_NAME = "pixels", "logits"
DIGEST_KEY = "weights_sha256"  # metadata: the model.safetensors this file was made from (see `is_current`)
MIN_HALF_SIZE = 64  # smaller tensors stay float32: a Cast node costs more than it saves
CHECK_TOLERANCE = 1e-3  # export's own check, on random inputs; the tests hold real faces to 1e-4


def export_onnx(model_dir: str | os.PathLike, check: bool = True) -> Path:
    """Write `model.onnx` into an exported model folder, from its model.safetensors and config.json.

    Args:
        model_dir: a folder holding config.json and model.safetensors (a training run's export, or models/<name>).
        check: run the file in ONNX Runtime and compare its logits with torch's on random inputs.

    Returns:
        The path of the written model.onnx.
    """
    import onnx
    import torch

    from .models import load_model

    folder = Path(model_dir)
    model, info, _ = load_model(f"local-dir:{folder}")
    model = model.float().to(memory_format=torch.contiguous_format)
    example = torch.zeros(1, *info.input_size)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # torch 2.14's default exporter needs onnxscript; the TorchScript one needs nothing more and handles every
        # shipped architecture (requirements.txt pins torch). No constant folding: it would fuse BatchNorm into
        # the convolutions in float32, and half-precision weights would no longer be stored exactly.
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        torch.onnx.export(model, (example,), buffer, dynamo=False, opset_version=OPSET, do_constant_folding=False,
                          input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                          dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}})
    proto = onnx.load_from_string(buffer.getvalue())
    _half_initializers(proto)
    describe(proto, info, weights_digest(folder))
    onnx.checker.check_model(proto)
    path = folder / ONNX_NAME

    def write(tmp: Path) -> None:
        tmp.write_bytes(proto.SerializeToString())
        if check:
            _check(tmp, model, info)  # a model.onnx that fails its check never replaces the one there

    atomic_write(path, write)  # never a half-written model.onnx for a page or server to load
    return path


def weights_digest(model_dir: str | os.PathLike) -> str:
    """The sha256 of the folder's model.safetensors (what model.onnx records it was made from)."""
    weights = Path(model_dir) / WEIGHTS_NAME
    if not weights.is_file():
        raise EmotionError(f"{model_dir} has no {WEIGHTS_NAME}: export the model first")
    digest = hashlib.sha256()
    with open(weights, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def is_current(model_dir: str | os.PathLike) -> bool:
    """Whether the folder's model.onnx exists and was made from its present model.safetensors."""
    import onnx

    path = Path(model_dir) / ONNX_NAME
    if not path.is_file():
        return False
    meta = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    return meta.get(DIGEST_KEY) == weights_digest(model_dir)


def _half_initializers(proto) -> int:
    """Stores each float32 weight that float16 holds exactly as float16 plus a Cast back; returns how many."""
    from onnx import TensorProto, helper, numpy_helper

    casts = []
    for init in proto.graph.initializer:
        if init.data_type != TensorProto.FLOAT:
            continue
        values = numpy_helper.to_array(init)
        half = values.astype(np.float16)
        if values.size < MIN_HALF_SIZE or not np.array_equal(half.astype(np.float32), values):
            continue
        name = init.name
        init.CopyFrom(numpy_helper.from_array(half, f"{name}.fp16"))
        casts.append(helper.make_node("Cast", [f"{name}.fp16"], [name], to=TensorProto.FLOAT, name=f"{name}.cast"))
    for i, node in enumerate(casts):  # first in the graph: the nodes stay topologically sorted
        proto.graph.node.insert(i, node)
    return len(casts)


def describe(proto, info, digest: str) -> None:
    """Adds to an ONNX model `proto` the metadata a reader needs without config.json: the names, the labels and the
    digest of the model.safetensors it came from (what serving checks before it trusts the file)."""
    proto.doc_string = (f"{info.architecture} facial-expression classifier. Input {INPUT_NAME!r}: float32 (batch, "
                        f"{', '.join(map(str, info.input_size))}), a face crop normalised as config.json says. "
                        f"Output {OUTPUT_NAME!r}: float32 (batch, {info.num_classes}) logits in label order.")
    facts = {DIGEST_KEY: digest, "labels": json.dumps(list(info.labels)), "architecture": info.architecture,
             "input_size": json.dumps(list(info.input_size))}
    for key, value in facts.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value


def _check(path: Path, model, info) -> None:
    """ONNX Runtime must give torch's logits back on a few random inputs (batch of 3: the batch axis is dynamic)."""
    import onnxruntime as ort
    import torch

    x = torch.randn(3, *info.input_size, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        expected = model(x).numpy()
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    got = session.run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})[0]
    diff = float(np.abs(got - expected).max())
    if diff > CHECK_TOLERANCE * max(1.0, float(np.abs(expected).max())):
        raise EmotionError(f"the ONNX export of {path.parent} differs from torch by {diff:.2e} in the logits: "
                           "report this with the model's config.json")
