"""Model sources (local-dir:, hf-hub:, refusals) and the Predictor's probabilities, flags, batching and threads."""
import dataclasses
import json
import shutil
import threading

import numpy as np
import pytest
from PIL import Image

from conftest import ASTRONAUT_FACE, NEEDS_TORCH, write_export

torch = pytest.importorskip("torch", reason=f"loading models in torch {NEEDS_TORCH}")

from safetensors.torch import load_file, save_file  # noqa: E402
from emotion.errors import EmotionError  # noqa: E402
from emotion.faces import crop_box  # noqa: E402
from emotion.models import ModelInfo, create_model, load_model  # noqa: E402
from emotion.predict import Predictor  # noqa: E402
from emotion.preprocess import batch  # noqa: E402

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(scope="module")
def predictor(tiny_model, detector) -> Predictor:
    model, info, _ = load_model(f"local-dir:{tiny_model}")
    return Predictor(model, info, f"local-dir:{tiny_model}", detector)


@pytest.fixture(scope="module")
def face(astronaut) -> Image.Image:
    return crop_box(Image.fromarray(astronaut), ASTRONAUT_FACE)


def face_probs(result) -> np.ndarray:
    return np.array([[f.probabilities[k] for k in f.probabilities] for f in result.faces])


def spread_logits(folder, bias=(0.0, 1.0, 2.0, 3.0, 4.0, 0.5, 1.5, 2.5)):
    """Give the untrained head clearly different logits, so a temperature visibly changes the probabilities."""
    state = load_file(str(folder / "model.safetensors"))
    state["fc.bias"] = torch.tensor(bias)
    save_file(state, str(folder / "model.safetensors"))
    return folder


# ------------------------------------------------------------------------------------------------------- sources
def test_local_dir_round_trip_gives_the_in_memory_models_probabilities(tmp_path, astronaut, detector):
    torch.manual_seed(3)
    model = create_model("small_cnn", num_classes=8, in_chans=1, widths=(8, 16, 16, 32)).eval()
    info = ModelInfo(architecture="small_cnn")
    config = info.to_config(pretrained_cfg=dict(model.pretrained_cfg), num_features=model.num_features)
    config["model_args"] = {"widths": [8, 16, 16, 32]}
    (tmp_path / "config.json").write_text(json.dumps(config))
    save_file(model.state_dict(), str(tmp_path / "model.safetensors"))

    loaded = Predictor.from_pretrained(f"local-dir:{tmp_path}")
    assert loaded.info == info
    expected = face_probs(Predictor(model, info, detector=detector).predict(astronaut))
    got = face_probs(loaded.predict(astronaut))
    assert expected.shape == (1, 8)
    # the loaded copy keeps its weights channels_last (faster CPU convolutions): equal up to float rounding
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7)


def fill_hub_cache(cache, tiny_model, repo="org/name", tags=("main",)):
    """The layout huggingface_hub's snapshot_download reads offline: refs/<branch> -> snapshots/<commit>/..."""
    storage = cache / f"models--{repo.replace('/', '--')}"
    snapshot = storage / "snapshots" / COMMIT
    snapshot.mkdir(parents=True)
    for name in ("config.json", "model.safetensors"):
        shutil.copy(tiny_model / name, snapshot / name)
    (storage / "refs").mkdir()
    for tag in tags:
        (storage / "refs" / tag).write_text(COMMIT)
    return snapshot


@pytest.fixture
def hub_cache(tmp_path, monkeypatch, tiny_model):
    import huggingface_hub.constants as hf_constants

    cache = tmp_path / "hf" / "hub"
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # huggingface_hub reads these once at import; the running process needs the module values patched too
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    fill_hub_cache(cache, tiny_model, tags=("main", "v1"))
    return cache


@pytest.mark.parametrize("revision", ["", "@main", "@v1", f"@{COMMIT}"])
def test_hf_hub_source_resolves_offline_from_the_cache(hub_cache, revision, predictor, astronaut, detector):
    hub = Predictor.from_pretrained(f"hf-hub:org/name{revision}")
    hub.detector = detector
    assert hub.info == predictor.info
    np.testing.assert_array_equal(face_probs(hub.predict(astronaut)), face_probs(predictor.predict(astronaut)))


def test_hf_hub_source_not_in_the_cache_is_refused_offline(hub_cache):
    with pytest.raises(EmotionError, match="local-dir:"):
        load_model("hf-hub:org/other")


@pytest.mark.parametrize("source", ["org/name", "/path/to/export", "name"])
def test_ambiguous_source_is_refused_naming_both_forms(source):
    with pytest.raises(EmotionError) as err:
        Predictor.from_pretrained(source)
    assert "ambiguous" in str(err.value)
    assert "hf-hub:org/name" in str(err.value) and "local-dir:/path" in str(err.value)


def test_folder_without_safetensors_is_refused(tmp_path, tiny_model):
    shutil.copy(tiny_model / "config.json", tmp_path / "config.json")
    torch.save(load_file(str(tiny_model / "model.safetensors")), tmp_path / "pytorch_model.bin")
    with pytest.raises(EmotionError, match="safetensors only"):
        load_model(f"local-dir:{tmp_path}")


def test_local_dir_without_config_is_refused(tmp_path):
    with pytest.raises(EmotionError, match="no config.json"):
        load_model(f"local-dir:{tmp_path}")


# -------------------------------------------------------------------------------------------------- probabilities
def test_probabilities_sum_to_one(predictor, face):
    probs = predictor.probabilities([face, face.transpose(Image.Transpose.FLIP_LEFT_RIGHT)])
    assert probs.shape == (2, 8)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)


@pytest.mark.parametrize("tta_flip", [False, True])
def test_probabilities_are_softmax_of_logits_over_the_configured_temperature(tmp_path, face, detector, tta_flip):
    folder = spread_logits(write_export(tmp_path / "t2", temperature=2.0, tta_flip=tta_flip))
    hot = Predictor.from_pretrained(f"local-dir:{folder}")
    assert hot.info.temperature == 2.0

    model, info, _ = load_model(f"local-dir:{folder}")
    x = torch.from_numpy(batch([face], info))
    with torch.no_grad():
        logits = model(x).double().numpy()
        if tta_flip:
            logits = (logits + model(torch.flip(x, dims=[3])).double().numpy()) / 2
    manual = np.exp(logits / 2) / np.exp(logits / 2).sum(1, keepdims=True)
    at_one = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)

    probs = hot.probabilities([face])
    np.testing.assert_allclose(probs, manual, atol=1e-5)
    assert np.abs(probs - at_one).max() > 0.05  # the temperature is really applied, not ignored


def test_uncertain_flag_follows_the_threshold(predictor, face):
    confidence = float(predictor.probabilities([face]).max())
    for threshold, uncertain in ((confidence + 0.01, True), (confidence - 0.01, False)):
        p = Predictor(predictor.model, dataclasses.replace(predictor.info, uncertain_threshold=threshold),
                      detector=predictor.detector)
        result = p.predict_crop(face)
        assert result.confidence == pytest.approx(confidence)
        assert result.uncertain is uncertain


def test_predict_batch_equals_one_predict_per_image(predictor, astronaut):
    mirrored = np.ascontiguousarray(astronaut[:, ::-1])
    one_by_one = [predictor.predict(astronaut), predictor.predict(mirrored)]
    together = predictor.predict_batch([astronaut, mirrored])
    assert len(together) == 2
    for a, b in zip(together, one_by_one):
        assert len(a.faces) == len(b.faces) == 1
        assert a.faces[0].box == b.faces[0].box
        np.testing.assert_allclose(face_probs(a), face_probs(b), atol=1e-6)


def test_predict_crop_with_a_box_classifies_that_box(predictor, astronaut, face):
    result = predictor.predict_crop(astronaut, ASTRONAUT_FACE)
    assert result.box == ASTRONAUT_FACE
    assert result.detection_score is None
    np.testing.assert_allclose(list(result.probabilities.values()), predictor.probabilities([face])[0], atol=1e-6)
    whole = predictor.predict_crop(face)
    assert whole.box == (0, 0, face.width, face.height)
    with pytest.raises(EmotionError, match="outside"):
        predictor.predict_crop(astronaut, (500, 500, 40, 40))


def test_concurrent_predicts_from_four_threads_agree(predictor, astronaut):
    expected = face_probs(predictor.predict(astronaut))
    results, errors = [None] * 4, []

    def work(i):
        try:
            results[i] = [face_probs(predictor.predict(astronaut)) for _ in range(3)]
        except Exception as e:  # surfaced below: an exception in a thread would otherwise vanish
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for per_thread in results:
        for probs in per_thread:
            np.testing.assert_array_equal(probs, expected)


def test_serving_facts_have_one_default_shared_by_model_info_the_trainer_and_crop_face():
    import inspect

    from emotion.faces import crop_face
    from trainer.config import TrainConfig

    info, cfg = ModelInfo(architecture="small_cnn"), TrainConfig()
    for name in ("crop_margin", "crop_offset_y", "tta_flip", "uncertain_threshold"):
        assert getattr(cfg, name) == getattr(info, name), name
    crop_defaults = {k: p.default for k, p in inspect.signature(crop_face).parameters.items()}
    assert (crop_defaults["margin"], crop_defaults["align"], crop_defaults["offset_y"]) == (
        info.crop_margin, info.align_eyes, info.crop_offset_y)


def test_preprocessing_does_not_import_the_model_zoo():
    import subprocess
    import sys

    code = "import sys, emotion.preprocess, emotion.faces; print('timm' in sys.modules, 'safetensors' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
