"""ONNX exports (`emotion.onnx_export`): every shipped model has a current model.onnx, ONNX Runtime gives torch's
logits back on real faces, and the trainer writes model.onnx with every export."""
from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import NEEDS_TORCH, write_export
from emotion import shipped_models
from emotion.onnx_export import INPUT_NAME, ONNX_NAME, OUTPUT_NAME, export_onnx, is_current

torch = pytest.importorskip("torch", reason=f"the export {NEEDS_TORCH}")
ort = pytest.importorskip("onnxruntime", reason="onnxruntime is in requirements.txt: pip install -r requirements.txt")
onnx = pytest.importorskip("onnx", reason="onnx is in requirements-train.txt: pip install -r requirements-dev.txt")

from safetensors.torch import load_file, save_file  # noqa: E402

shipped = shipped_models()
FERPLUS_ROWS = 8
TOLERANCE = 1e-4  # logits; measured differences are ~1e-5 (ONNX Runtime and oneDNN sum in different orders)


def session(path):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def torch_and_onnx_logits(folder, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    from emotion.models import load_model

    model, _, _ = load_model(f"local-dir:{folder}")
    with torch.inference_mode():
        expected = model(x.contiguous(memory_format=torch.channels_last)).numpy()
    return expected, session(folder / ONNX_NAME).run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})[0]


@pytest.fixture(scope="module")
def real_faces(astronaut, detector, ferplus_dir):
    """A few FER+ validation faces and the astronaut's face cropped as serving crops it (PIL images)."""
    from PIL import Image

    from emotion.faces import crop_face
    from trainer.compare import load_eval_split

    split = load_eval_split(str(ferplus_dir), "validation", FERPLUS_ROWS)
    photo = Image.fromarray(astronaut)
    face = detector.detect(photo)[0]
    return list(split.images) + [crop_face(photo, face, 0.1, True, -0.1)]


@pytest.mark.parametrize("name", sorted(shipped))
def test_each_shipped_model_has_an_onnx_export_of_its_present_weights(name):
    folder = shipped_models()[name].removeprefix("local-dir:")
    assert is_current(folder), f"models/{name}/{ONNX_NAME} is missing or stale: run python -m trainer export-onnx " \
                               f"models/{name}"


@pytest.mark.parametrize("name", sorted(shipped))
def test_onnx_runtime_gives_torch_logits_on_real_faces(name, real_faces):
    from pathlib import Path

    from emotion.models import ModelInfo
    from emotion.preprocess import batch

    folder = Path(shipped[name].removeprefix("local-dir:"))
    info = ModelInfo.from_config(json.loads((folder / "config.json").read_text()))
    x = torch.from_numpy(batch(real_faces, info))  # several faces at once: the batch axis is dynamic
    expected, got = torch_and_onnx_logits(folder, x)
    assert got.shape == (len(real_faces), info.num_classes)
    assert np.abs(got - expected).max() <= TOLERANCE, np.abs(got - expected).max()
    assert got[-1].argmax() == info.labels.index("happy")  # the astronaut


def test_half_precision_weights_are_stored_as_half_and_computed_exactly(tmp_path):
    folder = write_export(tmp_path / "half", onnx=False)
    weights = folder / "model.safetensors"
    save_file({k: v.half() if v.is_floating_point() else v for k, v in load_file(str(weights)).items()}, str(weights))
    export_onnx(folder)
    proto = onnx.load(str(folder / ONNX_NAME))
    kinds = {i.name: i.data_type for i in proto.graph.initializer}
    assert kinds["features.0.weight.fp16"] == onnx.TensorProto.FLOAT16  # a conv's weights, kept half
    x = torch.randn(4, 1, 48, 48, generator=torch.Generator().manual_seed(1))
    expected, got = torch_and_onnx_logits(folder, x)
    assert np.abs(got - expected).max() <= TOLERANCE


def test_float_weights_stay_float_and_the_file_names_its_inputs(tmp_path):
    folder = write_export(tmp_path / "float", onnx=False)
    path = export_onnx(folder)
    proto = onnx.load(str(path))
    assert all(i.data_type != onnx.TensorProto.FLOAT16 for i in proto.graph.initializer)
    assert [i.name for i in proto.graph.input] == [INPUT_NAME]
    assert [o.name for o in proto.graph.output] == [OUTPUT_NAME]
    meta = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(meta["labels"])[4] == "happy"
    assert is_current(folder)
    weights = str(folder / "model.safetensors")
    save_file({k: v + 1 if v.is_floating_point() else v for k, v in load_file(weights).items()}, weights)
    assert not is_current(folder)  # retrained weights: the export is stale until redone


def test_the_trainer_writes_model_onnx_beside_the_safetensors(tmp_path):
    from emotion.models import ModelInfo, create_model
    from trainer.export import export_model

    model = create_model("small_cnn")  # the config records no widths: the default ones
    folder = export_model(model.eval(), ModelInfo("small_cnn"), tmp_path / "export", {"model_name": "tiny"})
    assert is_current(folder)


def test_export_onnx_names_the_fix_for_a_folder_without_a_model(tmp_path):
    from emotion import EmotionError

    with pytest.raises(EmotionError, match="config.json"):
        export_onnx(tmp_path)
