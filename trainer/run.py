"""Orchestration: train -> pick the best epoch -> fit the temperature -> evaluate -> export (-> push)."""
from __future__ import annotations

import logging
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from emotion.models import load_model

from . import checkpoint
from .config import TrainConfig
from .data import FaceSplit, load_splits
from .evaluation import compute_metrics, expected_calibration_error, fit_temperature, predict_logits, softmax
from .export import export_model
from .train import Trainer

log = logging.getLogger(__name__)


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo, else what `platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> str:
    """The machine in words: CPU model and cores, GPU if any, torch version."""
    cpu = cpu_name()
    gpu = f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ", no GPU"
    return f"{cpu}, {os.cpu_count()} cores{gpu}, torch {torch.__version__}"


def ms_per_face(model: torch.nn.Module, info, repeats: int = 30) -> float:
    """Median CPU milliseconds (one thread) to classify one face crop, as serving does it (Predictor.probabilities:
    preprocessing, flip averaging, calibrated softmax)."""
    from PIL import Image

    from emotion.predict import Predictor

    predictor = Predictor(model.to("cpu"), info)
    face = Image.fromarray(np.random.default_rng(0).integers(0, 255, (160, 160, 3), dtype=np.uint8))
    times = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one thread: a stable figure on a shared machine, and what one request gets
    for _ in range(repeats + 3):
        t = time.perf_counter()
        predictor.probabilities([face])
        times.append((time.perf_counter() - t) * 1000)
    torch.set_num_threads(threads)
    return float(np.median(times[3:]))


def evaluate_splits(model, info, val: FaceSplit, device: str = "cpu") -> tuple[dict, float]:
    """Fit T on validation, then metrics on validation whole and (when marked) without train duplicates."""
    logits = predict_logits(model, val, info, device=device)
    temperature = fit_temperature(logits, val.labels)
    splits = {"validation": compute_metrics(logits, val.labels, temperature)}
    splits["validation"]["ece_after_crossfit"] = crossfit_ece(logits, val.labels)
    if val.dup is not None and val.dup.any():
        keep = ~val.dup
        splits["validation_dedup"] = compute_metrics(logits[keep], val.labels[keep], temperature)
    return splits, temperature


def crossfit_ece(logits: np.ndarray, labels: np.ndarray, seed: int = 0) -> float:
    """ECE after scaling, honestly: T fitted on one half of validation, ECE measured on the other, both ways."""
    half = np.random.default_rng(seed).permutation(len(labels)) < len(labels) // 2
    probs = np.zeros((len(labels), logits.shape[1]))
    for fit, test in ((half, ~half), (~half, half)):
        probs[test] = softmax(logits[test], fit_temperature(logits[fit], labels[fit]))
    return expected_calibration_error(probs, labels)


def _remove_empty(folder: Path) -> None:
    """Removes `folder` and the parents it leaves empty (runs/ too, when nothing else is in it)."""
    try:
        while folder != folder.parent:
            folder.rmdir()  # only succeeds on an empty folder
            folder = folder.parent
    except OSError:
        pass


def train_and_export(cfg: TrainConfig) -> Path:
    """The whole `python -m trainer train` job; rerunning it resumes, and a finished run only re-exports."""
    out = Path(cfg.output_dir)
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    cfg.save(out / "config.yaml")
    try:
        train, val, source = load_splits(cfg)
    except BaseException:
        if created:  # a run that failed before training leaves no empty runs/* folder behind
            (out / "config.yaml").unlink(missing_ok=True)
            _remove_empty(out)
        raise
    log.info("data: %d train / %d validation faces from %s", len(train), len(val), cfg.data)
    trainer = Trainer(cfg, train, val)
    history = trainer.fit()
    best = checkpoint.load(trainer.ckpt_dir / "best.safetensors")
    model, info = trainer.model.cpu(), trainer.info
    model.load_state_dict(best["model"])
    if cfg.export_dtype == "float16":  # evaluate (and fit T on) exactly the weights that will be shipped
        model.half().float()
    splits, info.temperature = evaluate_splits(model, info, val)
    results = {
        "model_name": Path(cfg.output_dir).name, "architecture": cfg.model,
        "dataset": {"name": "FER+ (FER2013 images, Microsoft FERPlus labels)" if "ferplus" in cfg.data.lower()
                    else cfg.data, "path": cfg.data, **source},
        "splits": splits, "temperature": info.temperature, "best_epoch": best["epoch"],
        "params": sum(p.numel() for p in model.parameters()), "ms_per_face_cpu": ms_per_face(model, info),
        "train_time_s": round(trainer.elapsed), "machine": machine(), "epochs": cfg.epochs, "history": history,
        "train_config": {k: v for k, v in vars(cfg).items() if k != "extra"}, **cfg.extra,
    }
    export_dir = export_model(model, info, out / "export", results, cfg.export_dtype)
    _check_export(export_dir, model, info)
    return export_dir


def _check_export(export_dir: Path, model, info) -> None:
    """The exported folder must give the trained model's logits back (half precision within 1e-2)."""
    loaded, _, _ = load_model(f"local-dir:{export_dir}")
    x = torch.randn(2, *info.input_size)
    with torch.inference_mode():
        diff = (loaded(x) - model.eval()(x)).abs().max().item()
    assert diff < 5e-2, f"export round trip changed logits by {diff}"
