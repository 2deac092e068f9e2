"""Leave-one-source-out (LOSO): how a recipe transfers to faces from a source it never saw.

For each held-out source S of a multi-source config, the same recipe is trained without S (an "arm": S's rows are
neither drawn, nor used to pick the epoch, fit a bias or the temperature) and then scored on every row of S (its
train and validation splits, cropped as serving crops). The mean over arms is the transfer score a recipe is chosen
by; a validation split of a source the model trained on only measures that source.

`python -m trainer loso --config C.yaml [--hold-out posed ckplus ...]` trains the arms in turn (each one resumes
like any run, in `<output_dir>-without-<S>`) and writes `<output_dir>-loso.json` and a markdown table.
"""
from __future__ import annotations

import copy
import json
import logging
from pathlib import Path

import numpy as np

from emotion.labels import LABELS
from emotion.models import load_model

from .config import ConfigError, TrainConfig
from .data import FaceSplit, load_raw
from .evaluation import compute_metrics, predict_logits
from .run import train_and_export
from .sources import SourceConfig, decode_rows, report_name

log = logging.getLogger(__name__)



def arm_config(cfg: TrainConfig, held_out: str) -> TrainConfig:
    """`cfg` without the source `held_out`: the other sources keep their report names, and the selection mix and
    floors drop every report of the held-out source."""
    names = [s["name"] for s in cfg.sources or []]
    if held_out not in names:
        raise ConfigError(f"--hold-out {held_out}: no such source; the config's sources are {', '.join(names)}")
    if len(names) < 2:
        raise ConfigError("leave-one-source-out needs a config with at least two sources")
    index = names.index(held_out)
    report = report_name(index, SourceConfig.parse(cfg.sources[index]))
    mine = lambda key: key == report or key.startswith(report + "_")  # noqa: E731
    arm = copy.deepcopy(cfg)
    arm.sources = [{**s, "report": report_name(i, SourceConfig.parse(s))}
                   for i, s in enumerate(cfg.sources) if i != index]
    arm.select_on = {k: v for k, v in (cfg.select_on or {}).items() if not mine(k)} or None
    arm.select_floor = {k: v for k, v in (cfg.select_floor or {}).items() if not mine(k)} or None
    if cfg.select_on and not arm.select_on:
        raise ConfigError(f"select_on names only {held_out}'s reports; add another source's report to it")
    arm.output_dir = f"{cfg.output_dir}-without-{held_out}"
    arm.__post_init__()  # re-validate (and fill the sources' defaults) as a config read from a file would be
    return arm


def held_out_rows(cfg: TrainConfig, held_out: str) -> FaceSplit:
    """Every row of the held-out source (all its splits), cropped as its validation rows are (serving's crop)."""
    src = SourceConfig.parse(next(s for s in cfg.sources if s["name"] == held_out))
    raw = load_raw(src.data)
    crop = {"margin": cfg.crop_margin, "offset_y": cfg.crop_offset_y}
    parts = [decode_rows(raw[split], src, crop, train=False) for split in raw]
    images = [im for p in parts for im in p.images]
    views = {k: np.concatenate([p.views[k] for p in parts]) for k in parts[0].views}
    return FaceSplit(images, np.concatenate([p.targets for p in parts]), np.concatenate([p.labels for p in parts]),
                     views=views)


def score_arm(export_dir: Path, rows: FaceSplit) -> dict:
    """The arm's exported model (its own bias and temperature, as served) on the held-out rows."""
    model, info, _ = load_model(f"local-dir:{export_dir}")
    logits = predict_logits(model, rows, info)
    out = {"all": compute_metrics(logits, rows.labels, info.temperature)}
    for view, keep in rows.views.items():
        if keep.any() and not keep.all():
            out[view] = compute_metrics(logits[keep], rows.labels[keep], info.temperature)
    return out


def run_loso(cfg: TrainConfig, hold_out: list[str] | None = None, train=None) -> dict:
    """Train and score every arm (`hold_out`: these sources only); returns and writes the results."""
    train = train or train_and_export
    names = hold_out or [s["name"] for s in cfg.sources or []]
    path = Path(f"{cfg.output_dir}-loso.json")
    for name in names:
        arm = arm_config(cfg, name)
        export_dir = train(arm)
        rows = held_out_rows(cfg, name)
        result = {"output_dir": arm.output_dir, "trained_on": [s["name"] for s in arm.sources], "init": arm.init,
                  **score_arm(Path(export_dir), rows)}
        log.info("LOSO %s: accuracy %.4f on %d held-out rows", name, result["all"]["accuracy"], len(rows))
        results = json.loads(path.read_text()) if path.is_file() else {}  # other arms may run in other processes
        results[name] = result
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(results, indent=2) + "\n")
    results = json.loads(path.read_text()) if path.is_file() else {}
    table = loso_table(results)
    Path(f"{cfg.output_dir}-loso.md").write_text(table + "\n")
    return results


def loso_table(results: dict) -> str:
    """Markdown: one row per held-out source (accuracy, macro-F1, the share of neutral answers against the share of
    neutral faces, recall of every class present), and the mean accuracy."""
    lines = ["| held out | trained on | rows | accuracy | macro-F1 | neutral answers / true | recall per class |",
             "|" + "---|" * 7]
    for name, r in results.items():
        m = r["all"]
        cm = np.asarray(m["confusion_matrix"])
        neutral = LABELS.index("neutral")
        answers, true = cm[:, neutral].sum() / max(1, m["n"]), cm[neutral].sum() / max(1, m["n"])
        recall = ", ".join(f"{c} {_recall(m, c)}" for c in LABELS if m["per_class"].get(c, {}).get("support"))
        lines.append(f"| {name} | {' + '.join(r['trained_on'])} | {m['n']} | {m['accuracy']:.3f} | "
                     f"{m['macro_f1']:.3f} | {answers:.2f} / {true:.2f} | {recall} |")
    if results:
        mean = float(np.mean([r["all"]["accuracy"] for r in results.values()]))
        lines.append(f"| **mean** | | | **{mean:.3f}** | | | |")
    return "\n".join(lines)


def _recall(metrics: dict, label: str) -> str:
    """A class's recall, or – where the held-out rows have none of it."""
    row = metrics["per_class"].get(label, {})
    return f"{row['recall']:.2f}" if row.get("support") else "–"

