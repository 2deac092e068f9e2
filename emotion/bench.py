"""Timing and machine facts for reports and benchmarks: what the CPU is, and how long serving takes per face.

Here, not in the trainer, so that evaluating, comparing and benchmarking never import the training loop. Torch is
imported only by `ms_per_face` (it times a torch model) and read by `machine` only where the caller loaded it.
"""
from __future__ import annotations

import importlib.metadata
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo, else what `platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine() -> str:
    """The machine in words: CPU model and cores, GPU if any (asked of torch where it is loaded), and the versions
    of torch and ONNX Runtime that are installed."""
    torch = sys.modules.get("torch")  # never imported here: a serving process must not load it to describe itself
    gpu = f", GPU {torch.cuda.get_device_name(0)}" if torch is not None and torch.cuda.is_available() else ", no GPU"
    versions = [f"{name} {v}" for name in ("torch", "onnxruntime") if (v := _version(name))]
    return ", ".join([f"{cpu_name()}, {os.cpu_count()} cores{gpu}", *versions])


def ms_per_face(model, info, repeats: int = 30) -> float:
    """Median CPU milliseconds (one thread) to classify one face crop with a torch `model`, as serving does it
    (Predictor.probabilities: preprocessing, flip averaging, calibrated softmax)."""
    import torch
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
