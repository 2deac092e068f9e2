"""The card's formatting helpers and tables: numbers, percentages, preprocessing facts, metric, per-class,
confusion and calibration rows, each built from config.json / eval_results.json values (missing -> left out).
Private to model_card: render.py and metadata.py import the underscored helpers."""
from __future__ import annotations

import json
import math
from typing import Any


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
def _input_size(config: dict) -> list | None:
    size = config.get("pretrained_cfg", {}).get("input_size")
    ok = isinstance(size, (list, tuple)) and len(size) == 3 and all(_is_number(v) for v in size)
    return list(size) if ok else None


KNOWN_FACTS = ("native_size", "crop_margin", "crop_offset_y", "align_eyes", "temperature", "uncertain_threshold",
               "tta_flip", "flip_margin", "logit_bias", "blendshape_head")


def _numbers(values: Any) -> str | None:
    parts = [fmt_num(v) for v in values] if isinstance(values, list) else []
    return ", ".join(parts) if parts and all(parts) else None


def _biases(bias: Any) -> str:
    """Logit biases as "neutral +0.50, contempt -1.10" ("" when there are none)."""
    return ", ".join(f"{k} {v:+.2f}" for k, v in bias.items() if _is_number(v)) if isinstance(bias, dict) else ""


def _head(head: Any) -> str | None:
    """The blendshape head (emotion/blendshape_head.py) in words, or None when the model has none."""
    if not (isinstance(head, dict) and isinstance(head.get("weights"), dict) and head["weights"]):
        return None
    label, gate = fmt_value(head.get("label")), fmt_num(head.get("gate"))
    points = sum(1 for name in head["weights"] if str(name).startswith("lm"))  # emotion.face_geometry's names
    kinds = f"{len(head['weights']) - points} Face Landmarker blendshape features"
    if points:
        kinds += f" and {points} mouth asymmetries on its landmarks"
    served = _biases(head.get("logit_bias"))
    return (f"{label}: {kinds}, read on faces whose {label} logit is within {gate} of the top one "
            "(emotion/blendshape_head.py)"
            + (f"; where the head is used, the logit bias is {served} instead of the row above" if served else ""))


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
        ("logit bias (a prior, added before T)", _biases(facts.get("logit_bias")) or None),
        ("blendshape head (added to a logit before T)", _head(facts.get("blendshape_head"))),
        ("calibration temperature T", fmt_num(facts.get("temperature"))),
        ("'uncertain' below top probability", fmt_num(facts.get("uncertain_threshold"))),
        ("averaged with the mirrored face", _mirror(flags.get("tta_flip"), facts.get("flip_margin"))),
    ] + [(f"`{k}`", fmt_value(v)) for k, v in facts.items() if k not in KNOWN_FACTS])  # facts added later


def _mirror(flip: str | None, margin) -> str | None:
    """The mirror row: yes / no, or yes only for close calls where the model has a flip_margin."""
    if flip == "yes" and _is_number(margin):
        return f"where its two highest logits are within {fmt_num(margin)} (a close call); a clear answer from the face alone"
    return flip


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


