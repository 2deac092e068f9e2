"""Render an exported model's card (README.md) from its config.json and eval_results.json.

Every number in the card comes from those two files; a field that is missing is left out, never guessed. The YAML
header carries a `model-index` (accuracy and macro-F1 per split, plus calibration error) so the Hub shows the scores.
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import jinja2
import jinja2.meta
from huggingface_hub import EvalResult, ModelCard, ModelCardData

TEMPLATE_PATH = Path(__file__).with_name("template.md")
PLACEHOLDER_REPO = "<your-org>/<model-name>"  # only ever used inside code examples
PLACEHOLDER_SPACE = "<your-org>/<space-name>"
GENERATED_MARK = "<!-- Rendered by model_card/render.py"  # opens template.md's body: tells generated cards apart
# The trainer only trains on FER+, so a results file without a `dataset` block still describes FER+.
DEFAULT_DATASET = {"id": "ferplus", "type": "ferplus", "name": "FER+ (FER2013 images, Microsoft FERPlus labels)"}
PROJECT_ARCHITECTURES = ("small_cnn",)  # registered with timm by emotion.models, unknown to plain timm/transformers
TAGS = ["image-classification", "facial-expression-recognition", "emotion-recognition", "timm", "fer2013", "ferplus"]
LICENCE_NOTE_OTHER = ("not an open licence. The weights were trained on FER2013 images, which have no open "
                      "licence, for research use; check that your use is allowed.")


# ---------------------------------------------------------------------------------------------------- formatting
def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def fmt_num(x: Any) -> str | None:
    """4 significant digits for floats, thousands separators for ints; None for missing, NaN or non-numbers."""
    if not _is_number(x):
        return None
    if isinstance(x, int):
        return f"{x:,}"
    return f"{x:,.0f}" if abs(x) >= 1000 else f"{x:.4g}"  # .4g would switch to 1.235e+04


def fmt_pct(x: Any) -> str | None:
    """A fraction in [0, 1] as a percentage with one decimal (0.8512 -> '85.1%')."""
    return f"{100 * x:.1f}%" if _is_number(x) else None


def fmt_value(x: Any) -> str | None:
    """A training-config value for a Markdown table cell; None when there is nothing to show."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return None
    if isinstance(x, bool):
        return "true" if x else "false"
    if _is_number(x):
        return fmt_num(x)
    if isinstance(x, (list, tuple)):
        parts = [fmt_value(v) for v in x]
        return ", ".join(p for p in parts if p is not None) or None
    if isinstance(x, dict):
        x = json.dumps(x, sort_keys=True)
    text = str(x).replace("|", "\\|").replace("\n", " ").strip()
    return text or None


def _pairs(items: list[tuple[str, str | None]]) -> list[tuple[str, str]]:
    return [(name, value) for name, value in items if value is not None]


# ------------------------------------------------------------------------------------------------------- reading
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
    # model-index needs a dataset type even for a local folder; a slug of its name is the honest fallback
    return {"id": data_id, "name": name, "type": data_id or re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")}


def _sources(results: dict) -> list[dict]:
    """The training sources of a multi-source run (eval_results.json `dataset.sources`), with their draw shares."""
    given = results.get("dataset", {}).get("sources") if isinstance(results.get("dataset"), dict) else None
    sources = [s for s in given or [] if isinstance(s, dict)]
    total = sum(float(s.get("weight") or 0) for s in sources) or 1.0
    return [{**s, "weight_share": float(s.get("weight") or 0) / total} for s in sources]


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


def _splits(results: dict) -> dict[str, dict]:
    splits = results.get("splits")
    return {k: v for k, v in splits.items() if isinstance(v, dict)} if isinstance(splits, dict) else {}


# ------------------------------------------------------------------------------------------------------ metadata
def build_eval_results(results: dict) -> list[EvalResult]:
    """model-index entries: accuracy, macro-F1 and (calibrated) ECE for every split that reports them."""
    dataset = _dataset(results)
    metrics = [("accuracy", "accuracy", "Accuracy", None), ("macro_f1", "f1", "Macro F1", "macro"),
               ("ece_after", "ece", "Expected calibration error (after temperature scaling)", None)]
    out = []
    for split, scores in _splits(results).items():
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
def _input_size(config: dict) -> list | None:
    size = config.get("pretrained_cfg", {}).get("input_size")
    ok = isinstance(size, (list, tuple)) and len(size) == 3 and all(_is_number(v) for v in size)
    return list(size) if ok else None


KNOWN_FACTS = ("native_size", "crop_margin", "crop_offset_y", "align_eyes", "temperature", "uncertain_threshold",
               "tta_flip", "logit_bias")


def _numbers(values: Any) -> str | None:
    parts = [fmt_num(v) for v in values] if isinstance(values, list) else []
    return ", ".join(parts) if parts and all(parts) else None


def _offset(value: Any) -> str | None:
    if not _is_number(value) or value == 0:
        return None
    return f"{fmt_pct(abs(value))} of the box size {'up' if value < 0 else 'down'}"


def _preprocessing(config: dict) -> list[tuple[str, str]]:
    """What `config.json` says a face goes through before the network."""
    pcfg, facts = config.get("pretrained_cfg", {}), config.get("emotion", {})
    size = _input_size(config)
    channels = {1: "1 (grayscale)", 3: "3 (RGB)"}.get(size[0]) if size else None
    native = fmt_num(facts.get("native_size"))
    margin = fmt_pct(facts.get("crop_margin"))
    flags = {k: ("yes" if facts[k] else "no") for k in ("align_eyes", "tta_flip") if isinstance(facts.get(k), bool)}
    return _pairs([
        ("input size", f"{fmt_num(size[1])} x {fmt_num(size[2])} px" if size else None),
        ("channels", channels),
        ("mean", _numbers(pcfg.get("mean"))), ("std", _numbers(pcfg.get("std"))),
        ("interpolation", fmt_value(pcfg.get("interpolation"))),
        ("face crop margin", f"{margin} of the face box added on each side" if margin else None),
        ("crop centre shift", _offset(facts.get("crop_offset_y"))),
        ("eyes levelled before cropping", flags.get("align_eyes")),
        ("crop first resized to", f"{native} x {native} px (the training images' size)" if native else None),
        ("logit bias (a prior, added before T)", ", ".join(f"{k} {v:+.2f}" for k, v in facts["logit_bias"].items())
         if isinstance(facts.get("logit_bias"), dict) and facts["logit_bias"] else None),
        ("calibration temperature T", fmt_num(facts.get("temperature"))),
        ("'uncertain' below top probability", fmt_num(facts.get("uncertain_threshold"))),
        ("averaged with the mirrored face", flags.get("tta_flip")),
    ] + [(f"`{k}`", fmt_value(v)) for k, v in facts.items() if k not in KNOWN_FACTS])  # facts added later


def _run_facts(config: dict, results: dict) -> list[tuple[str, str]]:
    seconds = results.get("train_time_s")
    size_mb, ms = fmt_num(results.get("size_mb")), fmt_num(results.get("ms_per_face_cpu"))
    data = results.get("dataset") if isinstance(results.get("dataset"), dict) else {}
    return _pairs([
        ("architecture", fmt_value(config.get("architecture") or results.get("architecture"))),
        ("parameters", fmt_num(results.get("params"))),
        ("weights size", f"{size_mb} MB" if size_mb else None),
        ("CPU latency", f"{ms} ms per face" if ms else None),
        ("training faces", fmt_num(data.get("train_rows"))), ("validation faces", fmt_num(data.get("val_rows"))),
        ("epochs", fmt_num(results.get("epochs"))),
        ("best epoch (the weights kept)", fmt_num(results.get("best_epoch"))),
        ("training time", f"{fmt_num(seconds)} s ({fmt_num(seconds / 60)} min)" if _is_number(seconds) else None),
        ("trained on", fmt_value(results.get("machine"))),
    ])


METRIC_COLUMNS = [("n", "n", fmt_num), ("accuracy", "accuracy", fmt_pct), ("macro_f1", "macro-F1", fmt_pct),
                  ("ece_before", "ECE before T", fmt_num), ("ece_after", "ECE after T", fmt_num),
                  ("nll_before", "NLL before T", fmt_num), ("nll_after", "NLL after T", fmt_num)]


def _metric_table(splits: dict[str, dict]) -> tuple[list[str], list[list[str]]]:
    """One row per split; a column appears only when some split reports it."""
    columns = [(key, title, fmt) for key, title, fmt in METRIC_COLUMNS
               if any(fmt(s.get(key)) for s in splits.values())]
    if not any(key != "n" for key, _, _ in columns):
        return [], []
    headers = ["split"] + [title for _, title, _ in columns]
    rows = [[f"`{name}`"] + [fmt(s.get(key)) or "–" for key, _, fmt in columns] for name, s in splits.items()]
    return headers, rows


def _per_class(split: dict, labels: list[str]) -> tuple[list[list[str]], str | None]:
    """Per-class table rows (in label order) and the three weakest classes by F1."""
    per_class = split.get("per_class") if isinstance(split.get("per_class"), dict) else {}
    names = [n for n in labels if n in per_class] + [n for n in per_class if n not in labels]
    rows, f1s = [], []
    for name in names:
        c = per_class[name] if isinstance(per_class[name], dict) else {}
        cells = [fmt_pct(c.get(k)) for k in ("precision", "recall", "f1")] + [fmt_num(c.get("support"))]
        if any(cells):
            rows.append([name] + [cell or "–" for cell in cells])
        if _is_number(c.get("f1")):
            f1s.append((c["f1"], name))
    weakest = ", ".join(f"{name} {fmt_pct(f1)}" for f1, name in sorted(f1s)[:3]) or None
    return rows, weakest


def _confusion(split: dict, labels: list[str]) -> list[list[str]]:
    matrix = split.get("confusion_matrix")
    n = len(labels)
    ok = (isinstance(matrix, list) and len(matrix) == n and
          all(isinstance(r, list) and len(r) == n and all(_is_number(v) for v in r) for r in matrix))
    return [[f"**{label}**"] + [fmt_num(v) for v in row] for label, row in zip(labels, matrix)] if ok else []


def _calibration(config: dict, results: dict, first: str | None, split: dict) -> list[str]:
    temperature = fmt_num(config.get("emotion", {}).get("temperature")) or fmt_num(results.get("temperature"))
    lines = []
    if temperature:
        lines.append(f"Probabilities are `softmax(logits / T)` with T = {temperature}, fitted after training on the "
                     "validation split (temperature scaling). It rescales confidence; for one view of a face it never "
                     "changes the top label.")
    for key, name in (("ece", "expected calibration error (ECE)"), ("nll", "negative log-likelihood (NLL)")):
        before, after = fmt_num(split.get(f"{key}_before")), fmt_num(split.get(f"{key}_after"))
        if before and after:
            lines.append(f"On `{first}`, the {name} goes from {before} before scaling to {after} after it.")
        elif before or after:
            lines.append(f"On `{first}`, the {name} is {before or after} {'before' if before else 'after'} scaling.")
    crossfit = fmt_num(split.get("ece_after_crossfit"))
    if crossfit:
        lines.append(f"Fitting T on one half of `{first}` and measuring on the other (both ways), the ECE after "
                     f"scaling is {crossfit}: an out-of-sample figure.")
    elif temperature and any(fmt_num(split.get(k)) for k in ("ece_after", "nll_after")):
        lines.append("T was fitted on validation images, so the after-scaling numbers on validation splits are "
                     "in-sample and somewhat optimistic.")
    return lines


def _is_stock_timm(architecture: str | None) -> bool:
    """Whether plain timm/transformers can build this architecture without the project's code."""
    if not architecture or architecture in PROJECT_ARCHITECTURES:
        return False
    try:
        import timm
    except ImportError:  # no timm here: trust the name, the card is only text
        return True
    return timm.is_model(architecture)


def _usage(config: dict, repo_id: str | None, space_id: str | None) -> dict:
    """Code-example switches: which routes work for this architecture and channel count."""
    architecture = config.get("architecture")
    size = _input_size(config)
    channels = size[0] if size else None
    stock = _is_stock_timm(architecture)
    if stock and channels == 1:
        note = ("transformers' image-classification pipeline converts every image to RGB, and this model takes "
                "one-channel (grayscale) input, so the pipeline cannot run it: use the `Predictor` or timm.")
    elif architecture in PROJECT_ARCHITECTURES:
        note = (f"`{architecture}` is this project's own architecture, which transformers does not know: use the "
                "`Predictor`, or timm after `import emotion.models`.")
    elif not stock:
        note = f"transformers cannot build `{architecture}`: use the `Predictor`."
    else:
        note = None
    return {
        "architecture": architecture, "channels": channels, "repo_code": repo_id or PLACEHOLDER_REPO,
        "space_code": space_id or PLACEHOLDER_SPACE,
        "space_url": f"https://huggingface.co/spaces/{space_id}" if space_id else None,
        "show_pipeline": stock and channels == 3, "pipeline_note": note,
        "needs_emotion_import": architecture in PROJECT_ARCHITECTURES,
        "temperature": fmt_num(config.get("emotion", {}).get("temperature")),
        "uncertain_threshold": fmt_num(config.get("emotion", {}).get("uncertain_threshold")),
    }


def _summary(config: dict, results: dict, labels: list[str], dataset: dict, first: str | None) -> str:
    architecture = config.get("architecture") or results.get("architecture") or "model"
    what = ("a small VGG-style CNN (`small_cnn`)" if architecture == "small_cnn"
            else f"a `{architecture}` (timm) image classifier")
    classes = f", one of {len(labels)} classes ({', '.join(labels)})" if labels else ""
    text = (f"This is {what} that names the facial expression of a face crop{classes}. "
            f"It was trained on {dataset['name']}.")
    split = _splits(results).get(first, {}) if first else {}
    accuracy, macro_f1, n = fmt_pct(split.get("accuracy")), fmt_pct(split.get("macro_f1")), fmt_num(split.get("n"))
    if accuracy:
        scores = f"{accuracy} accuracy" + (f" and {macro_f1} macro-F1" if macro_f1 else "")
        text += f" On `{first}`{f' ({n} faces)' if n else ''} it scores {scores}."
    return text + " It reads the expression a face shows, not what the person feels."


def _context(export_dir: Path, config: dict, results: dict, repo_id: str | None, space_id: str | None,
             license: str) -> dict:
    """Everything the template shows, already formatted."""
    splits = _splits(results)
    first = next(iter(splits), None)
    split = splits.get(first, {})
    labels = [str(n) for n in config.get("label_names") or []] or list(split.get("per_class", {}))
    dataset = _dataset(results)
    per_class_rows, weakest = _per_class(split, labels)
    metric_headers, metric_rows = _metric_table(splits)
    train_config = results.get("train_config") if isinstance(results.get("train_config"), dict) else {}
    fer_data = dataset["id"] == "ferplus" or "fer2013" in dataset["name"].lower()
    sources = _sources(results)
    posed_data = any("taiwanese" in str(s.get("path", "")).lower() for s in sources)
    covers = " and ".join(x for x, on in (("the FER2013 training images", fer_data),
                                          ("the posed performers' photos", posed_data)) if on)
    licence_note = LICENCE_NOTE_OTHER if license == "other" else (
        f"`{license}`." + (f" It does not cover {covers} (see above)." if covers else ""))
    return {
        **_usage(config, repo_id, space_id),
        "title": f"Facial expression recognition: {repo_id or results.get('model_name') or config.get('architecture')}",
        "summary": _summary(config, results, labels, dataset, first), "run_facts": _run_facts(config, results),
        "labels": labels, "preprocessing": _preprocessing(config), "fer_data": fer_data, "posed_data": posed_data,
        "source_rows": [[f"`{s.get('name')}`", fmt_pct(s.get("weight_share")) or "–", fmt_num(s.get("train_rows")) or "–",
                         fmt_num(s.get("val_rows")) or "–", ", ".join(s.get("classes") or [])] for s in sources],
        "dataset_name": dataset["name"], "licence_note": licence_note,
        "train_rows": _pairs([(str(k), fmt_value(v)) for k, v in train_config.items()]),
        "metrics_intro": ("Scores per evaluation split (`n` faces). Accuracy and macro-F1 come from the top label; "
                          "ECE and NLL measure the probabilities before and after temperature scaling (T)."
                          + (" `validation_dedup` leaves out validation images that also appear in train."
                             if "validation_dedup" in splits else "")),
        "metric_headers": metric_headers, "metric_rows": metric_rows, "first_split": first,
        "per_class_rows": per_class_rows, "weakest": weakest, "confusion_rows": _confusion(split, labels),
        "confusion_image": (export_dir / "confusion_matrix.png").is_file(),
        "calibration_lines": _calibration(config, results, first, split),
        "bias_headers": _bias_rows(results)[0], "bias_rows": _bias_rows(results)[1],
    }


def render_card(export_dir: str | Path, repo_id: str | None = None, *, space_id: str | None = None,
                license: str | None = None) -> ModelCard:
    """Render the model card of an exported model and write it to `export_dir/README.md`.

    Args:
        export_dir: Folder holding config.json (required), eval_results.json and confusion_matrix.png (optional).
        repo_id: The Hub repo the model goes to (`org/name`); code examples use a placeholder when it is None.
        space_id: The demo Space (`org/name`) for the gradio_client example; a placeholder when None.
        license: Licence id for the YAML header; defaults to eval_results.json's or config.json's `license`, else
            "other" (the FER2013 training images carry no open licence).

    Returns:
        The rendered `huggingface_hub.ModelCard` (also saved as README.md).
    """
    export_dir = Path(export_dir)
    config = _read_json(export_dir / "config.json", required=True)
    results = _read_json(export_dir / "eval_results.json", required=False)
    card_data = build_card_data(config, results, repo_id, license)
    context = _context(export_dir, config, results, repo_id, space_id, card_data.license)
    template = TEMPLATE_PATH.read_text(encoding="utf-8")
    # from_template renders with lenient Jinja (a misspelt name becomes ""), so check the names here instead.
    missing = jinja2.meta.find_undeclared_variables(jinja2.Environment().parse(template)) - set(context) - {
        "card_data"} - set(card_data.to_dict())
    assert not missing, f"template.md uses names render.py does not provide: {sorted(missing)}"
    card = ModelCard.from_template(card_data, template_str=template, **context)
    # The template's {% if %} lines leave runs of blank lines behind; Markdown needs at most one.
    card = ModelCard(re.sub(r"\n{3,}", "\n\n", str(card)))
    card.save(export_dir / "README.md")
    return card
