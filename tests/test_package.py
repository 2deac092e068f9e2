"""`pip install .` gives the packages, their data files, the default model and the console scripts `emotion` and
`emotion-train`."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = (ROOT / "models" / "DEFAULT").read_text().strip()


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    # --no-build-isolation --no-deps: offline, with the setuptools of this environment; the dependencies are the
    # ones requirements.txt already installed here.
    out = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(out), str(ROOT)], check=True, capture_output=True, cwd=out)
    (built,) = out.glob("emotion_detection-*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> dict:
    """The wheel installed into a folder of its own, and an environment whose Python imports it from there."""
    target = tmp_path_factory.mktemp("site")
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                   check=True, capture_output=True)
    env = {k: v for k, v in os.environ.items() if k != "EMOTION_MODEL"}
    return {"target": target, "env": {**env, "PYTHONPATH": str(target)}}


def test_wheel_installs_packages_data_and_console_scripts(wheel, installed, tmp_path):
    names = zipfile.ZipFile(wheel).namelist()
    for needed in ("emotion/assets/face_detection_short_range.tflite", "emotion/assets/face_landmarker.task",
                   "trainer/configs/small_cnn.yaml",
                   "model_card/template.md", "webapp/api.py", "trainer/metrics/classification/classification.py",
                   "webapp/static/live/live.js", "webapp/static/vendor/SHA256SUMS",
                   "webapp/static/vendor/onnxruntime-web/ort-wasm-simd-threaded.wasm"):
        assert needed in names
    entry_points = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "emotion = emotion.__main__:main" in entry_points and "emotion-train = trainer.__main__:main" in entry_points
    requires = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("METADATA"))).decode()
    # read from the requirements files: serving (requirements.txt) needs no torch, `.[train]` pins it
    lines = requires.splitlines()
    assert "Requires-Dist: onnxruntime>=1.20" in lines
    assert [line for line in lines if line.startswith("Requires-Dist: torch")] == [
        'Requires-Dist: torch==2.14.1; extra == "train"', 'Requires-Dist: torchvision==0.29.1; extra == "train"']
    assert {"Provides-Extra: train", "Provides-Extra: ray", "Provides-Extra: test"} <= set(lines)

    target = installed["target"]
    code = ("import emotion, trainer, model_card, emotion.faces as f; "
            "print(emotion.__file__); print(f.ASSETS.joinpath('face_detection_short_range.tflite').is_file())")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=installed["env"], capture_output=True,
                         text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == [str(target / "emotion" / "__init__.py"), "True"]  # not the repo's copy


def test_wheel_ships_the_default_model_alone(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "emotion/models_data/DEFAULT" in names
    for part in ("config.json", "model.safetensors"):
        assert f"emotion/models_data/{DEFAULT}/{part}" in names
    others = {p.name for p in (ROOT / "models").iterdir() if (p / "config.json").is_file()} - {DEFAULT}
    assert others and not any(n.startswith(f"emotion/models_data/{o}/") for o in others for n in names)  # ~60 MB
    assert not any(n.startswith("models/") for n in names)  # inside the package, not a top-level "models"


def test_installed_package_predicts_from_another_folder_with_no_model_argument(installed, tmp_path):
    photo = tmp_path / "photo.jpg"
    photo.write_bytes((ROOT / "examples" / "astronaut.jpg").read_bytes())
    out = subprocess.run([sys.executable, "-m", "emotion", "predict", "photo.jpg", "--json"], cwd=tmp_path,
                         env=installed["env"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.splitlines()[-1])
    assert result["model"]["id"] == DEFAULT and len(result["faces"]) == 1
    listed = subprocess.run([sys.executable, "-c", "from emotion import shipped_models; print(shipped_models())"],
                            cwd=tmp_path, env=installed["env"], capture_output=True, text=True)
    assert str(installed["target"] / "emotion" / "models_data" / DEFAULT) in listed.stdout, listed.stderr[-2000:]
