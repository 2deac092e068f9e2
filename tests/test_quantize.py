"""The int8 classifier (emotion/quantize.py): written from a folder's current model.onnx and calibration faces,
served by "auto" while current, refused where it changes too many answers; the shipped default's int8 file is
current and answers as its float graph does."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
from PIL import Image

from conftest import needs_torch, write_export
from emotion import EmotionError
from emotion.info import INT8_NAME
from emotion.predict import Predictor

pytest.importorskip("onnxruntime", reason="onnxruntime is in requirements.txt: pip install -r requirements.txt")

SHIPPED_AGREEMENT = 0.97  # top classes equal to the float graph's, on FER+ rows (measured 0.995 on 3,396)


def faces(n: int, seed: int = 0) -> list[Image.Image]:
    """Face-like crops: a bright oval on a dark ground with two dark eyes and a mouth, jittered (a random model's
    activations need only cover a plausible range)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:64, :64]
    out = []
    for _ in range(n):
        img = 40 + 20 * rng.random((64, 64))
        img[((xx - 32) / 22) ** 2 + ((yy - 34) / 28) ** 2 < 1] = 150 + 60 * rng.random()
        for ex in (22, 42):
            img[((xx - ex) / 5) ** 2 + ((yy - 28) / 3) ** 2 < 1] = 30
        img[48 + rng.integers(-2, 3):52, 24:40] = 60
        out.append(Image.fromarray(img.clip(0, 255).astype(np.uint8), "L"))
    return out


@needs_torch
def test_int8_is_written_served_while_current_and_never_replaced_by_a_bad_one(tmp_path, monkeypatch):
    pytest.importorskip("onnx", reason="writing model.int8.onnx needs onnx (requirements-train.txt)")
    import emotion.quantize as quantize
    from emotion.onnx_export import DIGEST_KEY, weights_digest

    folder = write_export(tmp_path / "model", seed=1)
    monkeypatch.setattr(quantize, "MAX_DISAGREE", 1.0)  # a random model's near ties: its answers are not the point
    path = quantize.quantize_onnx(folder, faces(64), "generated faces")
    import onnx

    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert meta[DIGEST_KEY] == weights_digest(folder) and "64 faces" in meta[quantize.CALIBRATION_KEY]
    assert any(n.op_type == "QuantizeLinear" for n in onnx.load(str(path)).graph.node)
    assert Predictor.from_pretrained(f"local-dir:{folder}").backend == "onnxruntime-int8"
    assert Predictor.from_pretrained(f"local-dir:{folder}", backend="onnxruntime").backend == "onnxruntime"
    before = path.read_bytes()
    monkeypatch.setattr(quantize, "MAX_DISAGREE", -1.0)  # every answer "changed": refused, the old file stays
    with pytest.raises(EmotionError, match="serve the float model.onnx"):
        quantize.quantize_onnx(folder, faces(64, seed=2), "other faces")
    assert path.read_bytes() == before and len(list(folder.glob("*.tmp"))) == 0
    with pytest.raises(EmotionError, match="at least"):
        quantize.quantize_onnx(folder, faces(4), "too few")


def test_the_int8_backend_without_its_file_names_the_command(tiny_model):
    with pytest.raises(EmotionError, match=r"model\.int8\.onnx.*export-onnx --int8"):
        Predictor.from_pretrained(f"local-dir:{tiny_model}", backend="int8")
    assert Predictor.from_pretrained(f"local-dir:{tiny_model}").backend == "onnxruntime"  # auto: the float graph


def test_a_stale_int8_file_is_not_served(tmp_path):
    from emotion.sources import resolve, shipped_default

    folder = tmp_path / "model"
    shutil.copytree(resolve(shipped_default()), folder)
    shutil.copy(folder / INT8_NAME, tmp_path / "kept")
    (folder / INT8_NAME).write_bytes(b"not onnx")  # unreadable: the float graph serves
    assert Predictor.from_pretrained(f"local-dir:{folder}").backend == "onnxruntime"
    shutil.copy(tmp_path / "kept", folder / INT8_NAME)
    weights = folder / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))  # new weights: both ONNX files are stale
    with pytest.raises(EmotionError, match="int8 backend cannot run"):
        Predictor.from_pretrained(f"local-dir:{folder}", backend="int8")


def test_the_shipped_default_serves_int8_with_its_float_graphs_answers(astronaut, ferplus_dir):
    int8 = Predictor.from_pretrained(None)
    float32 = Predictor.from_pretrained(None, backend="onnxruntime")
    assert int8.backend == "onnxruntime-int8"
    photo = Image.fromarray(astronaut)
    a, b = int8.predict(photo).faces, float32.predict(photo).faces
    assert [f.emotion for f in a] == [f.emotion for f in b] == ["happy"]
    np.testing.assert_allclose(list(a[0].probabilities.values()), list(b[0].probabilities.values()), atol=0.02)
    import io

    import pyarrow.parquet as pq

    rows = pq.read_table(next(ferplus_dir.glob("validation-*.parquet")), columns=["image"]).slice(0, 200).to_pylist()
    crops = [Image.open(io.BytesIO(r["image"]["bytes"])) for r in rows]
    agree = (int8.probabilities(crops).argmax(1) == float32.probabilities(crops).argmax(1)).mean()
    assert agree >= SHIPPED_AGREEMENT, agree


@needs_torch
def test_a_quantizer_failure_leaves_the_export_and_fails_no_run(tmp_path, monkeypatch, caplog):
    import emotion.quantize
    import trainer.run as run
    from trainer.rows import FaceSplit

    folder = write_export(tmp_path / "model", seed=2)

    def broken(*args, **kwargs):  # as ONNX Runtime 1.32's calibrator raised with CalibMaxIntermediateOutputs
        raise ValueError("No data is collected.")

    monkeypatch.setattr(emotion.quantize, "quantize_onnx", broken)
    split = FaceSplit(faces(40), np.eye(8, dtype=np.float32)[np.zeros(40, int)], np.zeros(40, int))
    run.quantize_export(folder, split, seed=0)
    assert not (folder / INT8_NAME).exists() and "quantizing failed (ValueError" in caplog.text
