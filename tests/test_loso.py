"""Leave-one-source-out (trainer/loso.py): an arm never trains, selects or calibrates on the source it is scored on;
sources without a validation split are cut by person; the contempt bias is fitted like the neutral one."""
import json
from pathlib import Path

import numpy as np
import pytest

from conftest import NEEDS_TORCH

pytest.importorskip("torch", reason=f"the trainer {NEEDS_TORCH}")

import yaml  # noqa: E402

from emotion.labels import LABELS
from trainer.__main__ import main
from trainer.config import ConfigError, TrainConfig
from trainer.data import FaceSplit, load_raw
from trainer.loso import arm_config, loso_table
from trainer.posthoc import BIAS_GRID, CONTEMPT_GRID, fit_biases, fit_class_bias
from trainer.sources import SourceConfig, group_split, load_sources

from test_sources import POSED_NAMES, ratings, votes, write_parquet_source


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    root = tmp_path_factory.mktemp("loso")
    a = write_parquet_source(root / "a", list(LABELS), votes, per_class=8, seed=0)
    b = write_parquet_source(root / "b", POSED_NAMES + ["neutral"], ratings, per_class=6, seed=1)
    return a, b


def config(a: Path, b: Path, out: Path) -> dict:
    return {
        "model": "small_cnn", "output_dir": str(out), "img_size": 24, "epochs": 1, "batch_size": 16,
        "lr": 0.003, "warmup_epochs": 0.1, "scale_min": 1.0, "rotate": 0, "export_dtype": "float32",
        "augment": ["light"], "precision": "fp32", "neutral_bias": "fit",
        "sources": [{"name": "fer", "data": str(a), "weight": 0.7},
                    {"name": "posed", "data": str(b), "weight": 0.3, "soft_column": "shares",
                     "soft_names": POSED_NAMES, "clean_column": "agrees"}],
        "select_on": {"validation": 0.5, "posed_clean": 0.5}, "select_metric": "accuracy",
        "select_floor": {"validation": 0.0, "posed": 0.0},
    }


def test_an_arm_drops_the_source_and_its_reports_and_keeps_the_others_names(sources, tmp_path):
    cfg = TrainConfig(**config(*sources, tmp_path / "run"))
    arm = arm_config(cfg, "fer")  # the first source: its report is `validation`
    assert [s["name"] for s in arm.sources] == ["posed"]
    assert arm.sources[0]["report"] == "posed"  # not renamed `validation` now that it comes first
    assert arm.select_on == {"posed_clean": 0.5} and arm.select_floor == {"posed": 0.0}
    assert arm.output_dir == f"{tmp_path / 'run'}-without-fer"
    arm = arm_config(cfg, "posed")
    assert arm.select_on == {"validation": 0.5} and arm.select_floor == {"validation": 0.0}
    with pytest.raises(ConfigError, match="no such source"):
        arm_config(cfg, "ckplus")


def test_an_arm_loads_no_row_of_the_held_out_source(sources, tmp_path):
    cfg = TrainConfig(**config(*sources, tmp_path / "run"))
    train, vals, described = load_sources(arm_config(cfg, "posed"))
    fer_rows = len(load_raw(str(sources[0]))["train"])
    assert len(train) == fer_rows and set(np.unique(train.source)) == {0}
    assert set(vals) == {"validation"} and [s["name"] for s in described["sources"]] == ["fer"]


def test_loso_trains_each_arm_without_its_source_and_scores_every_row_of_it(sources, tmp_path, capsys):
    path = tmp_path / "loso.yaml"
    path.write_text(yaml.safe_dump(config(*sources, tmp_path / "run")))
    assert main(["loso", "--config", str(path), "--workers", "0"]) == 0
    results = json.loads((tmp_path / "run-loso.json").read_text())
    assert set(results) == {"fer", "posed"}
    raw = load_raw(str(sources[1]))
    assert results["posed"]["trained_on"] == ["fer"]
    assert results["posed"]["all"]["n"] == sum(len(raw[s]) for s in raw)  # every row: train and validation
    trained = json.loads((tmp_path / "run-without-posed" / "export" / "eval_results.json").read_text())
    assert [s["name"] for s in trained["dataset"]["sources"]] == ["fer"]
    assert not any(k.startswith("posed") for k in trained["splits"])  # nor scored, selected or calibrated on it
    table = (tmp_path / "run-loso.md").read_text()
    assert "| posed | fer |" in table and "**mean**" in table
    # the threshold-free separation of one class (tools/contempt_separation.py) reads an arm's export and its raw run
    tool = load_tool("contempt_separation")
    arm = tmp_path / "run-without-posed"
    capsys.readouterr()
    assert tool.main(["--config", str(path), "--model", f"local-dir:{arm / 'export'}", "--raw", str(arm),
                      "--positive", "validation"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    assert len(rows) == 3 and all(len(r.split(" | ")) == 6 for r in rows[1:])  # head, the model, its raw run
    assert rows[2].startswith(f"| {arm} (raw) |")
    with pytest.raises(SystemExit):
        tool.main(["--config", str(path), "--model", f"local-dir:{arm / 'export'}", "--positive", "ckplus"])
    assert "no report 'ckplus'" in capsys.readouterr().err
    (arm / "checkpoints" / "best.safetensors").unlink()  # and its .prev: a run folder with no checkpoint left
    (arm / "checkpoints" / "best.prev.safetensors").unlink(missing_ok=True)
    with pytest.raises(SystemExit):
        tool.main(["--config", str(path), "--raw", str(arm), "--positive", "validation"])
    assert "no readable checkpoints/best.safetensors" in capsys.readouterr().err
    # every row of a held-out source, per model and per pair (tools/score_held_out.py); the arm that trained on
    # the source is marked, since its score measures that source, not transfer
    tool = load_tool("score_held_out")
    capsys.readouterr()
    assert tool.main(["--config", str(path), "--source", "posed", "--ensembles", "--neutral-shift", "1",
                      "--model", f"local-dir:{arm / 'export'}",
                      "--model", f"local-dir:{tmp_path / 'run-without-fer' / 'export'}"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{results['posed']['all']['n']} rows of posed")
    lines = [line for line in out.splitlines() if line.startswith("| ")]
    assert len(lines) == 1 + 2 * 2 + 1  # the head, each model plain and shifted, one pair
    assert "(trained on it)" in lines[3] and "(trained on it)" not in lines[1]
    assert f"{results['posed']['all']['accuracy']:.3f}" == lines[1].split(" | ")[1]  # the LOSO table's score
    assert " + " in lines[5] and lines[2].split(" | ")[0].endswith("neutral −1")
    with pytest.raises(SystemExit):
        tool.main(["--config", str(path), "--source", "ckplus", "--model", f"local-dir:{arm / 'export'}"])
    assert "no source 'ckplus'" in capsys.readouterr().err


def load_tool(name: str):
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "tools" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_recall_at_a_false_rate_lets_through_at_most_that_share_of_the_negatives():
    from trainer.evaluation import class_margin, recall_at_false_rate

    negative = np.arange(100.0)  # 1% of them is one face: the threshold sits at 98, only 99 passes; 50%: at 49
    positive = np.array([50.5, 98.5, 99.5, 200.0])
    assert recall_at_false_rate(positive, negative, (0.0, 0.01, 0.5)) == {0.0: 0.5, 0.01: 0.75, 0.5: 1.0}
    logits = np.array([[0.0, 3.0, 1.0], [2.0, 1.0, 0.5]])
    np.testing.assert_allclose(class_margin(logits, 1), [2.0, -1.0])
    with pytest.raises(ValueError, match="positive and negative"):
        recall_at_false_rate(positive, np.array([]))


def test_a_source_without_validation_is_cut_by_person_never_across_one():
    import datasets

    subjects = [f"S{i // 3:03d}" for i in range(60)]  # 20 people, 3 near-identical frames each
    ds = datasets.Dataset.from_dict({"subject": subjects, "label": [0] * 60})
    src = SourceConfig("ck", "unused", group_column="subject", val_fraction=0.25)
    train, val = group_split(ds, src, seed=3)
    assert len(train) + len(val) == 60
    assert not {subjects[i] for i in train} & {subjects[i] for i in val}
    assert len({subjects[i] for i in val}) == 5
    again = group_split(ds, src, seed=3)
    assert np.array_equal(again[1], val)  # seeded: a resumed run cuts the same people


def test_val_groups_name_the_people_held_out_for_a_fold_of_person_level_cross_validation():
    import datasets

    from trainer.errors import DataError

    subjects = [f"S{i // 3:03d}" for i in range(12)]  # 4 people
    ds = datasets.Dataset.from_dict({"subject": subjects, "label": [0] * 12})
    for person in ("S000", "S003"):
        src = SourceConfig("jaffe", "unused", group_column="subject", val_groups=[person])
        train, val = group_split(ds, src, seed=3)
        assert {subjects[i] for i in val} == {person} and len(train) == 9
    with pytest.raises(DataError, match="val_groups"):
        group_split(ds, SourceConfig("jaffe", "unused", group_column="subject", val_groups=["nobody"]), seed=3)


def test_the_contempt_bias_recovers_an_under_called_class_within_the_floor():
    rng = np.random.default_rng(0)
    n = 400
    labels = rng.integers(0, len(LABELS), n)
    logits = rng.normal(0, 0.3, (n, len(LABELS))).astype(np.float32)
    logits[np.arange(n), labels] += 2.0
    contempt = LABELS.index("contempt")
    logits[:, contempt] -= 2.5  # a prior that calls contempt almost never
    split = FaceSplit([None] * n, np.eye(len(LABELS), dtype=np.float32)[labels], labels)
    cfg = TrainConfig(select_metric="accuracy")
    fit = fit_class_bias({"validation": logits}, {"validation": split}, list(LABELS), cfg, "contempt", CONTEMPT_GRID,
                         quiet=True)
    assert fit["chosen"] >= 1.5
    before = next(g for g in fit["grid"] if g["bias"] == 0.0)["reports"]["validation"]["accuracy"]
    assert fit["grid"][CONTEMPT_GRID.index(fit["chosen"])]["reports"]["validation"]["accuracy"] > before
    rows = labels == contempt
    recall = lambda b: (np.argmax(logits[rows] + b * np.eye(len(LABELS))[contempt], 1) == contempt).mean()  # noqa
    assert recall(fit["chosen"]) > recall(0.0) + 0.5


def test_the_neutral_and_contempt_biases_are_chosen_together():
    """Neutral faces that lose to contempt need a neutral bias larger than contempt's; contempt faces need it smaller
    than 0.45 more; faces that lose neutral to happy need 0.5 on neutral. Only neutral +0.5 with contempt +0.1 reads
    all of them; fitting neutral first (contempt at 0) stops at +0.3, and no contempt bias on top of it recovers."""
    def rows(n, **vals):
        z = np.full((n, len(LABELS)), -5.0, np.float32)
        for name, v in vals.items():
            z[:, LABELS.index(name)] = v
        return z

    logits = np.concatenate([rows(10, neutral=0, happy=0.45),       # A: right only when neutral's bias > 0.45
                             rows(20, neutral=0, contempt=0.25),    # D: neutral's bias - contempt's > 0.25
                             rows(12, contempt=0, neutral=-0.45)])  # E: neutral's bias - contempt's < 0.45
    labels = np.array([LABELS.index("neutral")] * 30 + [LABELS.index("contempt")] * 12)
    vals = {"validation": FaceSplit([None] * len(labels), np.eye(len(LABELS), dtype=np.float32)[labels], labels)}
    cfg = TrainConfig(select_metric="accuracy", neutral_bias="fit", contempt_bias="fit")
    sweeps, biased = fit_biases({"validation": logits}, vals, list(LABELS), cfg)
    assert (sweeps["neutral"]["chosen"], sweeps["contempt"]["chosen"]) == (0.5, 0.1)
    assert (biased["validation"].argmax(1) == labels).all()
    first = fit_class_bias({"validation": logits}, vals, list(LABELS), cfg, "neutral", BIAS_GRID, quiet=True)
    assert first["chosen"] == 0.3  # one after the other: 32 of 42 at best, whatever contempt's bias is then
    assert max(g["select"] for g in sweeps["neutral"]["grid"]) == sweeps["neutral"]["grid"][0]["select"] == 1.0


def test_the_loso_table_gives_neutral_answers_against_neutral_faces_and_recall_of_the_classes_present():
    per_class = {lab: {"recall": 0.5 if lab == "contempt" else 1.0, "support": {"contempt": 2, "neutral": 2}.get(lab, 0)}
                 for lab in LABELS}
    cm = np.zeros((len(LABELS), len(LABELS)), int)
    c, n = LABELS.index("contempt"), LABELS.index("neutral")
    cm[c, c], cm[c, n], cm[n, n] = 1, 1, 2  # one contempt face called neutral: 3 neutral answers for 2 neutral faces
    table = loso_table({"contempt": {"trained_on": ["fer"], "all": {"n": 4, "accuracy": 0.75, "macro_f1": 0.1,
                                                                     "per_class": per_class,
                                                                     "confusion_matrix": cm.tolist()}}})
    assert "| contempt | fer | 4 | 0.750 | 0.100 | 0.75 / 0.50 | contempt 0.50, neutral 1.00 |" in table


def test_person_folds_hold_out_each_group_once_and_compare_weights_only(tmp_path):
    """tools/person_folds.py write: one config per person, the recipe unchanged but for that person held out
    (val_groups) and the post-hoc average and biases off; each config is a valid trainer config."""
    import argparse
    import importlib.util

    import yaml

    from trainer.config import resolve_config

    path = Path(__file__).resolve().parents[1] / "tools" / "person_folds.py"
    spec = importlib.util.spec_from_file_location("person_folds", path)
    folds = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(folds)
    recipe = yaml.safe_load((Path(__file__).resolve().parents[1] / "trainer" / "configs"
                             / "small_cnn_six_sources_keep_contempt.yaml").read_text())
    assert folds.dealt(["KA", "KR"], 0) == {"KA": ["KA"], "KR": ["KR"]}
    films = [f"film{i:02d}" for i in range(10)]
    dealt = folds.dealt(films, 4)
    assert list(dealt) == ["f0", "f1", "f2", "f3"] and sorted(sum(dealt.values(), [])) == films  # each held out once
    assert [len(v) for v in dealt.values()] == [3, 3, 2, 2]
    with pytest.raises(SystemExit, match="more than"):
        folds.dealt(films, 11)
    written = folds.fold_configs(recipe, "jaffe", {"KA": ["KA"], "KR": ["KR"]}, tmp_path)
    assert set(written) == {"KA", "KR"}
    for person, config in written.items():
        jaffe = next(s for s in config["sources"] if s["name"] == "jaffe")
        assert jaffe["val_groups"] == [person] and config["output_dir"] == str(tmp_path / f"jaffe_{person}")
        assert (config["interpolate"], config["neutral_bias"], config["contempt_bias"]) == ("none",) * 3
        others = [s for s in config["sources"] if s["name"] != "jaffe"]
        assert others == [s for s in recipe["sources"] if s["name"] != "jaffe"]
        file = tmp_path / f"{person}.yaml"
        file.write_text(yaml.safe_dump(config))
        assert resolve_config(argparse.Namespace(config=str(file))).interpolate == "none"
    assert "val_groups" not in next(s for s in recipe["sources"] if s["name"] == "jaffe")  # the recipe is untouched
    with pytest.raises(SystemExit, match="no source named"):
        folds.fold_configs(recipe, "nosuch", {"KA": ["KA"]}, tmp_path)


def test_person_folds_can_average_the_classifier_head_apart_from_the_features():
    """tools/person_folds.py averaged(): the features at alpha, the classifier layer at head_alpha where given."""
    import importlib.util

    import torch

    path = Path(__file__).resolve().parents[1] / "tools" / "person_folds.py"
    spec = importlib.util.spec_from_file_location("person_folds", path)
    folds = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(folds)
    torch.manual_seed(0)
    tuned, base = (torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Linear(3, 2)) for _ in range(2))
    both = folds.averaged(tuned, base, 0.25)
    apart = folds.averaged(tuned, base, 0.25, head_alpha=1.0, head="1")
    for k, v in both.state_dict().items():
        assert torch.allclose(v, 0.25 * tuned.state_dict()[k] + 0.75 * base.state_dict()[k])
    assert torch.equal(apart[1].weight, tuned[1].weight) and torch.equal(apart[0].weight, both[0].weight)
