"""Several processes through Hugging Face Accelerate (`accelerate launch`, `torchrun`): one process is the default.

The trainer keeps one meaning of a step whatever the process count: the global batch is `batch_size`, each of the
N processes takes every N-th position of it (ResumableSampler's rank/world), DDP averages the gradients, and the
checkpoint (written by the main process) resumes with any N that divides the batch.
"""
from __future__ import annotations

import logging
import os

import numpy as np
import torch

from .errors import ConfigError

log = logging.getLogger(__name__)


def launched_rank() -> int:
    """This process's rank as the launcher set it (0 when not launched): known before torch.distributed starts."""
    return int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")) or 0)


def make_accelerator(device: torch.device, find_unused: bool = False):
    """An Accelerator on `device`'s kind (DDP over gloo on CPU, NCCL on GPUs when launched with several processes).

    Mixed precision stays the trainer's own `precision` setting (bf16 autocast in the loop), so a single-process run
    computes exactly what it did before Accelerate; `accelerate launch --mixed_precision` is not used."""
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs

    handlers = [DistributedDataParallelKwargs(find_unused_parameters=True)] if find_unused else []
    return Accelerator(cpu=device.type == "cpu", mixed_precision="no", kwargs_handlers=handlers)


def check_batch(batch_size: int, world: int, grad_accum: int = 1) -> None:
    """The global batch must split evenly over the processes, and each process's share over the micro-batches."""
    if batch_size % world:
        raise ConfigError(f"invalid batch_size={batch_size}: with {world} processes it must be a multiple of {world} "
                          "(each process takes batch_size / processes images a step)")
    if (batch_size // world) % grad_accum:
        raise ConfigError(f"invalid grad_accum={grad_accum}: each process's {batch_size // world} images a step must "
                          f"split into {grad_accum} equal micro-batches")


def shard(n: int, rank: int, world: int) -> np.ndarray:
    """Row indices of this process's share of n rows (every world-th from rank)."""
    return np.arange(rank, n, world)


def gather_rows(acc, rows: np.ndarray, values: np.ndarray, n: int) -> np.ndarray:
    """Every process's (rows, values) put together in row order: the whole (n, ...) array, on every process."""
    if acc.num_processes == 1:
        return values
    from accelerate.utils import gather_object

    out = np.zeros((n, *values.shape[1:]), dtype=values.dtype)
    for part_rows, part in gather_object([(rows, values)]):
        out[part_rows] = part
    return out


def mean_over_processes(acc, value: torch.Tensor | float) -> float:
    """The mean of a scalar over the processes (the training loss each saw on its shard)."""
    t = torch.as_tensor(value, dtype=torch.float32, device=acc.device).reshape(1)
    return float(acc.reduce(t, reduction="mean")) if acc.num_processes > 1 else float(t)


def any_process(acc, flag: bool) -> bool:
    """True on every process when it is True on any (a signal one of them caught: all stop at the same step)."""
    if acc.num_processes == 1:
        return flag
    t = torch.tensor([float(flag)], device=acc.device)
    return bool(acc.reduce(t, reduction="sum").item() > 0)
