"""Serving needs no torch (issue #38): importing `emotion`, starting the app and predicting never import it; the
answers made where torch cannot even be imported are torch's own (probabilities within 1e-5, the same boxes and
action units) on real faces; a model folder without a model.onnx says how to write one; and the dependency sets
keep torch out of requirements.txt."""
from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import NEEDS_TORCH, TORCH
from emotion import EmotionError, shipped_models
from emotion.onnx_export import ONNX_NAME
from emotion.predict import Predictor

ROOT = Path(__file__).resolve().parents[1]
TRAINING_STACK = ("torch", "torchvision", "timm", "safetensors", "accelerate", "onnx")  # none of it serves
PROBABILITY_TOLERANCE = 1e-5  # measured ~1e-9 (ONNX Runtime and oneDNN sum in different orders)
POSED_PHOTOS = 6

# Run in a subprocess where `import torch` fails (None in sys.modules): every shipped model's answers on the photos
# given as arguments, with action units (which also runs the blendshape heads on the faces their gates pass).
NO_TORCH = """
import json, sys
sys.modules["torch"] = None
from emotion import Predictor, shipped_models
out = {}
for name, source in sorted(shipped_models().items()):
    predictor = Predictor.from_pretrained(source, backend="onnxruntime")  # the float graph (int8: test_quantize.py)
    assert predictor.backend == "onnxruntime", predictor.backend
    out[name] = [[f.to_dict() for f in predictor.predict(p, action_units=True).faces] for p in sys.argv[1:]]
print(json.dumps(out))
"""


def run_python(code: str, *args: str) -> str:
    """`code` run by this Python in the repo root, serving the shipped models (EMOTION_MODEL unset); its last line."""
    env = {k: v for k, v in os.environ.items() if k not in ("EMOTION_MODEL", "EMOTION_MODELS")}
    out = subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True, text=True, timeout=600,
                         env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout.splitlines()[-1]


@pytest.fixture(scope="module")
def photos(tmp_path_factory, posed_dir) -> list[str]:
    """The example astronaut and a few posed performers' photos (256 px, one face each), as files."""
    import pyarrow.parquet as pq
    from PIL import Image

    folder = tmp_path_factory.mktemp("photos")
    paths = [str(ROOT / "examples" / "astronaut.jpg")]
    rows = pq.read_table(next(posed_dir.glob("validation-*.parquet")), columns=["image"]).slice(0, POSED_PHOTOS)
    for i, row in enumerate(rows.to_pylist()):
        path = folder / f"posed_{i}.png"
        Image.open(io.BytesIO(row["image"]["bytes"])).convert("RGB").save(path)
        paths.append(str(path))
    return paths


def test_importing_emotion_starting_the_app_and_predicting_never_import_torch():
    code = """
import sys
import emotion
from emotion import Predictor
import app
from fastapi.testclient import TestClient
with TestClient(app.create_app()) as client:
    assert client.get("/api/health").status_code == 200
    with open("examples/astronaut.jpg", "rb") as f:
        r = client.post("/api/predict", files={"file": ("a.jpg", f, "image/jpeg")})
    assert r.status_code == 200 and len(r.json()["faces"]) == 1, r.text
Predictor.from_pretrained().predict("examples/astronaut.jpg", action_units=True)
print(sorted(m for m in %r if m in sys.modules))
""" % (TRAINING_STACK,)
    assert run_python(code) == "[]"


def test_without_torch_every_shipped_model_answers_as_torch_does(photos):
    """The answers of a process that cannot import torch, against the torch backend's in this one."""
    if not TORCH:
        pytest.skip(f"the comparison with torch {NEEDS_TORCH}")
    light = json.loads(run_python(NO_TORCH, *photos))
    assert sorted(light) == sorted(shipped_models())
    for name, source in shipped_models().items():
        heavy = Predictor.from_pretrained(source, backend="torch")
        for path, faces in zip(photos, light[name], strict=True):
            expected = [f.to_dict() for f in heavy.predict(path, action_units=True).faces]
            assert [f["box"] for f in faces] == [f["box"] for f in expected] and faces, (name, path)
            for got, want in zip(faces, expected):
                assert got["emotion"] == want["emotion"], (name, path)
                np.testing.assert_allclose(list(got["probabilities"].values()), list(want["probabilities"].values()),
                                           atol=PROBABILITY_TOLERANCE, rtol=0, err_msg=f"{name} {path}")
                assert got["action_units"] == pytest.approx(want["action_units"], abs=1e-6), (name, path)


def test_a_folder_without_model_onnx_names_export_onnx_where_torch_is_absent(tiny_model, tmp_path, monkeypatch):
    import emotion.backends

    folder = tmp_path / "model"
    shutil.copytree(tiny_model, folder)
    (folder / ONNX_NAME).unlink()
    monkeypatch.setattr(emotion.backends, "torch_installed", lambda: False)
    with pytest.raises(EmotionError, match=re.escape(f"python -m trainer export-onnx {folder}")) as e:
        Predictor.from_pretrained(f"local-dir:{folder}")
    assert "requirements-train.txt" in str(e.value)
    with pytest.raises(EmotionError, match=r"the torch backend needs torch.*requirements-train\.txt"):
        Predictor.from_pretrained(f"local-dir:{tiny_model}", backend="torch")
    assert Predictor.from_pretrained(f"local-dir:{tiny_model}").backend == "onnxruntime"  # a model.onnx: served


def test_a_stale_model_onnx_is_not_served(tiny_model, tmp_path, monkeypatch):
    """model.onnx records the digest of the weights it was made from; new weights make it stale (the fix named)."""
    import emotion.backends

    folder = tmp_path / "model"
    shutil.copytree(tiny_model, folder)
    weights = folder / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    monkeypatch.setattr(emotion.backends, "torch_installed", lambda: False)
    with pytest.raises(EmotionError, match="no model.onnx made from its present model.safetensors"):
        Predictor.from_pretrained(f"local-dir:{folder}")


def test_the_trainer_without_torch_says_which_set_to_install_in_one_line():
    code = "import runpy, sys; sys.modules['torch'] = None; sys.argv = ['trainer', '--help']; " \
           "runpy.run_module('trainer', run_name='__main__')"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr[-2000:]
    assert out.stderr.strip().splitlines() == [
        "error: the trainer needs torch, which the serving set (requirements.txt) leaves out: "
        "pip install -r requirements-train.txt, or pip install .[train]"]


def test_the_numpy_tiny_export_is_the_small_cnn_torch_loads(tmp_path):
    """tests/tiny_export.py (what the serving set's tests run on) computes what emotion.models.SmallCNN does."""
    if not TORCH:
        pytest.skip(f"the comparison with torch {NEEDS_TORCH}")
    import onnxruntime as ort
    import torch

    from emotion.info import ModelInfo
    from emotion.models import load_model
    from tiny_export import write_numpy_export

    folder = write_numpy_export(tmp_path / "tiny", ModelInfo(architecture="small_cnn"), seed=5)
    model, _, _ = load_model(f"local-dir:{folder}")
    x = np.random.default_rng(0).normal(0, 1, (3, 1, 48, 48)).astype(np.float32)
    with torch.inference_mode():
        expected = model(torch.from_numpy(x)).numpy()
    got = ort.InferenceSession(str(folder / ONNX_NAME), providers=["CPUExecutionProvider"]).run(None, {"pixels": x})[0]
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)
    assert np.abs(expected).max() > 0.1  # not a model that answers zeros whatever it sees


def packages(name: str) -> list[str]:
    """The package names a requirements file lists (comments and versions left out)."""
    lines = [line.split("#")[0].strip() for line in (ROOT / name).read_text().splitlines()]
    return [re.split(r"[<>=\[ ;]", line, maxsplit=1)[0].lower() for line in lines if line]


def test_the_serving_set_leaves_the_training_stack_out_and_the_full_set_has_everything():
    assert packages("requirements.txt") and not set(packages("requirements.txt")) & set(TRAINING_STACK)
    assert {"torch==2.14.1", "torchvision==0.29.1"} <= set((ROOT / "requirements-train.txt").read_text().split())
    included = re.findall(r"^-r (\S+)$", (ROOT / "requirements-dev.txt").read_text(), re.M)
    assert sorted(included) == ["requirements-ray.txt", "requirements-test.txt", "requirements-train.txt",
                                "requirements.txt"]
