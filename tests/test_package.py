"""`pip install .` gives the packages, their data files and the console scripts `emotion` and `emotion-train`."""
from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_installs_packages_data_and_console_scripts(tmp_path):
    # --no-build-isolation --no-deps: offline, with the setuptools of this environment; the dependencies are the
    # ones requirements.txt already installed here.
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path / "dist"), str(ROOT)], check=True, capture_output=True, cwd=tmp_path)
    (wheel,) = (tmp_path / "dist").glob("emotion_detection-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for needed in ("emotion/assets/face_detection_short_range.tflite", "trainer/configs/small_cnn.yaml",
                   "model_card/template.md", "webapp/api.py", "trainer/metrics/classification/classification.py",
                   "webapp/static/live/live.js", "webapp/static/vendor/SHA256SUMS",
                   "webapp/static/vendor/onnxruntime-web/ort-wasm-simd-threaded.wasm"):
        assert needed in names
    entry_points = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "emotion = emotion.__main__:main" in entry_points and "emotion-train = trainer.__main__:main" in entry_points
    requires = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("METADATA"))).decode()
    assert "Requires-Dist: torch==2.14.1" in requires  # read from requirements.txt: one list, not two

    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                   check=True, capture_output=True)
    code = ("import emotion, trainer, model_card, emotion.faces as f; "
            "print(emotion.__file__); print(f.ASSETS.joinpath('face_detection_short_range.tflite').is_file())")
    env = {**os.environ, "PYTHONPATH": str(target)}
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == [str(target / "emotion" / "__init__.py"), "True"]  # not the repo's copy
