"""The blendshape head (emotion/blendshape_head.py): mirror-symmetric features, a config that is checked, a gate that
never changes a top class the full computation would give, the Predictor path, and its fit (trainer/blendshape_fit)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from conftest import NEEDS_TORCH

pytest.importorskip("torch", reason=f"the head's fit (trainer/blendshape_fit.py) {NEEDS_TORCH}")

from emotion.action_units import BLENDSHAPES, FaceActionUnits
from emotion.blendshape_head import BLENDSHAPE_FEATURES, FEATURES, PAIRS, BlendshapeHead, features
from emotion.face_geometry import MOUTH_PAIRS, N_LANDMARKS, REFERENCE
from emotion.errors import EmotionError
from emotion.info import ModelInfo
from emotion.labels import LABELS
from trainer import blendshape_fit as bf

from test_loso import load_tool

ROOT = Path(__file__).resolve().parents[1]
C = LABELS.index("contempt")


def shapes(rng, **set_) -> dict[str, float]:
    out = {n: float(v) for n, v in zip(BLENDSHAPES, rng.uniform(0, 1, len(BLENDSHAPES)))}
    out.update(set_)
    return out


def mirrored(blendshapes: dict[str, float]) -> dict[str, float]:
    out = dict(blendshapes)
    for left, right in PAIRS.values():
        out[left], out[right] = blendshapes[right], blendshapes[left]
    return out


def test_features_are_the_same_for_a_mirrored_face_and_asymmetry_is_the_sides_difference():
    face = shapes(np.random.default_rng(0), mouthSmileLeft=0.9, mouthSmileRight=0.2)
    assert features(face, BLENDSHAPE_FEATURES) == features(mirrored(face), BLENDSHAPE_FEATURES)
    got = dict(zip(BLENDSHAPE_FEATURES, features(face, BLENDSHAPE_FEATURES)))
    assert got["mouthSmile_max"] == 0.9 and got["mouthSmile_min"] == 0.2
    assert got["mouthSmile_asym"] == pytest.approx(0.7)
    assert got["mouthShift_asym"] == pytest.approx(abs(face["mouthLeft"] - face["mouthRight"]))
    assert got["mouthPucker"] == face["mouthPucker"]
    every = {n for pair in PAIRS.values() for n in pair} | {f for f in FEATURES if f in BLENDSHAPES}
    assert every == set(BLENDSHAPES)  # every blendshape is read by some feature


@pytest.mark.parametrize("bad, message", [
    ({"label": "smug", "weights": {"mouthSmile_asym": 1.0}, "gate": 1.0}, "not a label"),
    ({"label": "contempt", "weights": {"mouthSmirk_asym": 1.0}, "gate": 1.0}, "unknown features mouthSmirk_asym"),
    ({"label": "contempt", "weights": {"mouthSmile_asym": float("nan")}, "gate": 1.0}, "finite"),
    ({"label": "contempt", "weights": {"mouthSmile_asym": 1.0}, "gate": -1.0}, "gate >= 0"),
    ({"label": "contempt", "weights": {}, "gate": 1.0}, "map feature names"),
    ({"label": "contempt", "weights": {"mouthSmile_asym": 1.0}, "gate": 1.0}, "needs label, weights, gate and"),
    ({"label": "contempt", "weights": {"mouthSmile_asym": 1.0}, "gate": 1.0, "logit_bias": {},
      "centre": {"mouthPucker": 0.1}}, "centre must map some of its weights"),
    ({"label": "contempt", "weights": {"lm61_291_q": 1.0}, "gate": 1.0}, "unknown features lm61_291_q"),
    ({"label": "contempt", "weights": {"mouthSmile_asym": 1.0}, "gate": 1.0, "logit_bias": {"smug": 1.0}},
     "logit_bias must map labels"),
])
def test_a_bad_head_in_config_json_is_refused_with_the_fix(bad, message):
    if "logit_bias" not in bad and "needs label" not in message:
        bad = {**bad, "logit_bias": {}}
    with pytest.raises(EmotionError, match=message):
        ModelInfo("small_cnn", blendshape_head=bad)


def test_the_head_travels_in_config_json():
    head = {"label": "contempt", "weights": {"mouthSmile_asym": 1.5, "mouthPucker": -0.5}, "gate": 1.5,
            "logit_bias": {"contempt": -0.5, "neutral": 0.5}}
    info = ModelInfo("small_cnn", blendshape_head=head)
    back = ModelInfo.from_config(json.loads(json.dumps(info.to_config())))
    assert back.blendshape_head == head
    assert back.head() == BlendshapeHead("contempt", head["weights"], 1.5, head["logit_bias"])
    assert ModelInfo("small_cnn").head() is None


class FakeReader:
    """Read function standing in for the landmarker: a fixed face per crop width, counting the crops it saw."""

    def __init__(self, by_width: dict[int, dict | None]):
        self.by_width, self.seen = by_width, []

    def __call__(self, crop, boxes):
        assert boxes == [(0, 0, crop.width, crop.height)]  # the whole crop is the face, as serving cuts it
        self.seen.append(crop.width)
        return [FaceActionUnits(None, self.by_width[crop.width], None if self.by_width[crop.width] else "none")]


def test_only_faces_the_gate_lets_through_are_read_and_only_the_label_moves():
    head = BlendshapeHead("contempt", {"mouthSmile_asym": 2.0}, gate=2.0)
    rng = np.random.default_rng(1)
    smirk = shapes(rng, mouthSmileLeft=0.8, mouthSmileRight=0.0)  # residual 1.6
    logits = np.zeros((3, 8), np.float32)
    logits[0, 5] = 1.0  # contempt margin -1: within the gate
    logits[1, 5] = 3.0  # margin -3: the residual (at most 2) could not make it contempt
    logits[2, 5] = 1.0  # within the gate, but the landmarker finds no face
    crops = [Image.new("RGB", (w, w)) for w in (40, 41, 42)]
    read = FakeReader({40: smirk, 41: smirk, 42: None})
    out = head.apply(logits, crops, LABELS, read)
    assert read.seen == [40, 42]
    assert out[0, C] == pytest.approx(1.6) and out[0].argmax() == C  # the smirk turns it contempt
    np.testing.assert_array_equal(out[1:], logits[1:])
    np.testing.assert_array_equal(np.delete(out[0], C), np.delete(logits[0], C))


def test_the_heads_biases_replace_the_models_on_every_face_and_only_with_the_head():
    head = BlendshapeHead("contempt", {"mouthSmile_asym": 1.0}, gate=1.5, logit_bias={"contempt": -0.5, "neutral": 0.5})
    logits = np.zeros((2, 8), np.float32)
    logits[:, 5] = 0.2  # the model's own bias: neutral +0.2, served in these logits
    logits[1, 4] = 9.0  # far from contempt: outside the gate, never read
    read = FakeReader({40: shapes(np.random.default_rng(4), mouthSmileLeft=0.5, mouthSmileRight=0.0)})
    out = head.apply(logits, [Image.new("RGB", (40, 40)), Image.new("RGB", (41, 41))], LABELS, read, {"neutral": 0.2})
    assert read.seen == [40]
    assert out[1, 5] == pytest.approx(0.5) and out[1, C] == pytest.approx(-0.5)
    assert out[0, 5] == pytest.approx(0.5) and out[0, C] == pytest.approx(-0.5 + 0.5)


def test_the_gate_keeps_every_top_class_of_the_full_computation():
    rng = np.random.default_rng(2)
    weights = {"mouthSmile_asym": 1.5, "mouthPress_max": 0.8, "mouthPucker": -1.0}
    faces = [shapes(rng) for _ in range(200)]
    head = BlendshapeHead("contempt", weights, gate=max(0.0, max(BlendshapeHead("contempt", weights, 0).residual(f)
                                                                 for f in faces)))
    logits = rng.normal(0, 1.5, (200, 8)).astype(np.float32)
    crops = [Image.new("RGB", (30 + i, 30 + i)) for i in range(200)]
    gated = head.apply(logits, crops, LABELS, FakeReader({30 + i: f for i, f in enumerate(faces)}))
    full = logits.copy()
    full[:, C] += np.array([head.residual(f) for f in faces], np.float32)
    np.testing.assert_array_equal(gated.argmax(1), full.argmax(1))


def face_points(corner_raise: float) -> np.ndarray:
    """Landmarks of a symmetric face (the reference's rigid points) with mouth corner 61 raised by `corner_raise`."""
    points = np.zeros((N_LANDMARKS, 3))
    for i, p in REFERENCE.items():
        points[i] = p
    for k, (i, j) in enumerate(MOUTH_PAIRS):
        points[i] = (-0.3 - 0.01 * k, 0.6, 0.0)
        points[j] = (0.3 + 0.01 * k, 0.6, 0.0)
    points[61, 1] -= corner_raise
    return points


class LandmarkReader(FakeReader):
    """FakeReader whose faces also carry landmarks."""

    def __init__(self, by_width: dict[int, tuple | None]):
        super().__init__({w: f[0] if f else None for w, f in by_width.items()})
        self.points = {w: f[1] for w, f in by_width.items() if f}

    def __call__(self, crop, boxes):
        found = super().__call__(crop, boxes)[0]
        return [FaceActionUnits(None, found.blendshapes, found.reason, self.points.get(crop.width))]


def test_a_geometry_head_reads_the_landmarks_minus_its_centre():
    rng = np.random.default_rng(5)
    head = BlendshapeHead("contempt", {"lm61_291_y": 10.0, "mouthSmile_asym": 1.0}, gate=5.0,
                          centre={"lm61_291_y": 0.01, "mouthSmile_asym": 0.1})
    smirk = shapes(rng, mouthSmileLeft=0.5, mouthSmileRight=0.1)
    assert head.needs_landmarks and head.residual(smirk, face_points(0.05)) == pytest.approx(
        10.0 * (0.05 - 0.01) + (0.4 - 0.1))
    with pytest.raises(EmotionError, match="need the face's landmarks"):
        head.residual(smirk)
    logits = np.zeros((2, 8), np.float32)
    read = LandmarkReader({40: (smirk, face_points(0.05)), 41: None})
    out = head.apply(logits, [Image.new("RGB", (w, w)) for w in (40, 41)], LABELS, read)
    assert out[0, C] == pytest.approx(0.7) and np.array_equal(out[1], logits[1])  # no face found: nothing added
    flat = LandmarkReader({40: (smirk, np.zeros((N_LANDMARKS, 3))), 41: (smirk, np.full((N_LANDMARKS, 3), np.nan))})
    out = head.apply(logits, [Image.new("RGB", (w, w)) for w in (40, 41)], LABELS, flat)
    np.testing.assert_array_equal(out, logits)  # landmarks that are not a face: no reading, and no error for the caller
    scores = np.array([[smirk[n] for n in BLENDSHAPES]] * 2, np.float32)
    x = bf.feature_matrix((scores, np.stack([face_points(0.05), np.zeros((N_LANDMARKS, 3))])), ["lm61_291_y"])
    assert x[0, 0] == pytest.approx(0.05) and np.isnan(x[1, 0])  # the fit skips such a row as serving does
    assert BlendshapeHead.from_dict(head.as_dict(), LABELS) == head


def test_the_predictor_adds_the_head_on_real_faces(tiny_model, tmp_path):
    from emotion.predict import Predictor

    folder = tmp_path / "with_head"
    shutil.copytree(tiny_model, folder)
    config = json.loads((folder / "config.json").read_text())
    plain = Predictor.from_pretrained(f"local-dir:{folder}")
    config.setdefault("emotion", {})["blendshape_head"] = {"label": "contempt", "weights": {"mouthSmile_max": 3.0},
                                                           "gate": 100.0, "logit_bias": {}}
    (folder / "config.json").write_text(json.dumps(config))
    headed = Predictor.from_pretrained(f"local-dir:{folder}")
    photo = Image.open(ROOT / "examples" / "astronaut.jpg").convert("RGB")
    face = photo.crop((178, 80, 272, 180))  # her smile: mouthSmile well above 0
    blank = Image.new("RGB", (96, 96), (128, 128, 128))  # no face: no residual
    p, q = plain.probabilities([face, blank]), headed.probabilities([face, blank])
    smile = headed.read_action_units(face, [(0, 0, face.width, face.height)])[0].blendshapes
    want = np.log(q[0] / p[0]) * headed.info.temperature  # log-probability shift = logit shift up to a constant
    assert want[C] - np.delete(want, C).mean() == pytest.approx(3.0 * max(smile["mouthSmileLeft"],
                                                                           smile["mouthSmileRight"]), abs=1e-3)
    np.testing.assert_allclose(q[1], p[1], atol=1e-6)
    off = Predictor.from_pretrained(f"local-dir:{folder}", blendshape_head=False)
    np.testing.assert_allclose(off.probabilities([face]), p[:1], atol=1e-6)  # the caller may skip it


def test_fit_weights_finds_the_feature_that_tells_the_label_apart():
    rng = np.random.default_rng(3)
    n = 2000
    positive = rng.random(n) < 0.3
    x = np.c_[np.where(positive, rng.uniform(0.4, 1, n), rng.uniform(0, 0.6, n)), rng.uniform(0, 1, n)]
    offset = rng.normal(-1, 1, n)  # the classifier's margin: uninformative here
    source = rng.integers(0, 2, n)
    w = bf.row_weights(positive, source)
    assert w[positive].sum() == pytest.approx(0.5)
    assert w[~positive & (source == 0)].sum() == pytest.approx(w[~positive & (source == 1)].sum())
    drawn = bf.row_weights(positive, source, {0: 0.3, 1: 0.1})  # the recipe draws source 0 three times as often
    assert drawn[~positive & (source == 0)].sum() == pytest.approx(3 * drawn[~positive & (source == 1)].sum())
    assert drawn.sum() == pytest.approx(1.0)
    weights = bf.fit_weights(x.astype(np.float32), offset, positive, w)
    assert weights[0] > 2.0 and abs(weights[1]) < 0.5 * weights[0]
    head = bf.make_head("contempt", ["mouthSmile_asym", "mouthPucker"], weights, x, LABELS)
    assert head.gate >= (x @ weights).max() and head.gate - (x @ weights).max() < 1e-3
    median = bf.make_head("contempt", ["mouthSmile_asym", "mouthPucker"], weights, x, LABELS, gate_quantile=0.5)
    assert median.gate == pytest.approx(np.median(x @ weights), abs=1e-4)
    logits = rng.normal(0, 1, (n, 8))
    out, rows = bf.served(logits, x @ weights, median, LABELS)  # as serving: the residual only past the gate
    margin = logits[:, C] - np.delete(logits, C, 1).max(1)
    assert rows == np.flatnonzero(margin > -median.gate).tolist() and 0 < len(rows) < n
    np.testing.assert_allclose(out[:, C] - logits[:, C], np.where(margin > -median.gate, x @ weights, 0), atol=1e-9)
    with pytest.raises(ValueError, match="quantile"):
        bf.make_head("contempt", ["mouthSmile_asym", "mouthPucker"], weights, x, LABELS, gate_quantile=0)
    with pytest.raises(ValueError, match="faces of the label and faces of other labels"):
        bf.fit_weights(x, offset, np.zeros(n, bool), w)


def test_the_fit_tool_writes_a_head_the_predictor_serves(ckplus_dir, contempt_dir, tiny_model, tmp_path, capsys):
    cfg = {
        "model": "small_cnn", "output_dir": str(tmp_path / "run"), "img_size": 48, "neutral_bias": "fit",
        "contempt_bias": "fit", "select_on": {"validation": 0.5, "contempt": 0.5}, "select_metric": "accuracy",
        "sources": [{"name": "ckplus", "data": str(ckplus_dir), "weight": 0.5, "classes": list(LABELS),
                     "group_column": "subject", "val_fraction": 0.1},
                    {"name": "contempt", "data": str(contempt_dir), "weight": 0.5, "classes": list(LABELS),
                     "val_fraction": 0.01}],
    }
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    folder = tmp_path / "model"
    shutil.copytree(tiny_model, folder)
    (folder / "eval_results.json").write_text(json.dumps({"splits": {"validation": {"accuracy": 2.0}}}))
    tool = load_tool("fit_blendshape_head")
    cache, fit = tmp_path / "faces.npz", ["--config", str(path), "--max-rows", "25", "--write"]
    assert tool.main([*fit, "--model", str(folder), "--cache", str(cache)]) == 0
    out = capsys.readouterr().out
    assert "| validation |" in out and "| contempt |" in out
    record = json.loads((folder / "blendshape_head.json").read_text())
    assert record["train_rows"] == 50 and record["train_positives"] >= 25
    assert record["gate_quantile"] == 0.98 and 0 <= record["gated_share"]["contempt"] <= 1
    info = ModelInfo.from_config(json.loads((folder / "config.json").read_text()))
    assert info.head().as_dict() == record["head"] and info.temperature == record["temperature"]
    assert info.logit_bias == {}  # the model's own biases stay (for serving without the head)
    assert {f[:2] for f in record["head"]["weights"]} == {"mo", "lm"}  # the mouth's blendshapes and asymmetries
    results = json.loads((folder / "eval_results.json").read_text())  # the card's numbers follow what is served
    assert set(results["splits"]) >= {"validation", "contempt"} and results["temperature"] == info.temperature
    assert results["splits"]["contempt"]["accuracy"] == pytest.approx(record["after"]["contempt"]["accuracy"])
    smile = tmp_path / "smile"
    shutil.copytree(tiny_model, smile)
    own = json.loads((smile / "config.json").read_text())
    own.setdefault("emotion", {})["logit_bias"] = {"neutral": 0.3}
    (smile / "config.json").write_text(json.dumps(own))
    assert (cached := np.load(cache)["keys"].size) >= 50  # the training rows and the reports, read once
    assert tool.main([*fit, "--model", str(smile), "--cache", str(cache), "--features", "mouthSmile",
                      "--floor", "validation=0.2", "--keep-bias", "neutral"]) == 0
    assert np.load(cache)["keys"].size == cached  # the same faces: nothing read again
    assert json.loads((smile / "blendshape_head.json").read_text())["select_floor"] == {"validation": 0.2}
    capsys.readouterr()
    head = ModelInfo.from_config(json.loads((smile / "config.json").read_text())).head()
    assert not head.needs_landmarks and set(head.weights) == {"mouthSmile_max", "mouthSmile_min", "mouthSmile_asym"}
    assert head.logit_bias["neutral"] == 0.3  # kept as the model serves it; only contempt's was fitted again
    assert set(head.centre) == set(head.weights)
    lm = info.head()
    assert lm.needs_landmarks and lm.centre["lm61_291_y"] > 0  # no real face is symmetric
    with pytest.raises(SystemExit):
        tool.main(["--config", str(path), "--model", str(tmp_path / "nowhere")])
    assert "no config.json there" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        tool.main(["--config", str(path), "--model", str(folder), "--features", "ear"])
    assert "no blendshape feature starts with ear" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        tool.main(["--config", str(path), "--model", str(folder), "--gate-quantile", "1.5"])
    assert "--gate-quantile must be above 0 and at most 1" in capsys.readouterr().err
    for floor, message in (("validation=high", "--floor takes REPORT=ACCURACY"), ("validation=1.5", "between 0 and 1"),
                           ("ferplus=0.8", "--floor names no report of")):
        with pytest.raises(SystemExit):
            tool.main(["--config", str(path), "--model", str(folder), "--floor", floor])
        assert message in capsys.readouterr().err


def test_the_cli_serves_the_head_unless_told_not_to(tiny_model, tmp_path, capsys):
    from emotion.__main__ import main

    folder = tmp_path / "with_head"
    shutil.copytree(tiny_model, folder)
    config = json.loads((folder / "config.json").read_text())
    config.setdefault("emotion", {})["blendshape_head"] = {"label": "contempt", "weights": {"mouthSmile_max": 3.0},
                                                           "gate": 100.0, "logit_bias": {}}
    (folder / "config.json").write_text(json.dumps(config))
    photo = str(ROOT / "examples" / "astronaut.jpg")
    read = {}
    for flags in ([], ["--no-blendshape-head"]):
        assert main(["predict", photo, "--model", f"local-dir:{folder}", "--json", *flags]) == 0
        read[bool(flags)] = json.loads(capsys.readouterr().out)["faces"][0]["probabilities"]["contempt"]
    assert read[False] > read[True] + 0.01  # her smile raises contempt's logit by 3 x mouthSmile_max


class CountingReader:
    """A landmarker stand-in: a face on every image but the gray ones, counting its reads."""

    def __init__(self):
        self.reads = 0

    def read(self, image, boxes):
        from types import SimpleNamespace

        self.reads += 1
        value = float(np.asarray(image).mean()) / 255
        if image.mode == "L":
            return [SimpleNamespace(blendshapes=None, landmarks=None)]
        return [SimpleNamespace(blendshapes={n: value for n in bf.BLENDSHAPES},
                                landmarks=np.full((478, 3), value, np.float32))]


def test_the_face_cache_reads_each_image_once_across_runs_and_only_for_its_landmarker(tmp_path, monkeypatch):
    """tools/fit_blendshape_head.py --cache: a rerun (another L2, gate or feature set) skips the landmarker, which is
    most of the tool's time; rows written by another landmarker, or an unreadable file, are never used."""
    images = [Image.new("RGB", (32, 32), (10 * i, 20, 30)) for i in range(3)] + [Image.new("L", (32, 32), 7)]
    path = tmp_path / "cache" / "faces.npz"
    reader = CountingReader()
    first = bf.read_faces(images, reader, bf.FaceCache(path))
    assert reader.reads == 4 and path.is_file()
    again = bf.read_faces(images, reader, bf.FaceCache(path))
    assert reader.reads == 4  # nothing read again
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)  # NaN rows (no face) included
    assert np.isnan(again[0][3]).all() and again[0][1, 0] == pytest.approx(20 / 255)
    bf.read_faces([*images, Image.new("RGB", (32, 32), (1, 2, 3))], reader, bf.FaceCache(path))
    assert reader.reads == 5  # only the new image
    monkeypatch.setattr(bf, "MODEL_SHA256", "another landmarker")
    bf.read_faces(images, reader, bf.FaceCache(path))
    assert reader.reads == 9
    path.write_bytes(b"not a cache")
    assert bf.FaceCache(path).rows == {}
    bf.read_faces(images[:1], reader)  # no cache: read every time
    bf.read_faces(images[:1], reader)
    assert reader.reads == 11


def test_a_face_read_killed_partway_keeps_the_faces_saved_before(tmp_path):
    """Reading 27k FER+ faces takes ~7 min: the cache is saved every `save_every` new faces, so a killed run (here
    the landmarker failing on the fifth image) starts again from what it had read."""
    class DiesOnFifth(CountingReader):
        def read(self, image, boxes):
            if self.reads == 4:
                raise KeyboardInterrupt
            return super().read(image, boxes)

    images = [Image.new("RGB", (32, 32), (10 * i, 20, 30)) for i in range(6)]
    path = tmp_path / "faces.npz"
    with pytest.raises(KeyboardInterrupt):
        bf.read_faces(images, DiesOnFifth(), bf.FaceCache(path), save_every=2)
    assert len(bf.FaceCache(path).rows) == 4
    reader = CountingReader()
    bf.read_faces(images, reader, bf.FaceCache(path), save_every=2)
    assert reader.reads == 2
