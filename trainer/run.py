"""Orchestration: train -> pick the best epoch -> fit the temperature -> evaluate -> export (-> push)."""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np
import torch

from emotion.bench import machine, ms_per_face
from emotion.models import load_model

from . import checkpoint, no_trade
from .aux_targets import read_targets
from .config import TrainConfig
from .data import FaceSplit, load_splits
from .evaluation import compute_metrics, expected_calibration_error, fit_temperature, predict_logits, softmax
from .export import export_model
from .posthoc import fit_biases, fit_interpolation, recalibrate_bn
from .teacher import blend_targets
from .train import Trainer

log = logging.getLogger(__name__)


def evaluate_splits(model, info, vals: FaceSplit | dict[str, FaceSplit], device: str = "cpu",
                    cfg: TrainConfig | None = None) -> tuple[dict, float, dict | None, dict[str, np.ndarray]]:
    """Fit the neutral and contempt biases (where the config says fit) and T on validation, then full metrics.

    Returns the metrics by report name (`validation`, `validation_dedup`, `posed`, `posed_clean`, ...), the
    temperature, and the neutral-bias sweep with the contempt sweep under "contempt" (None when neither is fitted).
    `info.logit_bias` is set to the chosen biases. Last, each report's logits as served with them.
    """
    vals = vals if isinstance(vals, dict) else {"validation": vals}
    logits = {name: predict_logits(model, split, info, device=device) for name, split in vals.items()}
    sweep = None
    if cfg is not None:  # neutral, then contempt on top of it, as the weight-average sweep judged them
        sweeps, logits = fit_biases(logits, vals, info.labels, cfg, quiet=False)
        if sweeps:
            info.logit_bias = {name: s["chosen"] for name, s in sweeps.items() if s["chosen"]}
            sweep = {**sweeps.get("neutral", {}), **({"contempt": sweeps["contempt"]} if "contempt" in sweeps else {})}
    # T from the reports that hold more than one class: on a one-class source (wild contempt crops) the NLL-optimal
    # T measures how often that class is missed, not calibration (measured on small_cnn_transfer: with it T 0.70 and
    # FER+ ECE after T 0.056; without it T 0.56 and 0.018)
    temperature = report_temperature(logits, vals)
    return report_metrics(logits, vals, temperature), temperature, sweep, logits


def report_temperature(logits: dict[str, np.ndarray], vals: dict) -> float:
    """T fitted on the reports that hold more than one class (all of them when none does)."""
    fit_on = [k for k, split in vals.items() if len(np.unique(split.labels)) > 1] or list(vals)
    return fit_temperature(np.concatenate([logits[k] for k in fit_on]),
                           np.concatenate([vals[k].labels for k in fit_on]))


def report_metrics(logits: dict[str, np.ndarray], vals: dict, temperature: float) -> dict[str, dict]:
    """Full metrics (eval_results.json's `splits`) of each report and each of its views, at `temperature`."""
    splits = {}
    for name, split in vals.items():
        splits[name] = compute_metrics(logits[name], split.labels, temperature)
        splits[name]["ece_after_crossfit"] = crossfit_ece(logits[name], split.labels)
        for view, rows in split.views.items():
            if rows.any() and not rows.all():
                splits[f"{name}_{view}"] = compute_metrics(logits[name][rows], split.labels[rows], temperature)
    return splits


def describe_data(cfg: TrainConfig, source: dict) -> dict:
    """What eval_results.json says about the training data (the model card lists every source and its terms)."""
    if cfg.sources:
        return {"name": " + ".join(s["name"] for s in cfg.sources), **source}
    name = "FER+ (FER2013 images, Microsoft FERPlus labels)" if "ferplus" in cfg.data.lower() else cfg.data
    return {"name": name, "path": cfg.data, **source}


def crossfit_ece(logits: np.ndarray, labels: np.ndarray, seed: int = 0) -> float:
    """ECE after scaling, honestly: T fitted on one half of validation, ECE measured on the other, both ways."""
    half = np.random.default_rng(seed).permutation(len(labels)) < len(labels) // 2
    probs = np.zeros((len(labels), logits.shape[1]))
    for fit, test in ((half, ~half), (~half, half)):
        probs[test] = softmax(logits[test], fit_temperature(logits[fit], labels[fit]))
    return expected_calibration_error(probs, labels)


def train_and_export(cfg: TrainConfig) -> Path:
    """The whole `python -m trainer train` job; rerunning it resumes, and a finished run only re-exports."""
    out = Path(cfg.output_dir)
    train, val, source = load_splits(cfg)
    log.info("data: %d train / %d validation faces", len(train), sum(len(v) for v in val.values()))
    if cfg.aux_targets:
        train.aux = read_targets(train.images, cfg.aux_targets, cfg.aux_cache or str(out / "faces.npz"))
    distilled = blend_targets(train, cfg.sources or [], cfg.teacher)
    base_logits = baseline_logits(cfg, val)
    trainer = Trainer(cfg, train, val)
    trainer.maybe_resume()  # an incompatible checkpoint is refused here, before config.yaml is overwritten
    if trainer.acc.is_main_process:
        cfg.save(out / "config.yaml")
    history = trainer.fit()
    trainer.acc.end_training()
    if not trainer.acc.is_main_process:  # launched with several processes: the main one evaluates and exports
        return out / "export"
    found = checkpoint.load_latest_good(trainer.ckpt_dir / "best.safetensors")
    if found is None:
        raise checkpoint.CheckpointError(f"no best.safetensors in {trainer.ckpt_dir}; delete that folder to retrain")
    best = found[0]
    model, info = trainer.model.cpu(), trainer.info
    model.load_state_dict(best["model"])
    interpolation = (fit_interpolation(model, info, val, cfg, train, trainer.ckpt_dir / "interpolation.json")
                     if cfg.interpolate == "fit" else None)
    if cfg.recalibrate_bn and interpolation is None:
        recalibrate_bn(model, train, info, cfg)
    if cfg.export_dtype == "float16":  # evaluate (and fit T on) exactly the weights that will be shipped
        model.half().float()
    splits, info.temperature, sweep, served = evaluate_splits(model, info, val, cfg=cfg)
    comparison = held_to_baseline(served, val, base_logits, out) if base_logits else None
    results = {
        "model_name": Path(cfg.output_dir).name, "architecture": cfg.model, "dataset": describe_data(cfg, source),
        "splits": splits, "temperature": info.temperature, "logit_bias": info.logit_bias, "best_epoch": best["epoch"],
        **({"neutral_bias_sweep": sweep} if sweep else {}), **({"interpolation": interpolation} if interpolation else {}),
        **({"teacher": {"model": cfg.teacher, "weights": distilled}} if distilled else {}),
        **({"baseline_comparison": {"baseline": cfg.baseline, "reports": comparison}} if comparison else {}),
        "params": sum(p.numel() for p in model.parameters()), "ms_per_face_cpu": ms_per_face(model, info),
        "train_time_s": round(trainer.elapsed), "machine": machine(),
        "precision": "bf16" if trainer.bf16 else "fp32",  # what precision: auto resolved to on this machine
        "epochs": cfg.epochs, "history": history,
        "train_config": {k: v for k, v in vars(cfg).items() if k != "extra"}, **cfg.extra,
    }
    export_dir = export_model(model, info, out / "export", results, cfg.export_dtype)
    _check_export(export_dir, model, info)
    quantize_export(export_dir, train, cfg.seed)
    return export_dir


def quantize_export(export_dir: Path, train: FaceSplit, seed: int, n: int = 512) -> None:
    """model.int8.onnx beside the export (emotion/quantize.py), calibrated on `n` training faces that are crops as
    served (no re-framing context); where int8 changes too many answers it is left out, and serving runs the float
    model.onnx."""
    from emotion.errors import EmotionError
    from emotion.quantize import quantize_onnx

    served = np.flatnonzero(train.context == 0) if train.context is not None else np.arange(len(train))
    rows = np.sort(np.random.default_rng(seed).permutation(served)[:n])
    try:
        quantize_onnx(export_dir, [train.images[i] for i in rows], f"training faces drawn with seed {seed}")
    except EmotionError as e:
        log.warning("no model.int8.onnx: %s", e)
    except Exception as e:  # noqa: BLE001  ONNX Runtime's quantizer: an optional file never fails a finished run
        log.warning("no model.int8.onnx: quantizing failed (%s: %s); serving runs model.onnx. Retry with python -m "
                    "trainer export-onnx %s --int8 DATA", type(e).__name__, e, export_dir)


def baseline_logits(cfg: TrainConfig, val: dict[str, FaceSplit]) -> dict[str, np.ndarray] | None:
    """The baseline's logits on every report, as the run's candidates are scored (None without `baseline:`); its
    no-trade floors join `cfg.select_floor` here, before training, so every choice of the run is held to them."""
    if not cfg.baseline:
        return None
    model, info, _ = load_model(cfg.baseline)
    # Scored as the candidates are: with its logit bias, without a blendshape head (the trainer fits none; the head
    # is fitted after export, then `trainer held-to` compares both as served). Its head's contempt set a floor the
    # candidates could meet only with a contempt bias, which turned smiles into contempt and cost FER+.
    info = dataclasses.replace(info, blendshape_head={})
    logits = {name: predict_logits(model, split, info) for name, split in val.items()}
    cfg.select_floor = no_trade.floors(logits, val, cfg.select_floor)
    log.info("floors held against %s: %s", cfg.baseline,
             ", ".join(f"{k} {v:.3f}" for k, v in cfg.select_floor.items()))
    return logits


def held_to_baseline(served: dict[str, np.ndarray], val: dict[str, FaceSplit], base_logits: dict[str, np.ndarray],
                     out: Path) -> dict:
    """The exported candidate (its logits as served on each report) beside the baseline on every report
    (`baseline_comparison.md` in the run's folder)."""
    comparison = no_trade.compare(served, base_logits, val)
    (out / "baseline_comparison.md").write_text(no_trade.table(comparison) + "\n")
    lost = no_trade.trades(comparison)
    if lost:
        log.warning("the candidate loses %s beyond noise against the baseline: see %s", ", ".join(lost),
                    out / "baseline_comparison.md")
    return comparison


def _check_export(export_dir: Path, model, info) -> None:
    """The exported folder must give the trained model's logits back (half precision within 1e-2)."""
    loaded, _, _ = load_model(f"local-dir:{export_dir}")
    x = torch.randn(2, *info.input_size)
    with torch.inference_mode():
        diff = (loaded(x) - model.eval()(x)).abs().max().item()
    assert diff < 5e-2, f"export round trip changed logits by {diff}"
