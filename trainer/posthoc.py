"""After training: choices made on validation, with every candidate's scores kept for the model card.

- `fit_neutral_bias`: a prior on the neutral logit that serving adds (FER+ taggers call subtle faces neutral).
- `fit_class_bias` on contempt: a source with one class (wild contempt crops) shifts the model's prior towards that
  class; the contempt logit's bias is chosen on the selection mix under the floors, so FER+'s precision holds.
  `fit_biases` chooses the neutral and contempt biases together (a 2-D grid), since each moves the other's trade-off.
- `recalibrate_bn`: BatchNorm statistics re-estimated on un-augmented training faces. Training batches are
  augmented (blur, JPEG, noise, gamma...), so the running statistics describe degraded faces, not the clean ones a
  user or the validation split shows; measured on small_cnn_mixed, this mismatch alone cost FER+ accuracy.
- `fit_interpolation`: WiSE-FT (Wortsman et al., 2022): the fine-tuned weights averaged with the starting weights,
  theta = (1 - a) * theta_init + a * theta_tuned. A fine-tune on a new source drifts from what the model knew; the
  average keeps most of the new source's gain at a fraction of the old source's cost.
Both pick the candidate with the best selection score (`select_on`, `select_floor`), scored as serving scores.
Each scored average is kept beside the checkpoints (`interpolation.json`), so a rerun of a finished or interrupted
run scores only the averages it does not have yet (a resnet50 candidate costs ~1.5 minutes on 2 cores).
"""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import torch

from emotion.atomic import atomic_write

from .config import TrainConfig
from .data import FaceDataset, FaceSplit, ResumableSampler
from .evaluation import predict_logits, view_reports
from .modeling import build_model
from .selection import select_score

log = logging.getLogger(__name__)

BIAS_GRID = tuple(float(b) for b in np.round(np.arange(0.5, -2.01, -0.1), 2))
# Biases whose selection score is within this of the best are ties, and the smallest change wins: 0.2 points is
# under a third of one standard error of accuracy on FER+ validation (3,396 faces), so such gains are noise, while
# a larger bias costs the minority classes (measured: +0.5 instead of +0.3 on the EMA small_cnn gained 0.2 points
# of FER+ accuracy and lost 1.6 points of its macro-F1).
BIAS_TIE = 0.002
CONTEMPT_GRID = tuple(float(b) for b in np.round(np.arange(-2.0, 2.01, 0.1), 2))


def fit_neutral_bias(logits: dict[str, np.ndarray], vals: dict[str, FaceSplit], labels: list[str],
                     cfg: TrainConfig, grid=BIAS_GRID, quiet: bool = False) -> dict:
    """The neutral logit bias maximising the selection mix on validation, with every report at every bias tried."""
    return fit_class_bias(logits, vals, labels, cfg, "neutral", grid, quiet)


def fit_class_bias(logits: dict[str, np.ndarray], vals: dict[str, FaceSplit], labels: list[str],
                   cfg: TrainConfig, name: str, grid=BIAS_GRID, quiet: bool = False) -> dict:
    """The bias on class `name`'s logit maximising the selection mix on validation (ties: the smallest change),
    with every report at every bias tried."""
    rows = []
    for b in grid:
        reports = view_reports(shifted(logits, labels, name, b), vals)
        rows.append({"bias": float(b), "select": select_score(reports, cfg), "reports": reports})
    top = max(r["select"] for r in rows)
    best = min((r for r in rows if r["select"] >= top - BIAS_TIE), key=lambda r: abs(r["bias"]))
    if not quiet:
        log.info("%s bias %.2f: select %.4f (unbiased %.4f)", name, best["bias"], best["select"],
                 next(r["select"] for r in rows if r["bias"] == 0))
    return {"chosen": best["bias"], "metric": cfg.select_metric, "select_on": cfg.select_on, "grid": rows}


def recalibrate_bn(model: torch.nn.Module, train: FaceSplit, info, cfg: TrainConfig, rows: int = 4096) -> None:
    """Reset every BatchNorm's running mean/var and re-estimate them (a plain average) on `rows` un-augmented
    training faces drawn with the sources' weights."""
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return
    weights = [s["weight"] for s in cfg.sources] if cfg.sources else None
    sampler = ResumableSampler(train.labels, cfg.seed, source=train.source, weights=weights)
    keys = [k[0] for k in sampler][:rows]
    loader = torch.utils.data.DataLoader(FaceDataset(train, info), batch_size=256, sampler=keys)
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the whole pass
    model.train()
    with torch.no_grad():
        for x, *_ in loader:
            model(x)
    model.eval()
    for m, momentum in zip(bns, momenta):
        m.momentum = momentum


def sweep_key(tuned: dict[str, torch.Tensor], cfg: TrainConfig, vals: dict[str, FaceSplit],
              train: FaceSplit | None) -> str:
    """What a scored average depends on: the fine-tuned weights, the start, the rows and how candidates are judged.
    A cached row with another key is never reused."""
    h = hashlib.sha256()
    for name, tensor in sorted(tuned.items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    judged = {k: getattr(cfg, k) for k in ("init", "select_on", "select_floor", "select_metric", "neutral_bias",
                                           "contempt_bias", "recalibrate_bn", "seed", "sources")}
    judged["rows"] = {name: len(split) for name, split in vals.items()} | {"train": len(train) if train else 0}
    h.update(json.dumps(judged, sort_keys=True, default=str).encode())
    return h.hexdigest()


def _cached_rows(cache: Path | None, key: str) -> dict[float, dict]:
    """The averages already scored under `key` (none if the file is missing, unreadable or for other weights)."""
    try:
        data = json.loads(cache.read_text()) if cache is not None and cache.is_file() else {}
    except (OSError, ValueError):
        return {}
    return {float(r["alpha"]): r for r in data.get("rows", [])} if data.get("key") == key else {}


def _write_rows(cache: Path | None, key: str, rows: list[dict]) -> None:
    if cache is not None:  # a run killed mid-write keeps the previous file
        text = json.dumps({"key": key, "rows": rows}, indent=1, default=float)
        atomic_write(cache, lambda tmp: tmp.write_text(text))


def fit_interpolation(model: torch.nn.Module, info, vals: dict[str, FaceSplit], cfg: TrainConfig,
                      train: FaceSplit | None = None, cache: Path | None = None) -> dict:
    """Set `model` to the best average of its weights with `cfg.init`'s (jointly with the biases that are fitted),
    over `cfg.interpolate_grid`. `cache`: a JSON file of the averages scored so far for these weights, read and
    extended, so a rerun scores only the new ones."""
    if not cfg.init:
        raise ValueError("interpolate: fit needs init: the weights the fine-tune started from")
    start = build_model(cfg)[0].state_dict()
    tuned = {k: v.clone() for k, v in model.state_dict().items()}
    key = sweep_key(tuned, cfg, vals, train)
    done, rows = _cached_rows(cache, key), []
    for a in cfg.interpolate_grid:
        if float(a) in done:
            rows.append(done[float(a)])
            log.info("interpolation %.2f: select %.4f (scored before: %s)", a, rows[-1]["select"], cache)
            continue
        model.load_state_dict(mix(start, tuned, a))
        if cfg.recalibrate_bn and train is not None:
            recalibrate_bn(model, train, info, cfg)
        logits = {name: predict_logits(model, split, info) for name, split in vals.items()}
        sweeps, biased = fit_biases(logits, vals, info.labels, cfg)
        reports = view_reports(biased, vals)
        rows.append({"alpha": a, "bias": sweeps["neutral"]["chosen"] if "neutral" in sweeps else 0.0,
                     "contempt_bias": sweeps["contempt"]["chosen"] if "contempt" in sweeps else 0.0,
                     "select": select_score(reports, cfg), "reports": reports})
        log.info("interpolation %.2f: select %.4f (neutral bias %.1f, contempt bias %.1f)", a, rows[-1]["select"],
                 rows[-1]["bias"], rows[-1]["contempt_bias"])
        _write_rows(cache, key, list({float(r["alpha"]): r for r in [*done.values(), *rows]}.values()))
    best = max(rows, key=lambda r: (round(r["select"], 6), r["alpha"]))
    model.load_state_dict(mix(start, tuned, best["alpha"]))
    if cfg.recalibrate_bn and train is not None:
        recalibrate_bn(model, train, info, cfg)
    return {"chosen": best["alpha"], "grid": rows}


BIASES = (("neutral", BIAS_GRID), ("contempt", CONTEMPT_GRID))  # the classes whose logit bias can be fitted


def fit_biases(logits: dict[str, np.ndarray], vals: dict[str, FaceSplit], labels: list[str], cfg: TrainConfig,
               quiet: bool = True) -> tuple[dict[str, dict], dict[str, np.ndarray]]:
    """The biases the config fits (neutral, contempt), chosen jointly: every neutral bias with the best contempt bias
    on top of it, the best pair winning (ties within BIAS_TIE: the smallest total change). Returns their sweeps by
    class name (neutral's grid rows carry the select of each neutral bias with its best contempt bias; contempt's
    sweep is the one at the chosen neutral bias) and `logits` with the chosen biases added.

    The weight-average sweep and the export's evaluation both fit them this way, so an average is judged with the
    biases it will be served with. Measured on the transfer recipe (issue #21): fitted one after the other, every
    average past 0.7 fell under the FER+ floor, because neutral's bias was chosen with contempt's at zero (contempt
    over-called on FER+ faces, no neutral bias reached the floor) and contempt's was then fitted from there."""
    todo = [(name, grid) for name, grid in BIASES if getattr(cfg, f"{name}_bias") == "fit"]
    sweeps, biased, _ = _fit_joint(logits, vals, labels, cfg, todo)
    if not quiet:
        for name, sweep in sweeps.items():
            log.info("%s bias %.2f", name, sweep["chosen"])
    return sweeps, biased


def _fit_joint(logits, vals, labels, cfg, todo) -> tuple[dict[str, dict], dict[str, np.ndarray], dict]:
    """`todo`'s biases (first class outermost) maximising the selection mix: (sweeps, biased logits, and the chosen
    candidate's select and reports)."""
    if not todo:
        reports = view_reports(logits, vals)
        return {}, logits, {"select": select_score(reports, cfg), "reports": reports}
    (name, grid), rest = todo[0], todo[1:]
    if not rest:
        sweep = fit_class_bias(logits, vals, labels, cfg, name, grid, quiet=True)
        chosen = next(r for r in sweep["grid"] if r["bias"] == sweep["chosen"])
        return {name: sweep}, shifted(logits, labels, name, sweep["chosen"]), chosen
    rows = []
    for b in grid:
        inner, biased, scored = _fit_joint(shifted(logits, labels, name, b), vals, labels, cfg, rest)
        change = abs(b) + sum(abs(s["chosen"]) for s in inner.values())
        rows.append({"bias": float(b), "select": scored["select"], "reports": scored["reports"], "change": change,
                     "inner": inner, "logits": biased})
    top = max(r["select"] for r in rows)
    best = min((r for r in rows if r["select"] >= top - BIAS_TIE), key=lambda r: r["change"])
    grid_rows = [{"bias": r["bias"], "select": r["select"], "reports": r["reports"],
                  **{f"{k}_bias": s["chosen"] for k, s in r["inner"].items()}} for r in rows]
    sweep = {"chosen": best["bias"], "metric": cfg.select_metric, "select_on": cfg.select_on, "grid": grid_rows}
    return {name: sweep, **best["inner"]}, best["logits"], best


def shifted(logits: dict[str, np.ndarray], labels: list[str], name: str, bias: float) -> dict[str, np.ndarray]:
    """`logits` with `bias` added to class `name`'s logit, as serving adds `logit_bias`."""
    shift = np.zeros(len(labels), np.float32)
    shift[labels.index(name)] = bias
    return {k: v + shift for k, v in logits.items()}


def mix(start: dict, tuned: dict, a: float) -> dict:
    """(1 - a) * start + a * tuned for float tensors; integer buffers (BatchNorm's step count) from `tuned`."""
    return {k: (1 - a) * start[k].to(v.dtype) + a * v if v.is_floating_point() else v for k, v in tuned.items()}
