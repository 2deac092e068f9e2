"""`python -m emotion predict`: one line per face, JSON on request, folders expanded, one-line errors."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from emotion.__main__ import main
from emotion.labels import LABELS

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def photo(astronaut, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("photos") / "astronaut.png"
    Image.fromarray(astronaut).save(path)
    return path


def test_predict_prints_one_line_for_the_one_face(photo, tiny_model, capsys):
    assert main(["predict", str(photo), "--model", f"local-dir:{tiny_model}"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1
    assert out[0].startswith(f"{photo}: face 1 at x=")
    assert any(f": {label} " in out[0] for label in LABELS)


def test_predict_json_gives_eight_probabilities(photo, tiny_model, capsys):
    assert main(["predict", str(photo), "--model", f"local-dir:{tiny_model}", "--json"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    result = json.loads(lines[0])
    assert result["path"] == str(photo)
    assert result["model"] == {"id": tiny_model.name, "source": f"local-dir:{tiny_model}", "revision": None}
    assert result["image_size"] == {"width": 512, "height": 512}
    (face,) = result["faces"]
    assert set(face["probabilities"]) == set(LABELS)
    assert sum(face["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
    assert set(face["box"]) == {"x", "y", "w", "h"}


def test_predict_on_a_folder_predicts_every_image(photo, tiny_model, tmp_path, capsys):
    image = Image.open(photo)
    image.save(tmp_path / "a.png")
    image.save(tmp_path / "b.jpg")
    (tmp_path / "sub").mkdir()
    Image.new("RGB", (64, 64), "gray").save(tmp_path / "sub" / "blank.png")
    (tmp_path / "notes.txt").write_text("not an image")
    assert main(["predict", str(tmp_path), "--model", f"local-dir:{tiny_model}", "--json"]) == 0
    results = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert [Path(r["path"]).name for r in results] == ["a.png", "b.jpg", "blank.png"]
    assert [len(r["faces"]) for r in results] == [1, 1, 0]


@pytest.mark.parametrize("kind", ["text file", "missing path"])
def test_bad_path_gives_one_line_error_and_nonzero_exit(kind, tiny_model, tmp_path, capsys):
    path = tmp_path / "notes.txt"
    if kind == "text file":
        path.write_text("hello, I am not a picture\n")
    assert main(["predict", str(path), "--model", f"local-dir:{tiny_model}"]) != 0
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and str(path) in err[0]
    assert "Traceback" not in captured.err
    assert captured.out == ""


def test_bad_model_source_gives_one_line_error(photo, capsys):
    assert main(["predict", str(photo), "--model", "org/name"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "hf-hub:" in err[0] and "local-dir:" in err[0]


def test_predict_runs_as_a_subprocess(photo, tiny_model, tmp_path):
    missing = tmp_path / "missing.jpg"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    ok = subprocess.run([sys.executable, "-m", "emotion", "predict", str(photo), "--model", f"local-dir:{tiny_model}"],
                        capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert len(ok.stdout.strip().splitlines()) == 1 and "face 1 at" in ok.stdout
    bad = subprocess.run([sys.executable, "-m", "emotion", "predict", str(missing), "--model",
                          f"local-dir:{tiny_model}"], capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
    assert bad.returncode != 0
    assert "Traceback" not in bad.stderr
    assert [line for line in bad.stderr.splitlines() if line.startswith("error: ")] == [
        line for line in bad.stderr.splitlines() if line.strip()]


@pytest.mark.parametrize("verbose", [False, True])
def test_native_detector_messages_only_with_verbose(verbose, photo, tiny_model, tmp_path):
    """LiteRT/XNNPACK INFO lines and MediaPipe's alignment warning go to fd 2 from C++ (the Face Landmarker, for
    action units; face detection runs in ONNX Runtime); they must not interleave with the progress bar unless
    asked for."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "emotion", "predict", str(photo), "--model", f"local-dir:{tiny_model}",
           "--action-units"]
    run = subprocess.run(cmd + (["--verbose"] if verbose else []), env=env, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    native = [line for line in run.stderr.splitlines() if "XNNPACK" in line or "LiteRT" in line]
    assert bool(native) == verbose, run.stderr[-2000:]


def test_readme_lists_the_fields_the_cli_json_prints(photo, tiny_model, capsys):
    import re

    readme = " ".join((ROOT / "README.md").read_text().split())
    listed = re.search(r"with `--json`, one JSON object per image \(([^)]*)\)", readme)
    assert listed, "README's Command line paragraph must describe --json"
    top = re.findall(r"`(\w+)`", re.sub(r"\{[^}]*\}", "", listed.group(1)))
    nested = re.findall(r"`(\w+)`", re.search(r"\{([^}]*)\}", listed.group(1)).group(1))
    assert main(["predict", str(photo), "--model", f"local-dir:{tiny_model}", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert sorted(top) == sorted(result) and sorted(nested) == sorted(result["model"])
