"""Training on several data sets at once: mixing by weight, soft labels from votes or ratings, classes a source
lacks, and one validation report per source (trainer/sources.py)."""
import json
from pathlib import Path

import numpy as np
import pytest

from conftest import NEEDS_TORCH

torch = pytest.importorskip("torch", reason=f"the trainer {NEEDS_TORCH}")

import yaml  # noqa: E402
from PIL import Image

from emotion.labels import LABELS
from trainer.__main__ import main
from trainer.data import ResumableSampler, load_raw, label_ids
from trainer.sources import SourceConfig, class_mask, raw_votes, soft_targets
from trainer.train import soft_cross_entropy

POSED_NAMES = ["anger", "disgust", "fear", "happy", "sad", "surprise"]  # the raters' options: no neutral, no contempt


def bar(k: int, rng: np.random.Generator) -> Image.Image:
    img = rng.normal(60, 20, (48, 48))
    img[3 + 5 * k: 6 + 5 * k, 6:42] = 220
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "L")


def write_parquet_source(root: Path, classes: list[str], extra, per_class: int, seed: int) -> Path:
    """A parquet data set (train + validation shards) of bar faces for `classes`, with `extra(label, i)` columns."""
    import datasets

    rng = np.random.default_rng(seed)
    feats = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=list(LABELS)),
                               **extra(None, None)})
    for split, n in (("train", per_class), ("validation", per_class // 2)):
        rows = {"image": [], "label": [], **{k: [] for k in extra(None, None)}}
        for name in classes:
            for i in range(n):
                rows["image"].append(bar(LABELS.index(name), rng))
                rows["label"].append(LABELS.index(name))
                for k, v in extra(name, i).items():
                    rows[k].append(v)
        root.mkdir(parents=True, exist_ok=True)
        datasets.Dataset.from_dict(rows, features=feats).to_parquet(str(root / f"{split}-0000-of-0001.parquet"))
    return root


def votes(name, i):
    """FER+-like: 10 votes per face, 8 for the shown class and 2 for neutral."""
    import datasets

    if name is None:
        return {"votes": datasets.Sequence(datasets.Value("int32"), length=8)}
    v = [0] * 8
    v[LABELS.index(name)] += 8
    v[LABELS.index("neutral")] += 2
    return {"votes": v}


def ratings(name, i):
    """Performer-like: raters' shares over 6 emotions (null for calm faces), and whether they agree with the pose."""
    import datasets

    if name is None:
        return {"shares": datasets.Sequence(datasets.Value("float32"), length=6), "agrees": datasets.Value("bool")}
    if name == "neutral":
        return {"shares": None, "agrees": None}
    shares = [0.1] * 6
    shares[POSED_NAMES.index(name)] = 0.5
    return {"shares": shares, "agrees": i % 4 != 0}


@pytest.fixture(scope="module")
def two_sources(tmp_path_factory):
    root = tmp_path_factory.mktemp("sources")
    a = write_parquet_source(root / "a", list(LABELS), votes, per_class=16, seed=0)
    b = write_parquet_source(root / "b", POSED_NAMES + ["neutral"], ratings, per_class=12, seed=1)
    return a, b


def targets_of(ds, labels, names, src):
    """`soft_targets` on `ds`'s votes, read as `decode_rows` reads them."""
    return soft_targets(raw_votes(ds, names, src), labels, names, src)


def test_ratings_become_soft_targets_and_calm_faces_keep_their_label(two_sources):
    ds = load_raw(str(two_sources[1]))["train"]
    labels, names = label_ids(ds)
    src = SourceConfig("b", str(two_sources[1]), soft_column="shares", soft_names=POSED_NAMES)
    t = targets_of(ds, labels, names, src)
    angry = np.flatnonzero(labels == LABELS.index("anger"))[0]
    assert t[angry, LABELS.index("anger")] == pytest.approx(0.5)
    assert t[angry, LABELS.index("disgust")] == pytest.approx(0.1)
    assert t[angry, LABELS.index("neutral")] == 0 and t[angry, LABELS.index("contempt")] == 0
    calm = np.flatnonzero(labels == LABELS.index("neutral"))
    assert (t[calm] == np.eye(8)[LABELS.index("neutral")]).all()  # raters had no neutral option: the label stands
    np.testing.assert_allclose(t.sum(1), 1, rtol=1e-6)
    mask = class_mask(labels, src)  # no contempt row in this source: it cannot speak for contempt
    assert not mask[LABELS.index("contempt")] and mask.sum() == 7


def test_vote_weights_and_vote_positive_turn_a_crowd_frown_away_from_neutral(tmp_path):
    """FER+'s crowd calls a closed-mouth frown neutral (issue #21): neutral votes can count less, or every emotion with
    enough of the votes can be a positive. 7 neutral / 3 anger -> 0.54 / 0.46 at weight 0.5, 0.5 / 0.5 at >= 30%."""
    import datasets

    v = [0] * 8
    v[LABELS.index("neutral")], v[LABELS.index("anger")] = 7, 3
    w = [0] * 8
    w[LABELS.index("neutral")], w[LABELS.index("sad")] = 9, 1
    ds = datasets.Dataset.from_dict({"votes": [v, w]})
    labels = np.array([LABELS.index("neutral")] * 2)
    neutral, anger, sad = (LABELS.index(n) for n in ("neutral", "anger", "sad"))
    plain = targets_of(ds, labels, list(LABELS), SourceConfig("f", "x"))
    assert plain[0, neutral] == pytest.approx(0.7) and plain[0, anger] == pytest.approx(0.3)
    weighted = targets_of(ds, labels, list(LABELS), SourceConfig("f", "x", vote_weights={"neutral": 0.5}))
    assert weighted[0, neutral] == pytest.approx(3.5 / 6.5) and weighted[0, anger] == pytest.approx(3 / 6.5)
    positive = targets_of(ds, labels, list(LABELS), SourceConfig("f", "x", vote_positive=0.3))
    assert positive[0, neutral] == positive[0, anger] == pytest.approx(0.5)
    assert positive[1, neutral] == 1 and positive[1, sad] == 0  # one vote in ten is not a positive
    both = targets_of(ds, labels, list(LABELS), SourceConfig("f", "x", vote_weights={"neutral": 0.2},
                                                              vote_positive=0.3))
    assert both[1, neutral] == both[1, sad] == pytest.approx(0.5)  # 1.8 vs 1 weighted votes: both >= 30%
    for t in (weighted, positive, both):
        np.testing.assert_allclose(t.sum(1), 1, rtol=1e-6)
    for bad in ({"vote_weights": {"neutral": -1}}, {"vote_weights": {"bored": 0.5}}, {"vote_positive": 0},
                {"vote_positive": 1.5}):
        with pytest.raises(Exception, match="vote_weights|vote_positive|bored"):
            SourceConfig("f", "x", **bad)


def test_a_source_without_contempt_teaches_nothing_about_contempt():
    logits = torch.zeros(2, 8, requires_grad=True)
    target = torch.zeros(2, 8)
    target[:, LABELS.index("anger")] = 1
    mask = torch.ones(2, 8, dtype=torch.bool)
    mask[0, LABELS.index("contempt")] = False  # row 0 from the posed source, row 1 from FER+
    soft_cross_entropy(logits, target, 0.1, None, mask).backward()
    assert logits.grad[0, LABELS.index("contempt")] == 0  # not pushed down
    assert logits.grad[1, LABELS.index("contempt")] > 0  # FER+ knows contempt: pushed down for an angry face
    assert logits.grad[0, LABELS.index("neutral")] > 0  # the posed source does say "not neutral"


def test_one_vs_rest_charges_a_face_for_the_contempt_it_is_given_and_only_where_its_source_speaks_for_it():
    c, anger = LABELS.index("contempt"), LABELS.index("anger")
    logits = torch.zeros(3, 8)
    logits[:, c] = torch.tensor([6.0, 6.0, 6.0])  # all three look like contempt to the model
    target = torch.zeros(3, 8)
    target[0, anger] = target[1, anger] = 1  # rows 0-1: angry faces (row 1's source has no contempt)
    target[2, c] = 1  # row 2: a contempt face
    mask = torch.ones(3, 8, dtype=torch.bool)
    mask[1, c] = False
    plain = torch.stack([soft_cross_entropy(logits[i:i + 1], target[i:i + 1], 0.0, None, mask[i:i + 1])
                         for i in range(3)])
    ovr = torch.stack([soft_cross_entropy(logits[i:i + 1], target[i:i + 1], 0.0, None, mask[i:i + 1], {c: 2.0})
                       for i in range(3)])
    p = torch.softmax(logits[0], 0)[c]
    assert ovr[0] - plain[0] == pytest.approx(float(-2.0 * torch.log(1 - p)), rel=1e-4)  # -w log(1 - p)
    assert ovr[1] == pytest.approx(float(plain[1]))  # its source does not speak for contempt: no charge
    assert ovr[2] - plain[2] == pytest.approx(float(-2.0 * torch.log(p)), rel=1e-4)  # a contempt face: -w log p
    far = torch.zeros(1, 8)
    far[0, c] = 40.0  # p = 1 - 7e-18 in float32: log(1 - p) must stay finite and large
    extra = soft_cross_entropy(far, target[:1], 0.0, None, None, {c: 1.0}) - soft_cross_entropy(far, target[:1],
                                                                                                0.0, None, None)
    assert torch.isfinite(extra) and float(extra) == pytest.approx(40 - np.log(7), rel=1e-3)
    from trainer.config import TrainConfig

    for bad in ({"bored": 1.0}, {"contempt": -1}):
        with pytest.raises(Exception, match="one_vs_rest"):
            TrainConfig(one_vs_rest=bad)


def test_the_sampler_mixes_sources_by_weight_and_replays_after_resume():
    source = np.repeat([0, 1], [900, 100])
    labels = np.arange(1000) % 8
    sampler = ResumableSampler(labels, seed=3, source=source, weights=[0.75, 0.25])
    sampler.set_epoch(2)
    keys = list(sampler)
    rows = np.array([k[0] for k in keys])
    assert len(rows) == 1000 and (source[rows] == 1).sum() == 250  # 25% of the draws, each small-source row ~2.5x
    sampler.set_epoch(2, start=400)
    assert list(sampler) == keys[400:]  # same rows and the same augmentation keys from where it stopped


def mixed_config(a: Path, b: Path, out: Path, **extra) -> dict:
    return {
        "model": "small_cnn", "output_dir": str(out), "img_size": 24, "epochs": 2, "batch_size": 16,
        "lr": 0.003, "warmup_epochs": 0.1, "scale_min": 1.0, "rotate": 0, "export_dtype": "float32",
        "augment": ["light", "degrade", "occlusion"], "neutral_bias": "fit",
        "sources": [{"name": "fer", "data": str(a), "weight": 0.7},
                    {"name": "posed", "data": str(b), "weight": 0.3, "soft_column": "shares",
                     "soft_names": POSED_NAMES, "clean_column": "agrees"}],
        "select_on": {"validation": 0.5, "posed_clean": 0.5}, "select_metric": "accuracy",
        "select_floor": {"validation": 0.0}, **extra,
    }


def train_yaml(config: dict, path: Path) -> int:
    path.write_text(yaml.safe_dump(config))
    return main(["train", "--config", str(path), "--workers", "0"])


@pytest.fixture(scope="module")
def mixed_run(two_sources, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("mixed")
    assert train_yaml(mixed_config(*two_sources, root / "run"), root / "mixed.yaml") == 0
    return root / "run"


def test_training_on_two_sources_reports_each_and_selects_on_the_mix(mixed_run):
    tmp_path = mixed_run.parent
    results = json.loads((tmp_path / "run" / "export" / "eval_results.json").read_text())
    splits = results["splits"]
    assert {"validation", "posed", "posed_clean"} <= set(splits)
    assert splits["validation"]["n"] == 8 * 8 and splits["posed"]["n"] == 7 * 6
    assert splits["posed_clean"]["n"] == 7 * 6 - 6 * 2  # 2 of 6 rows per emotion disagree; calm rows stay
    assert splits["posed"]["per_class"]["contempt"]["support"] == 0
    sources = {s["name"]: s for s in results["dataset"]["sources"]}
    assert "contempt" not in sources["posed"]["classes"] and len(sources["fer"]["classes"]) == 8
    for epoch in results["history"]:
        r = epoch["reports"]
        assert epoch["select"] == pytest.approx((r["validation"]["accuracy"] + r["posed_clean"]["accuracy"]) / 2)
    best = max(results["history"], key=lambda h: h["select"])
    assert results["best_epoch"] == best["epoch"]
    sweep = results["neutral_bias_sweep"]
    assert {g["bias"] for g in sweep["grid"]} >= {0.5, 0.0, -1.0, -2.0}
    assert sweep["chosen"] == max(sweep["grid"], key=lambda g: (round(g["select"], 6), -abs(g["bias"])))["bias"]
    config_json = json.loads((tmp_path / "run" / "export" / "config.json").read_text())
    assert config_json["emotion"]["logit_bias"] == ({"neutral": sweep["chosen"]} if sweep["chosen"] else {})


def test_a_fine_tune_is_averaged_with_its_starting_weights_at_the_best_mix(two_sources, mixed_run, tmp_path):
    config = mixed_config(*two_sources, tmp_path / "tuned", epochs=1, init=f"local-dir:{mixed_run / 'export'}",
                          interpolate="fit", interpolate_grid=[0.5, 0.75, 1.0])
    assert train_yaml(config, tmp_path / "tune.yaml") == 0
    results = json.loads((tmp_path / "tuned" / "export" / "eval_results.json").read_text())
    grid = results["interpolation"]["grid"]
    assert [g["alpha"] for g in grid] == [0.5, 0.75, 1.0]  # the config's weights (default 0.4 ... 1.0 by 0.1)
    best = max(grid, key=lambda g: (round(g["select"], 6), g["alpha"]))
    assert results["interpolation"]["chosen"] == best["alpha"]
    # the export holds the chosen average: its scores are the grid's at that weight and bias
    assert results["splits"]["posed_clean"]["accuracy"] == pytest.approx(best["reports"]["posed_clean"]["accuracy"])
    assert results["neutral_bias_sweep"]["chosen"] == best["bias"]


def test_rerunning_a_finished_fine_tune_scores_no_weight_average_again(two_sources, mixed_run, tmp_path, monkeypatch):
    """The averages scored by a run are kept beside its checkpoints: rerunning the finished run (or one killed in
    the sweep) only scores those it lacks; before, every rerun redid the whole sweep (~9 minutes for resnet50)."""
    from trainer import posthoc

    config = mixed_config(*two_sources, tmp_path / "tuned", epochs=1, init=f"local-dir:{mixed_run / 'export'}",
                          interpolate="fit", interpolate_grid=[0.5, 1.0])
    assert train_yaml(config, tmp_path / "tune.yaml") == 0
    first = json.loads((tmp_path / "tuned" / "export" / "eval_results.json").read_text())
    scored = []
    real = posthoc.predict_logits
    monkeypatch.setattr(posthoc, "predict_logits", lambda *a, **k: scored.append(1) or real(*a, **k))
    assert train_yaml(config, tmp_path / "tune.yaml") == 0
    again = json.loads((tmp_path / "tuned" / "export" / "eval_results.json").read_text())
    assert scored == [] and again["interpolation"]["chosen"] == first["interpolation"]["chosen"]
    assert again["interpolation"]["grid"] == first["interpolation"]["grid"]
    # a sweep killed after its first average: the rerun scores the second one only (each report once)
    cache = tmp_path / "tuned" / "checkpoints" / "interpolation.json"
    kept = json.loads(cache.read_text())
    cache.write_text(json.dumps({**kept, "rows": kept["rows"][:1]}))
    assert train_yaml(config, tmp_path / "tune.yaml") == 0
    assert len(scored) == 2  # the validation and posed reports of the 1.0 average
    # other weights (or another way of judging them) never reuse a row
    cache.write_text(json.dumps({**kept, "key": "0" * 64}))
    scored.clear()
    assert train_yaml(config, tmp_path / "tune.yaml") == 0
    assert len(scored) == 4


@pytest.mark.parametrize("grid", [[], [0.0, 0.5], [0.5, 1.2]])
def test_an_interpolation_grid_outside_zero_to_one_is_refused(grid):
    from trainer.config import ConfigError, TrainConfig

    with pytest.raises(ConfigError, match="interpolate_grid"):
        TrainConfig(interpolate_grid=grid)


def test_a_floor_ranks_every_candidate_that_keeps_it_above_those_that_do_not():
    from trainer.config import TrainConfig
    from trainer.train import select_score

    cfg = TrainConfig(select_on={"validation": 0.5, "posed": 0.5}, select_metric="accuracy",
                      select_floor={"validation": 0.85})
    keeps = {"validation": {"accuracy": 0.851}, "posed": {"accuracy": 0.70}}
    breaks = {"validation": {"accuracy": 0.84}, "posed": {"accuracy": 0.90}}
    assert select_score(keeps, cfg) == pytest.approx(0.7755)
    assert select_score(keeps, cfg) > select_score(breaks, cfg)


def test_a_floor_no_candidate_reaches_still_ranks_the_nearer_one_first():
    from trainer.config import TrainConfig
    from trainer.train import select_score

    cfg = TrainConfig(select_on={"validation": 0.5, "posed": 0.5}, select_metric="accuracy",
                      select_floor={"validation": 0.86})
    near = {"validation": {"accuracy": 0.855}, "posed": {"accuracy": 0.70}}
    far = {"validation": {"accuracy": 0.844}, "posed": {"accuracy": 0.73}}  # a better mix, bought with FER+
    assert select_score(near, cfg) > select_score(far, cfg)
    assert select_score(near, cfg) < 0  # and both below any candidate that keeps the floor


def test_select_on_a_report_that_does_not_exist_is_refused_before_training(two_sources, tmp_path, capsys):
    a, _ = two_sources
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"sources": [{"name": "fer", "data": str(a)}], "select_on": {"posed": 1.0},
                                    "output_dir": str(tmp_path / "run"), "img_size": 24}))
    assert main(["train", "--config", str(path), "--workers", "0"]) != 0
    err = capsys.readouterr().err
    assert "select_on/select_floor name posed" in err and "validation" in err
    assert not (tmp_path / "run" / "checkpoints" / "last.safetensors").exists()


def test_weight_interpolation_mixes_floats_and_keeps_integer_buffers():
    from trainer.posthoc import mix

    start = {"w": torch.zeros(3), "n": torch.tensor(5)}
    tuned = {"w": torch.ones(3) * 2, "n": torch.tensor(9)}
    out = mix(start, tuned, 0.25)
    torch.testing.assert_close(out["w"], torch.full((3,), 0.5))
    assert out["n"].item() == 9
    assert mix(start, tuned, 1.0)["w"].equal(tuned["w"]) and mix(start, tuned, 0.0)["w"].equal(start["w"])


def test_batchnorm_statistics_are_re_estimated_on_unaugmented_faces():
    from emotion.models import create_model
    from trainer.config import TrainConfig
    from trainer.data import FaceSplit
    from trainer.modeling import model_info
    from trainer.posthoc import recalibrate_bn

    rng = np.random.default_rng(0)
    images = [bar(k % 8, rng) for k in range(64)]
    split = FaceSplit(images, np.eye(8, dtype=np.float32)[np.arange(64) % 8], np.arange(64) % 8)
    cfg = TrainConfig(img_size=24)
    model = create_model("small_cnn", in_chans=1, widths=(8, 16, 16, 32)).eval()
    bn = model.features[1]
    bn.running_mean.fill_(7.0)
    bn.running_var.fill_(9.0)
    recalibrate_bn(model, split, model_info(cfg), cfg)
    from trainer.data import FaceDataset

    x = torch.stack([FaceDataset(split, model_info(cfg))[i][0] for i in range(64)])
    with torch.no_grad():
        z = model.features[0](x)
    torch.testing.assert_close(bn.running_mean, z.mean((0, 2, 3)), rtol=1e-4, atol=1e-5)
    assert not model.training and bn.momentum == 0.1


def test_the_neutral_bias_takes_the_smallest_change_when_a_larger_one_gains_only_noise():
    from trainer.config import TrainConfig
    from trainer.data import FaceSplit
    from trainer.posthoc import fit_neutral_bias

    n, neutral, happy = 1000, LABELS.index("neutral"), LABELS.index("happy")
    logits = np.zeros((n, len(LABELS)), np.float32)
    labels = np.full(n, happy)
    logits[:, happy] = 5.0  # happy rows: right whatever the bias
    # neutral faces scored just under happy: 50 are read as neutral from a bias of +0.3, one more only at +0.5
    labels[:51] = neutral
    logits[:51, happy] = 0.25
    logits[50, happy] = 0.45
    split = FaceSplit([None] * n, np.eye(len(LABELS), dtype=np.float32)[labels], labels)
    cfg = TrainConfig(select_metric="accuracy")
    fit = fit_neutral_bias({"validation": logits}, {"validation": split}, list(LABELS), cfg, quiet=True)
    scores = {row["bias"]: row["select"] for row in fit["grid"]}
    assert scores[0.5] - scores[0.3] == pytest.approx(1 / n)  # the top of the grid, by one face in a thousand
    assert scores[0.2] < scores[0.3] - 0.04
    assert fit["chosen"] == 0.3


def test_faint_smiles_are_happy_faces_some_raters_called_neutral():
    """The `<report>_faint` view (issue #35: faint smiles read as contempt): happy faces with at least 20% neutral
    votes; not a clear smile, not a neutral face with smile votes, not a row without votes, not a source without a
    neutral option."""
    import datasets

    from trainer.sources import faint_smiles

    happy, neutral = LABELS.index("happy"), LABELS.index("neutral")

    def votes(h, n):
        v = [0] * 8
        v[happy], v[neutral] = h, n
        return v

    ds = datasets.Dataset.from_dict({"votes": [votes(7, 3), votes(9, 1), votes(2, 8), None, votes(8, 2)]})
    labels = np.array([happy, happy, neutral, happy, happy])
    def faint(names, src):
        return faint_smiles(raw_votes(ds, names, src), labels, names, src)

    assert faint(list(LABELS), SourceConfig("f", "x")).tolist() == [True, False, False, False, True]
    assert faint(list(LABELS), SourceConfig("f", "x", soft_column=None)) is None
    assert faint(None, SourceConfig("f", "x", soft_names=POSED_NAMES)) is None
