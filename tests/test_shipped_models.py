"""The models shipped in models/: they load with no network and no flag, and still score what they scored.

A broken preprocessing path, a bad export or a wrong default fails here. The bars sit a few points under the
accuracy each model measured on the same fixed slice of FER+ validation when it was shipped.
"""
from __future__ import annotations

import numpy as np
import pytest

from conftest import NEEDS_TORCH
from emotion import Predictor, shipped_models
from emotion.sources import DEFAULT_FILE

SLICE = 600  # the first 600 rows of FER+ validation
# model folder -> minimum accuracy on SLICE (measured figure minus ~3 points; see README "Models")
BARS = {"small_cnn": 0.81, "efficientnet_lite0": 0.73, "resnet50": 0.78}  # measured 0.843, 0.758, 0.813
# The default model on the posed performers' validation photos, through the serving detector, rows whose raters
# agree with the pose (issue #11's acceptance set): measured 0.882 when shipped (every class's recall >= 0.74).
POSED_BAR = 0.84

shipped = shipped_models()


def test_a_default_model_ships_and_loads_without_flags():
    assert DEFAULT_FILE.is_file(), "models/DEFAULT must name the default model"
    assert DEFAULT_FILE.read_text().strip() in shipped
    predictor = Predictor.from_pretrained()
    assert predictor.source == shipped[DEFAULT_FILE.read_text().strip()]


@pytest.mark.parametrize("name", sorted(shipped))
def test_shipped_model_calls_the_astronaut_happy(name, astronaut):
    result = Predictor.from_pretrained(shipped[name]).predict(astronaut)
    assert len(result.faces) == 1
    face = result.faces[0]
    assert face.emotion == "happy", face.probabilities
    assert abs(sum(face.probabilities.values()) - 1) < 1e-5


@pytest.mark.parametrize("name", sorted(shipped))
def test_shipped_model_keeps_its_validation_accuracy(name, ferplus_dir):
    pytest.importorskip("torch", reason=f"the trainer's evaluation {NEEDS_TORCH}")
    from emotion.models import load_model
    from trainer.compare import load_eval_split
    from trainer.evaluation import predict_logits

    assert name in BARS, f"add a bar for {name} to BARS (measured accuracy on the slice minus ~3 points)"
    split = load_eval_split(str(ferplus_dir), "validation", SLICE)
    model, info, _ = load_model(shipped[name])
    accuracy = float(np.mean(predict_logits(model, split, info).argmax(1) == split.labels))
    assert accuracy >= BARS[name], f"{name}: {accuracy:.4f} < {BARS[name]}"
    # the serving path (Predictor.probabilities on PIL crops, in ONNX Runtime) agrees with the batched evaluation
    # path (torch)
    probs = Predictor.from_pretrained(shipped[name]).probabilities(split.images[:64])
    assert np.mean(probs.argmax(1) == predict_logits(model, split.subset(np.arange(64)), info).argmax(1)) == 1.0


def test_the_default_model_reads_posed_and_subtle_faces(posed_dir):
    """Photos of performers the model never saw (validation is split by performer), detected and cropped as serving
    does: the default must not call their subtle expressions neutral (the shipped FER+-only model scored 0.62)."""
    pytest.importorskip("torch", reason=f"the trainer's scoring {NEEDS_TORCH}")
    from trainer.compare import load_eval_split, score

    split = load_eval_split(str(posed_dir), "validation", photos=True)
    result = score(shipped[DEFAULT_FILE.read_text().strip()], split, detect_faces=True)
    assert result["faces_detected"] == len(split.labels)
    clean = result["splits"]["clean"]
    assert clean["accuracy"] >= POSED_BAR, clean["accuracy"]
    assert clean["per_class"]["neutral"]["recall"] >= 0.9  # calm faces stay neutral
    # issue #11: every posed class is read, the one clean fear row included (the three-stage fine-tune read it as
    # sad: fear recall 0.00; the model trained from scratch on the mix reads every class at 0.74 or more)
    recalls = {c: m["recall"] for c, m in clean["per_class"].items() if m["support"]}
    assert min(recalls.values()) >= 0.5, recalls


def test_the_default_model_reads_faces_cropped_looser_than_serving_crops_them(posed_dir):
    """Faces cut by another tool and sent as ready crops (a quarter of the box added on each side, not aligned: how
    film-face sets frame them) are read nearly as well as serving's own crop. The stage-2 model called more of them
    neutral and scored 0.569 on all 204 rows, the three-stage fine-tune 0.623; the shipped one measured 0.701 (0.770
    through serving's crop)."""
    pytest.importorskip("torch", reason=f"the trainer's scoring {NEEDS_TORCH}")
    from trainer.compare import framing_accuracy, load_eval_split, other_framings

    split = load_eval_split(str(posed_dir), "validation", photos=True)
    accuracy = framing_accuracy(shipped[DEFAULT_FILE.read_text().strip()], other_framings(split))
    assert accuracy["loose"] >= 0.66, accuracy
    assert accuracy["tight"] >= 0.72, accuracy  # tight unaligned 48 px crops: 0.760 (the fine-tunes: 0.716)


def test_the_default_model_reads_contempt_and_another_labs_closed_mouth_expressions(ckplus_dir, contempt_dir):
    """Issue #21: faces from sources the FER+ and posed-performer model never saw. The validation rows the transfer
    recipe cuts from the CK+ half (people it did not train on) and from the wild contempt crops: the previous default
    read 0.68 of the CK+ people (contempt 0.00, anger 0.33) and 0.03 of the contempt crops; the shipped one 0.889
    and 0.305 before its blendshape head, 0.889 and 0.380 with the head on mouth blendshapes, 0.881 and 0.443 with
    the head that also reads the mouth's asymmetry on the landmarks (emotion/face_geometry.py)."""
    pytest.importorskip("torch", reason=f"the trainer's evaluation {NEEDS_TORCH}")
    import yaml

    from emotion.models import load_model
    from trainer.config import CONFIG_DIR
    from trainer.evaluation import predict_logits
    from trainer.rows import load_raw
    from trainer.sources import SourceConfig, decode_rows, source_splits

    recipe = yaml.safe_load((CONFIG_DIR / "small_cnn_transfer.yaml").read_text())
    where = {"ckplus": ckplus_dir, "contempt": contempt_dir}
    model, info, _ = load_model(shipped[DEFAULT_FILE.read_text().strip()])
    accuracy = {}
    for entry in recipe["sources"]:
        if entry["name"] in where:
            src = SourceConfig.parse({**entry, "data": str(where[entry["name"]])})
            _, rows = source_splits(load_raw(src.data), src, recipe["seed"])
            split = decode_rows(rows, src, None, train=False)
            accuracy[src.name] = float((predict_logits(model, split, info).argmax(1) == split.labels).mean())
    assert accuracy["ckplus"] >= 0.85, accuracy
    assert accuracy["contempt"] >= 0.41, accuracy
