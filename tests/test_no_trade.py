"""Selection that cannot trade silently (trainer/no_trade.py): the baseline's floors, group bootstrap, the comparison
after export, and a run held to a baseline."""
import json

import numpy as np
import pytest

from conftest import NEEDS_TORCH

pytest.importorskip("torch", reason=f"the trainer {NEEDS_TORCH}")

import yaml  # noqa: E402

from emotion.labels import LABELS  # noqa: E402
from trainer import no_trade
from trainer.__main__ import main
from trainer.config import ConfigError, TrainConfig
from trainer.rows import FaceSplit

from test_loso import config, sources  # noqa: F401  (the module-scoped fixture of two tiny sources)


def split_of(labels, groups=None, views=None) -> FaceSplit:
    labels = np.asarray(labels)
    return FaceSplit([None] * len(labels), np.eye(len(LABELS))[labels], labels, groups=groups, views=views or {})


def logits_calling(pred) -> np.ndarray:
    return np.eye(len(LABELS))[np.asarray(pred)] * 5.0


def test_the_bootstrap_by_group_is_wider_when_a_groups_rows_agree():
    # 20 people with 10 photos each, every photo of a person right or every one wrong: 20 draws of evidence, not 200
    correct = np.repeat(np.arange(20) % 2 == 0, 10)
    groups = np.repeat(np.arange(20), 10).astype(str)
    by_person = no_trade.bootstrap_accuracy(correct, groups).std()
    by_row = no_trade.bootstrap_accuracy(correct, None).std()
    assert by_person > 2.5 * by_row


def test_one_held_out_person_is_bootstrapped_by_rows_not_called_a_trade_by_a_single_draw():
    rng = np.random.default_rng(2)
    labels = rng.integers(0, len(LABELS), 21)
    base_pred = np.where(rng.random(21) < 0.5, labels, (labels + 1) % len(LABELS))
    new_pred = base_pred.copy()
    new_pred[np.flatnonzero(new_pred == labels)[:1]] = (labels[new_pred == labels][0] + 1) % len(LABELS)  # one lost
    vals = {"jaffe": split_of(labels, np.array(["KA"] * 21))}
    c = no_trade.compare({"jaffe": logits_calling(new_pred)}, {"jaffe": logits_calling(base_pred)}, vals)["jaffe"]
    assert c["bootstrap"] == "rows" and c["interval"][0] < c["difference"] < 0 <= c["interval"][1]
    assert not c["trade"] and "rows drawn" in no_trade.table({"jaffe": c})
    floor = no_trade.floors({"jaffe": logits_calling(base_pred)}, vals)["jaffe"]
    assert floor < float(np.mean(base_pred == labels)) - 0.1  # one person's accuracy is not its own floor


def test_floors_are_the_baselines_accuracy_less_its_noise_and_keep_a_higher_given_floor():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, len(LABELS), 400)
    pred = np.where(rng.random(400) < 0.8, labels, (labels + 1) % len(LABELS))
    vals = {"validation": split_of(labels, views={"clean": rng.random(400) < 0.5}),
            "films": split_of(labels[:100], groups=np.repeat(np.arange(10), 10).astype(str))}
    base = {"validation": logits_calling(pred), "films": logits_calling(pred[:100])}
    floors = no_trade.floors(base, vals, {"validation": 0.9})
    assert set(floors) == {"validation", "validation_clean", "films"}
    assert floors["validation"] == 0.9  # the given floor is higher than the baseline's
    acc = float(np.mean(pred[:100] == labels[:100]))
    assert acc - 0.2 < floors["films"] < acc - 0.01  # below the baseline by its noise, not far below


def test_a_candidate_that_loses_a_source_beyond_its_noise_is_a_trade_and_one_that_keeps_it_is_not():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, len(LABELS), 300)
    groups = np.repeat(np.arange(30), 10).astype(str)
    base_pred = np.where(rng.random(300) < 0.8, labels, (labels + 1) % len(LABELS))
    worse_pred = np.where(rng.random(300) < 0.5, labels, (labels + 1) % len(LABELS))
    vals = {"sfew": split_of(labels, groups)}
    base = {"sfew": logits_calling(base_pred)}
    lost = no_trade.compare({"sfew": logits_calling(worse_pred)}, base, vals)
    kept = no_trade.compare({"sfew": logits_calling(base_pred)}, base, vals)
    assert no_trade.trades(lost) == ["sfew"] and lost["sfew"]["interval"][1] < 0
    assert no_trade.trades(kept) == [] and kept["sfew"]["difference"] == 0.0
    assert lost["sfew"]["groups"] == 30
    assert "**trade**" in no_trade.table(lost) and "**trade**" not in no_trade.table(kept)


def test_the_comparison_counts_neutral_answers_and_smiles_called_contempt():
    happy, neutral, contempt = (LABELS.index(c) for c in ("happy", "neutral", "contempt"))
    labels = [happy, happy, happy, happy, neutral]
    facts = no_trade.source_facts(logits_calling([happy, contempt, neutral, neutral, neutral]), np.array(labels))
    assert facts["neutral_answers"] == 0.6 and facts["neutral_true"] == 0.2
    assert facts["happy_as_contempt"] == 0.25 and facts["recall"] == {"happy": 0.25, "neutral": 1.0}


def test_a_baseline_needs_accuracy_as_the_selection_metric_and_a_model_source(tmp_path):
    with pytest.raises(ConfigError, match="baseline"):
        TrainConfig(baseline="local-dir:models/small_cnn", select_metric="macro_f1", output_dir=str(tmp_path))
    with pytest.raises(ConfigError, match="baseline"):
        TrainConfig(baseline="models/small_cnn here", select_metric="accuracy", output_dir=str(tmp_path))


def test_a_run_held_to_a_baseline_floors_every_report_and_compares_its_export(sources, tmp_path, capsys):  # noqa: F811
    first = config(*sources, tmp_path / "first")
    path = tmp_path / "first.yaml"
    path.write_text(yaml.safe_dump(first))
    assert main(["train", "--config", str(path), "--workers", "0"]) == 0
    held = {**config(*sources, tmp_path / "held"), "baseline": f"local-dir:{tmp_path / 'first' / 'export'}"}
    path = tmp_path / "held.yaml"
    path.write_text(yaml.safe_dump(held))
    assert main(["train", "--config", str(path), "--workers", "0"]) == 0
    saved = yaml.safe_load((tmp_path / "held" / "config.yaml").read_text())
    # every report has its floor, FER+'s faint smiles (happy, some raters saying neutral) too
    assert set(saved["select_floor"]) >= {"validation", "validation_faint", "posed", "posed_clean"}
    results = json.loads((tmp_path / "held" / "export" / "eval_results.json").read_text())
    comparison = results["baseline_comparison"]
    assert comparison["baseline"] == held["baseline"]
    assert set(comparison["reports"]) == {"validation", "validation_faint", "posed", "posed_clean"}
    for report in comparison["reports"].values():
        assert report["baseline"]["n"] == report["new"]["n"] > 0
        low, high = report["interval"]
        assert low <= report["difference"] <= high
    assert "| posed_clean |" in (tmp_path / "held" / "baseline_comparison.md").read_text()
    # the same check from the command line, for any model against the config's baseline: itself loses nothing
    capsys.readouterr()
    assert main(["held-to", "--config", str(path), "--candidate", held["baseline"], "--json", str(tmp_path / "c.json"),
                 "--workers", "0"]) == 0
    out = capsys.readouterr().out
    assert "| posed_clean |" in out and "no report lost beyond its noise" in out
    assert json.loads((tmp_path / "c.json").read_text())["reports"]["posed"]["difference"] == 0.0


def test_a_run_whose_every_epoch_misses_several_floors_still_keeps_its_best_epoch(sources, tmp_path):  # noqa: F811
    # each missed floor costs 1: with two missed, every selection score is below -1, where the best epoch once began
    cfg = {**config(*sources, tmp_path / "run"), "epochs": 2, "select_floor": {"validation": 1.0, "posed": 1.0}}
    path = tmp_path / "floors.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["train", "--config", str(path), "--workers", "0"]) == 0
    results = json.loads((tmp_path / "run" / "export" / "eval_results.json").read_text())
    assert results["best_epoch"] in (1, 2) and max(h["select"] for h in results["history"]) < -1


def test_the_baseline_is_scored_as_the_candidates_are_without_its_blendshape_head(monkeypatch):
    # the trainer's candidates have no head (it is fitted after export): a baseline's head would set floors (contempt)
    # that a candidate meets only by a contempt bias, which turned smiles into contempt and cost FER+ (issue #35)
    import trainer.run as run
    from emotion.info import ModelInfo

    head = {"label": "contempt", "weights": {"mouthSmile_asym": 1.0}, "gate": 1.0, "logit_bias": {"contempt": -1.0},
            "centre": {"mouthSmile_asym": 0.0}}
    served = ModelInfo(architecture="small_cnn", logit_bias={"neutral": 0.5}, blendshape_head=head)
    assert served.head() is not None
    seen = []
    monkeypatch.setattr(run, "load_model", lambda source: (object(), served, {}))
    monkeypatch.setattr(run, "predict_logits", lambda model, split, info: seen.append(info) or
                        logits_calling(split.labels))
    cfg = TrainConfig(baseline="local-dir:x", select_metric="accuracy")
    run.baseline_logits(cfg, {"validation": split_of(np.arange(40) % len(LABELS))})
    assert seen and all(info.head() is None and info.logit_bias == {"neutral": 0.5} for info in seen)
