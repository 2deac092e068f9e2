"""The card's YAML metadata: the model-index (EvalResult per split) and ModelCardData, and the facts it reads
from eval_results.json (data set, training sources, neutral-bias sweep, splits)."""
from __future__ import annotations

import json
import re
from pathlib import Path

from huggingface_hub import EvalResult, ModelCardData

from .format import _is_number, fmt_num, fmt_pct

# The trainer only trains on FER+, so a results file without a `dataset` block still describes FER+.
DEFAULT_DATASET = {"id": "ferplus", "type": "ferplus", "name": "FER+ (FER2013 images, Microsoft FERPlus labels)",
                   "terms": "images: research use, no open licence; labels: MIT"}
# The data set a training source's folder holds, by a word in its path or name: the model-index names each split by
# the data its rows come from, not by the first source's (a posed-photo split is not FER+). The terms are the card's
# one-line summary of each set's licence; the Training data section gives them in full.
SOURCE_DATASETS = (
    ("ferplus", DEFAULT_DATASET),
    ("taiwanese", {"type": "taiwan-corpora-chinese-emotions",
                   "name": "Taiwan Corpora of Chinese Emotions (posed performers)",
                   "terms": "academic research use only"}),
    ("ckplus", {"type": "ckplus", "name": "CK+ (Extended Cohn-Kanade), development half",
                "terms": "non-commercial research, under the University of Pittsburgh's agreement"}),
    ("contempt", {"type": "contempt-in-the-wild",
                  "name": "Wild contempt crops (origin uncertain, most likely AffectNet)",
                  "terms": "research use only, non-commercial (treated as AffectNet's)"}),
)
# What the trainer's report of each name holds (trainer/sources.py names them), for the card's evaluation table.
SPLIT_NOTES = {"validation": "validation split", "validation_dedup": "validation, without images also in train",
               "posed": "photos of performers held out of training",
               "posed_clean": "those posed photos whose raters saw the posed emotion",
               "ckplus": "people held out of training", "contempt": "crops held out of training"}
TAGS = ["image-classification", "facial-expression-recognition", "emotion-recognition", "timm", "fer2013", "ferplus"]


def _read_json(path: Path, required: bool) -> dict:
    if not path.is_file():
        if required:
            raise FileNotFoundError(f"{path} not found: export the model (model.safetensors + {path.name}) into "
                                    f"{path.parent} before rendering its card")
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON ({e}); re-export the model to rewrite it") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a JSON object; re-export the model to rewrite it")
    return data


def _dataset(results: dict) -> dict:
    """The training data's id (for the YAML) and name; FER+ when eval_results.json does not say."""
    given = results.get("dataset")
    if not isinstance(given, dict) or not (given.get("id") or given.get("name") or given.get("path")):
        return dict(DEFAULT_DATASET)
    name = str(given.get("name") or given.get("path"))
    data_id = given.get("id") or ("ferplus" if "ferplus" in f"{name} {given.get('path')}".lower() else None)
    return {"id": data_id, "name": name, "type": data_id or _slug(name),
            "terms": DEFAULT_DATASET["terms"] if data_id == "ferplus" else None}


def _slug(name: str) -> str:
    """A model-index dataset type for a data set without an id (a local folder needs one too): its name, lower
    case, runs of other characters as -."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def _sources(results: dict) -> list[dict]:
    """The training sources of a multi-source run (eval_results.json `dataset.sources`), with their draw shares."""
    given = results.get("dataset", {}).get("sources") if isinstance(results.get("dataset"), dict) else None
    sources = [s for s in given or [] if isinstance(s, dict)]
    total = sum(float(s.get("weight") or 0) for s in sources) or 1.0
    return [{**s, "weight_share": float(s.get("weight") or 0) / total} for s in sources]


def _split_dataset(results: dict, split: str) -> dict:
    """The data set a split's rows come from: the source whose report it is (`validation[_<view>]` is the first
    source's, `<name>[_<view>]` another's), else the run's own data set (a single-source run)."""
    sources = _sources(results)
    src = next((s for s in sources if split == s.get("name") or split.startswith(f"{s.get('name')}_")), None)
    if src is None and sources and split.split("_")[0] == "validation":
        src = sources[0]
    if src is None:
        return _dataset(results)
    words = f"{src.get('path', '')} {src.get('name', '')}".lower()
    known = next((d for word, d in SOURCE_DATASETS if word in words), None)
    name = known["name"] if known else str(src.get("name") or src.get("path"))
    return {"name": name, "type": known["type"] if known else _slug(name), "terms": known and known.get("terms")}


def _bias_rows(results: dict) -> tuple[list[str], list[list[str]]]:
    """The neutral-bias sweep as a table: accuracy of every report at a few biases, the chosen one marked."""
    sweep = results.get("neutral_bias_sweep")
    if not isinstance(sweep, dict) or not sweep.get("grid"):
        return [], []
    grid = sweep["grid"]
    keep = {0.0, sweep.get("chosen"), *(g["bias"] for g in grid[::5])}
    names = list(grid[0]["reports"])
    rows = [[f"**{g['bias']:+.1f}** (chosen)" if g["bias"] == sweep.get("chosen") else f"{g['bias']:+.1f}"]
            + [fmt_pct(g["reports"][n]["accuracy"]) or "–" for n in names] for g in grid if g["bias"] in keep]
    return [f"`{n}` accuracy" for n in names], rows


def _eval_sets(results: dict) -> tuple[list[str], list[list[str]], list[tuple[str, str]]]:
    """The card's first evaluation table: per split, the data its rows come from and what the split holds, its
    faces, accuracy and macro-F1 (a column only where some split reports it); and each data set's terms, once."""
    splits = _splits(results)
    columns = [(key, title, fmt) for key, title, fmt in (("n", "faces", fmt_num), ("accuracy", "accuracy", fmt_pct),
                                                         ("macro_f1", "macro-F1", fmt_pct))
               if any(fmt(s.get(key)) for s in splits.values())]
    if not any(key != "n" for key, _, _ in columns):
        return [], [], []
    rows, terms = [], {}
    for name, scores in splits.items():
        data = _split_dataset(results, name)
        what = data["name"] + (f": {SPLIT_NOTES[name]}" if name in SPLIT_NOTES else "")
        rows.append([f"`{name}`", what] + [fmt(scores.get(key)) or "–" for key, _, fmt in columns])
        if data.get("terms"):
            terms.setdefault(data["name"], data["terms"])
    return ["split", "data"] + [title for _, title, _ in columns], rows, list(terms.items())


def _splits(results: dict) -> dict[str, dict]:
    splits = results.get("splits")
    return {k: v for k, v in splits.items() if isinstance(v, dict)} if isinstance(splits, dict) else {}


# ------------------------------------------------------------------------------------------------------ metadata
def build_eval_results(results: dict) -> list[EvalResult]:
    """model-index entries: accuracy, macro-F1 and (calibrated) ECE for every split that reports them."""
    metrics = [("accuracy", "accuracy", "Accuracy", None), ("macro_f1", "f1", "Macro F1", "macro"),
               ("ece_after", "ece", "Expected calibration error (after temperature scaling)", None)]
    out = []
    for split, scores in _splits(results).items():
        dataset = _split_dataset(results, split)
        for key, metric_type, metric_name, metric_config in metrics:
            if key == "ece_after" and not _is_number(scores.get(key)):
                key, metric_name = "ece_before", "Expected calibration error (no temperature scaling)"
            if _is_number(scores.get(key)):
                out.append(EvalResult(
                    task_type="image-classification", task_name="Facial expression recognition",
                    dataset_type=dataset["type"], dataset_name=dataset["name"], dataset_split=split,
                    metric_type=metric_type, metric_name=metric_name, metric_config=metric_config,
                    metric_value=scores[key]))
    return out


def _licence(config: dict, results: dict, given: str | None) -> str:
    """The argument, else what the export declares (eval_results, config, pretrained_cfg), else "other"."""
    declared = [given, results.get("license"), config.get("license"), config.get("pretrained_cfg", {}).get("license")]
    return next((x for x in declared if isinstance(x, str) and x.strip()), "other")


def build_card_data(config: dict, results: dict, repo_id: str | None, license: str | None) -> ModelCardData:
    """The YAML header: licence, library, tags, data set, metrics and the model-index."""
    eval_results = build_eval_results(results)
    architecture = config.get("architecture")
    train_config = results.get("train_config") if isinstance(results.get("train_config"), dict) else {}
    hub_base = config.get("pretrained_cfg", {}).get("hf_hub_id")
    # Only a model that really started from hub weights names them as its base model.
    base_model = hub_base if train_config.get("pretrained") is True and isinstance(hub_base, str) else None
    metric_types = sorted({r.metric_type for r in eval_results if r.metric_type in ("accuracy", "f1")})
    name = (repo_id.split("/")[-1] if repo_id else None) or results.get("model_name") or architecture or "model"
    data_id = _dataset(results)["id"]
    return ModelCardData(
        license=_licence(config, results, license),
        library_name="timm", pipeline_tag="image-classification",
        tags=TAGS + ([architecture] if architecture and architecture not in TAGS else []),
        datasets=[data_id] if data_id else None, metrics=metric_types or None, base_model=base_model,
        model_name=name if eval_results else None, eval_results=eval_results or None)


# ---------------------------------------------------------------------------------------------------------- body
