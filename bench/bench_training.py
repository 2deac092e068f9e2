"""Training throughput (images/s) of each trainer config's model at its input size and batch size.

One step is what the trainer's loop does per batch: forward, soft-label cross-entropy, backward and an AdamW step
over the trainer's parameter groups, on random tensors. Data loading and augmentation are left out (they run in
loader workers beside the math), so this is the ceiling the loop can reach. Weights start random: `pretrained` and
`init` in the configs are ignored, they do not change the cost.

    python bench/bench_training.py [--steps 20] [--warmup 3] [--threads 2] [--device cpu] [--batch-size 32]
                               [--precision fp32] [--processes 1 2]

`--processes 1 2` also times the step as the trainer runs it under `accelerate launch` / `torchrun`: N processes
(DDP over gloo on CPU, NCCL on GPUs), each taking batch / N of the same global batch, gradients all-reduced; the
threads are split between them. images/s counts the global batch.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import socket
import sys
import time
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from trainer.config import CONFIG_DIR, TrainConfig  # noqa: E402
from trainer.modeling import build_model, param_groups  # noqa: E402
from trainer.train import memory_format, pick_device, soft_cross_entropy, use_bf16  # noqa: E402
from emotion.bench import cpu_name  # noqa: E402


def images_per_second(cfg: TrainConfig, device: torch.device, steps: int, warmup: int,
                      world: int = 1) -> tuple[float, float, int, str]:
    """(images/s, ms per step, parameters, precision) of `steps` timed training steps after `warmup` untimed ones, in
    the precision the trainer would use for this config on this device (bf16 autocast + channels_last, or fp32)."""
    torch.manual_seed(0)
    model, _ = build_model(cfg)
    bf16 = use_bf16(cfg.precision, device)
    fmt = memory_format(device, bf16)
    model.to(device, memory_format=fmt).train()
    opt = torch.optim.AdamW(param_groups(model, cfg), lr=cfg.lr)
    if world > 1:
        model = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)
    x = torch.randn(cfg.batch_size // world, cfg.channels, cfg.img_size, cfg.img_size, device=device).contiguous(
        memory_format=fmt)
    y = torch.softmax(torch.randn(cfg.batch_size // world, 8, device=device), dim=1)  # soft targets, like FER+ votes

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = soft_cross_entropy(model(x), y, cfg.label_smoothing, None)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t
    return ((cfg.batch_size // world) * world * steps / seconds, seconds * 1000 / steps,
            sum(p.numel() for p in model.parameters()), "bf16" if bf16 else "fp32")


def _ddp_worker(rank: int, world: int, port: int, threads: int, cfg: TrainConfig, device_name: str, steps: int,
                warmup: int, results) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(threads)
    device = pick_device(device_name)
    if device.type == "cuda":
        device = torch.device("cuda", rank)
        torch.cuda.set_device(device)
    torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=rank, world_size=world)
    try:
        result = images_per_second(cfg, device, steps, warmup, world)
        if rank == 0:
            results.put(result)
    finally:
        torch.distributed.destroy_process_group()


def distributed_images_per_second(cfg: TrainConfig, device_name: str, steps: int, warmup: int, world: int,
                                  threads: int):
    """images_per_second with `world` DDP processes (rank 0's timing; the all-reduce keeps the ranks in step)."""
    import torch.multiprocessing as mp

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    mp.spawn(_ddp_worker, args=(world, port, max(1, threads // world), cfg, device_name, steps, warmup, results),
             nprocs=world, join=True)
    return results.get()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    p.add_argument("--configs", nargs="*", default=sorted(map(str, CONFIG_DIR.glob("*.yaml"))))
    p.add_argument("--steps", type=int, default=20, help="timed steps per model")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, mps or auto")
    p.add_argument("--batch-size", type=int, default=None, help="override every config's batch size")
    p.add_argument("--precision", choices=("auto", "bf16", "fp32"), default=None,
                   help="override every config's precision (e.g. fp32 to see what bf16 autocast buys)")
    p.add_argument("--processes", type=int, nargs="+", default=[1],
                   help="time each config with these numbers of DDP processes (e.g. 1 2)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    where = torch.cuda.get_device_name(0) if device.type == "cuda" else cpu_name()
    print(f"machine: {where}, {torch.get_num_threads()} torch threads, torch {torch.__version__}, device {device}; "
          f"{args.steps} timed steps after {args.warmup} warm-up")
    print()
    print("| config | model | input | batch | processes | precision | params | ms/step | images/s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for path in map(Path, args.configs):
        values = yaml.safe_load(path.read_text()) or {}
        values.update(pretrained=False, init=None)
        if args.batch_size:
            values["batch_size"] = args.batch_size
        if args.precision:
            values["precision"] = args.precision
        fields = {f.name for f in dataclasses.fields(TrainConfig)}
        cfg = TrainConfig(**{k: v for k, v in values.items() if k in fields})
        for world in args.processes:
            if world == 1:
                rate, ms, params, precision = images_per_second(cfg, device, args.steps, args.warmup)
            else:
                rate, ms, params, precision = distributed_images_per_second(
                    cfg, args.device, args.steps, args.warmup, world, torch.get_num_threads())
            print(f"| {path.name} | {cfg.model} | {cfg.channels}x{cfg.img_size}x{cfg.img_size} | {cfg.batch_size} | "
                  f"{world} | {precision} | {params / 1e6:.1f} M | {ms:.0f} | {rate:.0f} |")


if __name__ == "__main__":
    main()
