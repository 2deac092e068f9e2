"""The classifier's backends (`emotion.backends`): ONNX Runtime serves where a model folder has a current model.onnx,
with torch's probabilities; torch serves otherwise, and a forced choice that cannot run says why."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
from PIL import Image

from conftest import needs_torch
from emotion import EmotionError, shipped_models
from emotion.info import INT8_NAME
from emotion.onnx_export import ONNX_NAME
from emotion.predict import Predictor

pytest.importorskip("onnxruntime", reason="onnxruntime is in requirements.txt: pip install -r requirements.txt")

FERPLUS_ROWS = 8
TOLERANCE = 1e-4  # probabilities; measured ~1e-9 (ONNX Runtime and oneDNN sum in different orders)


@pytest.fixture(scope="module")
def default_folder():
    from emotion.sources import resolve, shipped_default

    try:
        return resolve(shipped_default())
    except EmotionError as e:
        pytest.skip(f"no shipped default model: {e}")


@pytest.fixture(scope="module")
def faces(astronaut, detector, ferplus_dir):
    """The astronaut's face as serving cuts it (whole photo and mirror in one batch) and a few FER+ rows."""
    from trainer.compare import load_eval_split

    split = load_eval_split(str(ferplus_dir), "validation", FERPLUS_ROWS)
    photo = Image.fromarray(astronaut)
    return photo, detector.find(photo), list(split.images)


@needs_torch
def test_onnxruntime_serves_the_default_model_with_torchs_probabilities(default_folder, faces):
    photo, found, rows = faces
    fast = Predictor.from_pretrained(f"local-dir:{default_folder}", backend="onnxruntime")
    slow = Predictor.from_pretrained(f"local-dir:{default_folder}", backend="torch")
    assert (fast.backend, slow.backend) == ("onnxruntime", "torch")
    crops = fast.crops(photo, found.faces) + rows
    # a smaller batch between two larger ones (the reused buffer), and one too large to keep a buffer for
    for batch in (crops, crops[:1], crops, crops * 4):
        np.testing.assert_allclose(fast.probabilities(batch), slow.probabilities(batch), atol=TOLERANCE, rtol=0)
    assert [p.emotion for p in fast.predict(photo).faces] == [p.emotion for p in slow.predict(photo).faces]


@needs_torch
def test_a_missing_or_stale_onnx_falls_back_to_the_float_graph_then_torch(default_folder, tmp_path, faces):
    folder = tmp_path / "model"
    shutil.copytree(default_folder, folder)
    assert Predictor.from_pretrained(f"local-dir:{folder}").backend == "onnxruntime-int8"
    (folder / INT8_NAME).unlink()
    assert Predictor.from_pretrained(f"local-dir:{folder}").backend == "onnxruntime"
    with pytest.raises(EmotionError, match="export-onnx --int8"):
        Predictor.from_pretrained(f"local-dir:{folder}", backend="int8")
    (folder / ONNX_NAME).unlink()
    assert Predictor.from_pretrained(f"local-dir:{folder}").backend == "torch"
    with pytest.raises(EmotionError, match="export-onnx"):
        Predictor.from_pretrained(f"local-dir:{folder}", backend="onnxruntime")
    shutil.copy(default_folder / ONNX_NAME, folder / ONNX_NAME)
    shutil.copy(default_folder / INT8_NAME, folder / INT8_NAME)
    weights = folder / "model.safetensors"  # new weights, the old model.onnx and model.int8.onnx: stale
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    assert Predictor.from_pretrained(f"local-dir:{folder}").backend == "torch"


def test_an_unknown_backend_is_refused_with_the_choices():
    with pytest.raises(EmotionError, match="auto, torch, onnxruntime"):
        Predictor.from_pretrained(next(iter(shipped_models().values())), backend="tensorrt")


@needs_torch
def test_the_servers_emotion_backend_setting_reaches_its_predictors(default_folder):
    from webapp.models import ModelRegistry
    from webapp.settings import Settings

    source = f"local-dir:{default_folder}"
    for env, expected in (({}, "onnxruntime-int8"), ({"EMOTION_BACKEND": "onnxruntime"}, "onnxruntime"),
                          ({"EMOTION_BACKEND": "torch"}, "torch")):
        registry = ModelRegistry.from_settings(Settings.from_env({"EMOTION_MODEL": source, **env}))
        assert registry.get()[1].backend == expected


def test_a_hub_model_downloads_its_onnx_files_and_is_served_in_onnxruntime(default_folder, tmp_path, monkeypatch):
    """snapshot_download stands in for the Hub (unreachable from tests): it copies the files of the shipped default
    that the download's allow_patterns take, as the Hub would."""
    import fnmatch

    import huggingface_hub

    def snapshot_download(repo_id, revision=None, allow_patterns=None, **_):
        out = tmp_path / "snapshot"
        out.mkdir(exist_ok=True)
        for f in default_folder.iterdir():
            if any(fnmatch.fnmatch(f.name, p) for p in allow_patterns):
                shutil.copy(f, out / f.name)
        return str(out)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    predictor = Predictor.from_pretrained("hf-hub:org/name")
    assert (tmp_path / "snapshot" / ONNX_NAME).is_file() and predictor.backend == "onnxruntime-int8"


# ------------------------------------------------------------------------------------------------ flip margin
def test_a_flip_margin_mirrors_only_the_close_calls_and_keeps_the_rest_as_the_face_alone():
    """calibration.served_logits: without a flip_margin every face and its mirror run in one batch (as before);
    with one, the faces run alone and only those whose two highest biased logits are closer than the margin run
    again mirrored, in a second batch of just those, and are averaged with it."""
    from dataclasses import replace

    from emotion.calibration import merge_flipped, served_logits
    from emotion.info import ModelInfo

    rng = np.random.default_rng(0)
    x = rng.normal(size=(6, 1, 4, 4)).astype(np.float32)
    weights = rng.normal(size=(16, 8)).astype(np.float32)
    batches = []

    def run(batch):
        batches.append(len(batch))
        return batch.reshape(len(batch), -1) @ weights

    info = ModelInfo(architecture="small_cnn", input_size=(1, 4, 4), logit_bias={"neutral": 0.5})
    both = np.concatenate([x, x[..., ::-1]])
    np.testing.assert_array_equal(served_logits(run, x, info), merge_flipped(run(both), True, info))
    assert batches[0] == 12  # one batch: the faces and their mirrors
    alone, mirrored = merge_flipped(run(x), False, info), merge_flipped(run(x[..., ::-1]), False, info)
    top = np.sort(alone, axis=1)
    margin = float(np.median(top[:, -1] - top[:, -2]))  # half the faces are close calls
    close = (top[:, -1] - top[:, -2]) < margin
    assert 0 < close.sum() < len(x)
    batches.clear()
    got = served_logits(run, x, replace(info, flip_margin=margin))
    assert batches == [6, int(close.sum())]
    np.testing.assert_allclose(got[~close], alone[~close], rtol=0, atol=1e-5)
    np.testing.assert_allclose(got[close], (alone[close] + mirrored[close]) / 2, rtol=0, atol=1e-5)
    batches.clear()
    np.testing.assert_array_equal(served_logits(run, x, replace(info, flip_margin=margin, tta_flip=False)), alone)
    assert batches == [6]


@pytest.mark.parametrize("bad", [-0.5, "1", True, float("nan")])
def test_a_bad_flip_margin_in_a_config_is_refused(bad):
    from emotion.info import ModelInfo

    with pytest.raises(EmotionError, match="flip_margin"):
        ModelInfo(architecture="small_cnn", flip_margin=bad)


def test_onnxruntime_and_torch_serve_a_flip_margin_alike(default_folder, tmp_path, faces):
    """The shipped default with a flip_margin: the close calls are the same faces in both backends, and their
    probabilities agree as without one."""
    pytest.importorskip("torch", reason="torch serves the comparison")
    import json

    def with_margin(name, margin):
        folder = tmp_path / name
        shutil.copytree(default_folder, folder)
        config = json.loads((folder / "config.json").read_text())
        config["emotion"]["flip_margin"] = margin
        (folder / "config.json").write_text(json.dumps(config))
        return f"local-dir:{folder}"

    _, _, crops = faces
    onnx = Predictor.from_pretrained(with_margin("margin", 1.0), backend="onnxruntime")
    torch = Predictor.from_pretrained(onnx.source, backend="torch")
    assert onnx.info.flip_margin == 1.0
    np.testing.assert_allclose(onnx.probabilities(crops), torch.probabilities(crops), rtol=0, atol=TOLERANCE)
    plain = Predictor.from_pretrained(with_margin("every", None), backend="onnxruntime")
    assert plain.info.flip_margin is None
    assert not np.array_equal(onnx.probabilities(crops), plain.probabilities(crops))  # some face was clear
