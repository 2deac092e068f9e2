"""Where and in what precision training runs: device choice, bf16 autocast, memory format."""
from __future__ import annotations

import torch


def pick_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    return torch.device(name)


def use_bf16(precision: str, device: torch.device) -> bool:
    """bf16 autocast: on CUDA, and on CPUs with native bf16 (AVX512-BF16/AMX), where it trains ResNet50 ~1.6x faster."""
    if precision != "auto":
        return precision == "bf16"
    if device.type == "cuda":
        return True
    return device.type == "cpu" and torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()


def memory_format(device: torch.device, bf16: bool) -> torch.memory_format:
    """channels_last on CUDA and wherever bf16 autocast runs (oneDNN's fast path on CPU too), else contiguous."""
    return torch.channels_last if device.type == "cuda" or bf16 else torch.contiguous_format
