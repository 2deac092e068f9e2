"""Render an exported model's card (README.md) from its config.json and eval_results.json.

Every number in the card comes from those two files; a field that is missing is left out, never guessed. The YAML
header carries a `model-index` (accuracy and macro-F1 per split, plus calibration error) so the Hub shows the scores.
"""
from __future__ import annotations

import re
from pathlib import Path

import jinja2
import jinja2.meta
from huggingface_hub import ModelCard

from .format import (_calibration, _confusion, _input_size, _metric_table, _pairs, _per_class, _preprocessing,
                     _run_facts, fmt_num, fmt_pct, fmt_value)
from .metadata import _bias_rows, _dataset, _eval_sets, _read_json, _sources, _splits, build_card_data

TEMPLATE_PATH = Path(__file__).with_name("template.md")
NOTES_NAME = "notes.md"  # optional, beside config.json: measured history the exported numbers do not carry
PLACEHOLDER_REPO = "<your-org>/<model-name>"  # only ever used inside code examples
PLACEHOLDER_SPACE = "<your-org>/<space-name>"
GENERATED_MARK = "<!-- Rendered by model_card/render.py"  # opens template.md's body: tells generated cards apart
PROJECT_ARCHITECTURES = ("small_cnn",)  # registered with timm by emotion.models, unknown to plain timm/transformers
LICENCE_NOTE_OTHER = ("not an open licence: the weights learnt from {covers}, released for research use only, and "
                      "carry those terms; check that your use is allowed. (The project's code is Apache-2.0.)")
LICENCE_NOTE_UNKNOWN = "none declared (`other`): check the training data's terms before reusing these weights."


# --------------------------------------------------------------------------- context (what the template sees)
def _head_sources(results: dict) -> list[dict]:
    """The sources the model's blendshape head was fitted on (eval_results.json `blendshape_head.sources`)."""
    head = results.get("blendshape_head")
    given = head.get("sources") if isinstance(head, dict) else None
    return [s for s in given or [] if isinstance(s, dict)]


def _head_fit(results: dict, head_sources: list[dict]) -> str | None:
    """A sentence naming what the blendshape head was fitted on, when that is more than the training sources."""
    trained = {str(s.get("name")) for s in _sources(results)}
    names = [str(s.get("name")) for s in head_sources]
    if not names or set(names) <= trained:
        return None
    recipe = results["blendshape_head"].get("fitted_with")
    listed = ", ".join(f"`{n}`" for n in names)
    return (f"Its blendshape head (in config.json) was fitted on the training rows of {listed}"
            + (f" (`{recipe}`)" if recipe else "")
            + ", after the classifier's training: the terms above cover them too.")


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
    eval_sets = _eval_sets(results)
    train_config = results.get("train_config") if isinstance(results.get("train_config"), dict) else {}
    fer_data = dataset["id"] == "ferplus" or "fer2013" in dataset["name"].lower()
    sources = _sources(results)
    head_sources = _head_sources(results)
    learnt = [*sources, *head_sources]  # config.json's head learnt from its fit's rows: their terms apply too
    posed_data = any("taiwanese" in str(s.get("path", "")).lower() for s in learnt)
    ckplus_data = any("ckplus" in str(s.get("path", "")).lower() for s in learnt)
    contempt_data = any("contempt_dev" in str(s.get("path", "")).lower() for s in learnt)
    trained_on = " ".join(str(s.get("path", "")).lower() for s in sources)  # the classifier's own training data
    covered = [x for x, on in (("the FER2013 training images", fer_data), ("the posed performers' photos", posed_data),
                               ("the CK+ lab crops", ckplus_data), ("the wild contempt crops", contempt_data)) if on]
    covers = " and ".join(filter(None, [", ".join(covered[:-1]), covered[-1] if covered else ""]))
    if license == "other":
        licence_note = LICENCE_NOTE_OTHER.format(covers=covers) if covers else LICENCE_NOTE_UNKNOWN
    else:
        licence_note = f"`{license}`." + (f" It does not cover {covers} (see above)." if covers else "")
    return {
        **_usage(config, repo_id, space_id),
        "title": f"Facial expression recognition: {repo_id or results.get('model_name') or config.get('architecture')}",
        "summary": _summary(config, results, labels, dataset, first), "run_facts": _run_facts(config, results),
        "labels": labels, "preprocessing": _preprocessing(config), "fer_data": fer_data, "posed_data": posed_data,
        "ckplus_data": ckplus_data, "contempt_data": contempt_data,
        "ckplus_head_only": ckplus_data and "ckplus" not in trained_on,
        "contempt_head_only": contempt_data and "contempt_dev" not in trained_on,
        "source_rows": [[f"`{s.get('name')}`", fmt_pct(s.get("weight_share")) or "–", fmt_num(s.get("train_rows")) or "–",
                         fmt_num(s.get("val_rows")) or "–", ", ".join(s.get("classes") or [])] for s in sources],
        "dataset_name": dataset["name"], "licence_note": licence_note,
        "head_fit": _head_fit(results, head_sources),
        "train_rows": _pairs([(str(k), fmt_value(v)) for k, v in train_config.items()]),
        "metrics_intro": ("Scores per evaluation split (`n` faces). Accuracy and macro-F1 come from the top label; "
                          "ECE and NLL measure the probabilities before and after temperature scaling (T)."
                          + (" `validation_dedup` leaves out validation images that also appear in train."
                             if "validation_dedup" in splits else "")),
        "metric_headers": metric_headers, "metric_rows": metric_rows, "first_split": first,
        "eval_headers": eval_sets[0], "eval_rows": eval_sets[1], "eval_terms": eval_sets[2],
        "per_class_rows": per_class_rows, "weakest": weakest, "confusion_rows": _confusion(split, labels),
        "confusion_image": (export_dir / "confusion_matrix.png").is_file(),
        "calibration_lines": _calibration(config, results, first, split),
        "bias_headers": _bias_rows(results)[0], "bias_rows": _bias_rows(results)[1],
        "notes": _notes(export_dir),
    }


def _notes(export_dir: Path) -> str:
    """The export's notes.md (Markdown written by hand: its training history and comparisons), or ""."""
    path = export_dir / NOTES_NAME
    return path.read_text(encoding="utf-8").strip() if path.is_file() else ""


def render_card(export_dir: str | Path, repo_id: str | None = None, *, space_id: str | None = None,
                license: str | None = None) -> ModelCard:
    """Render the model card of an exported model and write it to `export_dir/README.md`.

    Args:
        export_dir: Folder holding config.json (required), eval_results.json, confusion_matrix.png and notes.md
            (optional).
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
