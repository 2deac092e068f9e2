"""The model card: Hub-valid YAML whose model-index carries exactly the exported numbers, and an honest body."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from huggingface_hub import ModelCard

from model_card.render import PLACEHOLDER_REPO, render_card

LABELS = ["anger", "contempt", "disgust", "fear", "happy", "neutral", "sad", "surprise"]
SUPPORT = [310, 24, 31, 73, 880, 1242, 395, 441]


def config(architecture: str = "resnet50", channels: int = 1) -> dict:
    return {"architecture": architecture, "num_classes": 8, "num_features": 2048, "label_names": LABELS,
            "pretrained_cfg": {"input_size": [channels, 64, 64], "mean": [0.5] * channels, "std": [0.5] * channels,
                               "interpolation": "bilinear", "num_classes": 8, "crop_pct": 1.0, "crop_mode": "center"},
            "emotion": {"native_size": 48, "crop_margin": 0.25, "align_eyes": True, "temperature": 1.31,
                        "uncertain_threshold": 0.5, "tta_flip": True}}


def split(n: int, accuracy: float, macro_f1: float, ece_after: float) -> dict:
    per_class = {name: {"precision": 0.8123 - i / 50, "recall": 0.7512 - i / 40, "f1": 0.7812 - i / 45,
                        "support": SUPPORT[i]} for i, name in enumerate(LABELS)}
    matrix = [[SUPPORT[i] if i == j else 0 for j in range(8)] for i in range(8)]
    return {"n": n, "accuracy": accuracy, "macro_f1": macro_f1, "nll_before": 0.5123, "nll_after": 0.4567,
            "ece_before": 0.0531, "ece_after": ece_after, "per_class": per_class, "confusion_matrix": matrix}


def eval_results(architecture: str = "resnet50") -> dict:
    return {"model_name": architecture, "architecture": architecture,
            "dataset": {"name": "FER+ (FER2013 images, Microsoft FERPlus labels)", "id": "ferplus",
                        "path": "../shared/data/ferplus"},
            "splits": {"validation": split(3396, 0.8512, 0.6634, 0.0213),
                       "validation_dedup": split(3132, 0.8431, 0.6502, 0.0199)},
            "temperature": 1.31, "params": 1174696, "size_mb": 2.3, "ms_per_face_cpu": 1.4, "train_time_s": 1500,
            "machine": "2-core CPU (no GPU)", "epochs": 30,
            "train_config": {"model": architecture, "epochs": 30, "batch_size": 128, "lr": 0.002, "init": None}}


def export(folder: Path, cfg: dict, results: dict | None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(cfg))
    if results is not None:
        (folder / "eval_results.json").write_text(json.dumps(results))
    return folder


def test_yaml_parses_and_model_index_carries_exactly_the_exported_numbers(tmp_path):
    results = eval_results()
    folder = export(tmp_path, config(), results)
    render_card(folder, "acme/fer-resnet50")

    card = ModelCard.load(folder / "README.md")
    assert card.data.library_name == "timm" and card.data.pipeline_tag == "image-classification"
    assert card.data.license
    assert {"image-classification", "facial-expression-recognition", "emotion-recognition", "timm"} <= set(
        card.data.tags)
    assert card.data.datasets == ["ferplus"]
    got = {(r.dataset_split, r.metric_type): r.metric_value for r in card.data.eval_results}
    want = {}
    for name, s in results["splits"].items():
        want.update({(name, "accuracy"): s["accuracy"], (name, "f1"): s["macro_f1"], (name, "ece"): s["ece_after"]})
    assert got == want
    assert all(r.task_type == "image-classification" and r.dataset_type == "ferplus" for r in card.data.eval_results)


def test_body_has_the_tables_the_data_terms_and_the_out_of_scope_uses(tmp_path):
    folder = export(tmp_path, config(), eval_results())
    text = render_card(folder, "acme/fer-resnet50").text

    assert "| anger | 81.2% | 75.1% | 78.1% | 310 |" in text  # per-class row of the first split
    assert "| contempt | 79.2% | 72.6% | 75.9% | 24 |" in text
    assert "| `validation` | 3,396 | 85.1% | 66.3% | 0.0531 | 0.0213 | 0.5123 | 0.4567 |" in text
    assert "| `lr` | 0.002 |" in text and "| `batch_size` | 128 |" in text
    assert "MIT License" in text and "Microsoft" in text and "no open licence" in text.lower()
    assert "not re-published" in text and "Barsoum" in text and "Goodfellow" in text
    for word in ("hiring", "surveillance", "lie", "clinical"):
        assert word in text
    assert "confusion_matrix.png" not in text  # no image in the folder, so no link to one
    assert re.findall(r"^\| [0-7] \| (\w+) \|$", text, flags=re.M) == LABELS  # the labels, in output order


def test_confusion_image_is_linked_only_when_present(tmp_path):
    folder = export(tmp_path, config(), eval_results())
    (folder / "confusion_matrix.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    assert "![Confusion matrix](confusion_matrix.png)" in render_card(folder).text


@pytest.mark.parametrize("results", [
    None,
    {"model_name": "tiny", "splits": {"validation": {"accuracy": 0.5, "macro_f1": float("nan"), "ece_after": None,
                                                     "per_class": {}}},
     "params": None, "train_config": {}, "dataset": {}},
], ids=["no-eval-results", "sparse-eval-results"])
def test_missing_optional_fields_are_left_out_not_printed(tmp_path, results):
    cfg = {"architecture": "small_cnn", "label_names": LABELS,
           "pretrained_cfg": {"input_size": [1, 48, 48], "mean": [0.5], "std": [0.5]}}
    folder = export(tmp_path, cfg, results)
    text = str(render_card(folder))

    for leak in ("None", "nan", "NaN", "null", "{}", "[]", "| – |"):
        assert leak not in text, leak
    card = ModelCard.load(folder / "README.md")
    if results is None:
        assert card.data.eval_results is None and "## Evaluation" not in text
    else:
        assert [(r.metric_type, r.metric_value) for r in card.data.eval_results] == [("accuracy", 0.5)]
        assert "## Training configuration" not in text and "## Calibration" not in text


@pytest.mark.parametrize("architecture,channels,pipeline", [
    ("resnet50", 3, True), ("small_cnn", 1, False), ("resnet50", 1, False)])
def test_transformers_pipeline_snippet_only_where_it_runs(tmp_path, architecture, channels, pipeline):
    folder = export(tmp_path, config(architecture, channels), eval_results(architecture))
    text = render_card(folder, "acme/fer").text

    assert ('pipeline("image-classification", model="acme/fer"' in text) is pipeline
    assert 'timm.create_model("hf-hub:acme/fer", pretrained=True)' in text
    assert ("import emotion.models" in text) is (architecture == "small_cnn")
    assert 'Predictor.from_pretrained("hf-hub:acme/fer")' in text and "snapshot_download" in text
    assert 'handle_file("photo.jpg"), api_name="/predict"' in text


def test_placeholder_repo_id_only_inside_code_examples(tmp_path):
    folder = export(tmp_path, config(), eval_results())
    card = render_card(folder)
    assert PLACEHOLDER_REPO in card.text
    outside_code = re.sub(r"```.*?```", "", card.text, flags=re.S)
    assert PLACEHOLDER_REPO not in outside_code and PLACEHOLDER_REPO not in card.data.to_yaml()

    assert PLACEHOLDER_REPO not in str(render_card(folder, "acme/fer"))
    assert (folder / "README.md").read_text() == str(render_card(folder, "acme/fer"))


def test_notes_beside_the_export_become_the_last_section_and_are_left_out_when_absent(tmp_path):
    folder = export(tmp_path, config(), eval_results())
    assert "## How this model was made" not in render_card(folder).text
    (folder / "notes.md").write_text("Stage 2 reached **85.1%** on FER+ (printed 2026-11-25).\n")
    text = render_card(folder).text
    assert "## How this model was made (lab log)\n\nStage 2 reached **85.1%** on FER+ (printed 2026-11-25)." in text
    # a Hub visitor reads what the model does, how to load it, its scores, limits and data first; the log is last
    order = ["## Intended use", "## How to use it", "## Evaluation", "## Limitations and bias", "## Training data",
             "## Citation", "## How this model was made"]
    assert [text.index(h) for h in order] == sorted(text.index(h) for h in order)
    assert text.rstrip().endswith("(printed 2026-11-25).")


def test_the_evaluation_opens_with_each_sets_data_and_its_terms(tmp_path):
    results = eval_results()
    results["dataset"] = {"name": "ferplus + posed", "sources": [
        {"name": "ferplus", "path": "../shared/data/ferplus", "weight": 0.9},
        {"name": "posed", "path": "../shared/data/taiwanese_performers", "weight": 0.1}]}
    results["splits"]["posed_clean"] = split(169, 0.876, 0.766, 0.07)
    text = render_card(export(tmp_path, config(), results)).text
    assert "| `validation` | FER+ (FER2013 images, Microsoft FERPlus labels): validation split | 3,396 | 85.1% | 66.3% |" \
        in text
    assert "| `posed_clean` | Taiwan Corpora of Chinese Emotions (posed performers): those posed photos whose raters " \
        "saw the posed emotion | 169 | 87.6% | 76.6% |" in text
    assert "- Taiwan Corpora of Chinese Emotions (posed performers): academic research use only" in text
    assert "- FER+ (FER2013 images, Microsoft FERPlus labels): images: research use, no open licence; labels: MIT" in text


def test_a_blendshape_head_is_named_in_the_preprocessing_facts_and_absent_without_one(tmp_path):
    plain = str(render_card(export(tmp_path / "plain", config(), eval_results())))
    cfg = config()
    cfg["emotion"]["blendshape_head"] = {"label": "contempt", "weights": {"mouthSmile_asym": 0.7, "mouthPucker": -0.6},
                                         "gate": 2.118, "logit_bias": {"contempt": -0.5}}
    text = str(render_card(export(tmp_path / "head", cfg, eval_results())))
    assert "blendshape head" not in plain
    assert "| blendshape head (added to a logit before T) | contempt: 2 Face Landmarker blendshape features, read on " \
           "faces whose contempt logit is within 2.118 of the top one" in text
    assert "mouthSmile_asym" not in text  # the weights stay in config.json, not raw in the card
    cfg["emotion"]["blendshape_head"]["weights"]["lm61_291_y"] = 9.0
    text = str(render_card(export(tmp_path / "geometry", cfg, eval_results())))
    assert "contempt: 2 Face Landmarker blendshape features and 1 mouth asymmetries on its landmarks, read" in text
    # the head's own biases replace the model's wherever it is used: the card says so, beside the model's row
    assert "where the head is used, the logit bias is contempt -0.50 instead of the row above" in text
    cfg["emotion"]["blendshape_head"]["logit_bias"] = {}
    text = str(render_card(export(tmp_path / "unbiased", cfg, eval_results())))
    assert "logit bias is" not in text


def test_a_head_fitted_on_other_sources_brings_their_terms_into_the_card(tmp_path):
    """resnet50's head was fitted on CK+ and the contempt crops, which its classifier never saw: the card must give
    their terms, say how they were used, and carry them into the licence line."""
    cfg = config()
    cfg["emotion"]["blendshape_head"] = {"label": "contempt", "weights": {"mouthSmile_asym": 0.7}, "gate": 2.0,
                                         "logit_bias": {}}
    results = eval_results()
    results["dataset"] = {"name": "ferplus", "sources": [{"name": "ferplus", "path": "../shared/data/ferplus",
                                                         "weight": 1.0}]}
    plain = str(render_card(export(tmp_path / "plain", cfg, results)))
    results["blendshape_head"] = {"label": "contempt", "fitted_with": "recipe.yaml", "sources": [
        {"name": "ferplus", "path": "../shared/data/ferplus"}, {"name": "ckplus", "path": "../shared/data/ckplus_dev"},
        {"name": "contempt", "path": "../shared/data/contempt_dev"}]}
    text = str(render_card(export(tmp_path / "head", cfg, results)))
    assert "CK+" not in plain and "AffectNet" not in plain
    assert "was fitted on the training rows of `ferplus`, `ckplus`, `contempt` (`recipe.yaml`)" in text
    assert text.count("only to fit the blendshape head") == 2 and "@inproceedings{lucey2010ckplus" in text
    assert "the FER2013 training images, the CK+ lab crops and the wild contempt crops, released" in text  # licence


def test_each_split_in_the_model_index_names_the_data_its_rows_come_from(tmp_path):
    """A multi-source run reports splits of several data sets: the posed photos, CK+ and the contempt crops are not
    FER+, and the Hub's model-index must not say they are (it named every split by the first source's data)."""
    results = eval_results()
    results["dataset"] = {"name": "ferplus + posed + ckplus + contempt", "sources": [
        {"name": "ferplus", "path": "../shared/data/ferplus", "weight": 0.7},
        {"name": "posed", "path": "../shared/data/taiwanese_performers", "weight": 0.1},
        {"name": "ckplus", "path": "../shared/data/ckplus_dev", "weight": 0.1},
        {"name": "contempt", "path": "../shared/data/contempt_dev", "weight": 0.05},
        {"name": "studio", "path": "/data/my_studio_faces", "weight": 0.05}]}
    for name in ("posed", "posed_clean", "ckplus", "contempt", "studio"):
        results["splits"][name] = split(100, 0.7, 0.6, 0.05)
    folder = export(tmp_path, config(), results)
    render_card(folder, "acme/fer-resnet50")
    card = ModelCard.load(folder / "README.md")
    types = {r.dataset_split: r.dataset_type for r in card.data.eval_results}
    assert types == {"validation": "ferplus", "validation_dedup": "ferplus", "posed": "taiwan-corpora-chinese-emotions",
                     "posed_clean": "taiwan-corpora-chinese-emotions", "ckplus": "ckplus",
                     "contempt": "contempt-in-the-wild", "studio": "studio"}
    names = {r.dataset_split: r.dataset_name for r in card.data.eval_results}
    assert names["posed"].startswith("Taiwan Corpora") and names["validation"].startswith("FER+")
    assert card.data.datasets == ["ferplus"]
