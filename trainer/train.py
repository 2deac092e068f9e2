"""The training loop: AdamW, warmup + cosine, soft-label cross-entropy, checkpoints that a rerun resumes from."""
from __future__ import annotations

import contextlib
import logging
import math
import random
import signal
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from emotion.labels import LABELS
from emotion.progress import line_due, progress

from . import checkpoint
from .aux_targets import AUX_TARGETS, WithAux, aux_loss
from .checkpoint import CheckpointError
from .config import ConfigError, TrainConfig, default_workers
from .device import memory_format, pick_device, use_bf16  # noqa: F401  (re-exported)
from .data import FaceDataset, FaceSplit, ResumableSampler, sample_seed
from .ema import WeightEMA
from .distributed import any_process, check_batch, gather_rows, make_accelerator, mean_over_processes, shard
from .evaluation import predict_logits, view_reports
from .modeling import build_model, param_groups
from .selection import select_score

log = logging.getLogger(__name__)

# what a checkpoint must share with the run resuming it: the weights' shapes and the meaning of a step
RESUME_FIELDS = ("model", "channels", "img_size", "batch_size", "seed", "balance", "train_rows", "aux_targets")


class Interrupted(SystemExit):
    """Raised after SIGTERM/SIGINT once the checkpoint is written; exit code 128 + signal."""


def _ignore_signals(worker_id: int) -> None:
    """Loader workers leave SIGINT/SIGTERM to the main process, which checkpoints and then stops them.

    (Ctrl-C signals the whole process group; a worker dying first would crash the run before it can save.)
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, smoothing: float,
                       class_weights: torch.Tensor | None, mask: torch.Tensor | None = None,
                       one_vs_rest: dict[int, float] | None = None) -> torch.Tensor:
    """Cross-entropy against soft targets, over each row's `mask` of classes its source speaks for.

    A row from a source without contempt gets a softmax over the other 7 classes: the model is taught which of
    those it is, and nothing about contempt (rather than that contempt never occurs).

    `one_vs_rest` (class index -> weight) adds, for rows whose mask holds the class, the binary cross-entropy of its
    probability p against its target t: -(t log p + (1 - t) log(1 - p)). The softmax term only asks a face's own
    class to be likely; this one also charges a face that is not contempt for the contempt it is given, most when p
    is near 1 (the FER+ faces a one-class contempt source teaches the model to call contempt).
    """
    logits = logits.float()
    if mask is None:
        mask = torch.ones_like(logits, dtype=torch.bool)
    targets = targets * (1 - smoothing) + smoothing * mask / mask.sum(1, keepdim=True)
    masked = logits.masked_fill(~mask, float("-inf"))
    norm = torch.logsumexp(masked, dim=1, keepdim=True)
    log_p = logits - norm
    loss = -(targets * log_p.masked_fill(~mask, 0.0)).sum(1)
    if class_weights is not None:
        loss = loss * (targets @ class_weights)
    for c, w in (one_vs_rest or {}).items():
        rest = torch.logsumexp(masked[:, torch.arange(masked.shape[1], device=masked.device) != c], dim=1)
        log_not = rest - norm[:, 0]  # log(1 - p_c), without cancelling 1 - p when p is near 1
        bce = -(targets[:, c] * log_p[:, c] + (1 - targets[:, c]) * log_not)
        loss = loss + w * torch.where(mask[:, c], bce, torch.zeros_like(bce))
    return loss.mean()


def rng_state() -> dict:
    np_state = np.random.get_state()
    return {"python": random.getstate(), "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)),
                                                   *np_state[2:]], "torch": torch.get_rng_state()}


def set_rng_state(s: dict) -> None:
    random.setstate((s["python"][0], tuple(s["python"][1]), s["python"][2]))
    n = s["numpy"]
    np.random.set_state((n[0], n[1].numpy().astype(np.uint32), *n[2:]))
    torch.set_rng_state(s["torch"])


class Trainer:
    """Holds the run's state; `fit()` trains (resuming from `output_dir/checkpoints/last.safetensors`)."""

    def __init__(self, cfg: TrainConfig, train: FaceSplit, val: FaceSplit | dict[str, FaceSplit]):
        self.cfg, self.train_split = cfg, train
        self.vals = val if isinstance(val, dict) else {"validation": val}  # report name -> split
        reports = [n for name, split in self.vals.items() for n in (name, *(f"{name}_{v}" for v in split.views))]
        missing = sorted((set(cfg.select_on or {}) | set(cfg.select_floor or {})) - set(reports))
        if missing:
            raise ConfigError(f"select_on/select_floor name {', '.join(missing)}; the validation reports are "
                              f"{', '.join(reports)}")
        self.out = Path(cfg.output_dir)
        self.ckpt_dir = self.out / "checkpoints"
        self.ckpt_dir.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(cfg.seed)
        random.seed(cfg.seed)
        np.random.seed(cfg.seed)
        # one process unless launched with several (accelerate launch / torchrun): then DDP, one shard each
        self.acc = make_accelerator(pick_device(cfg.device), find_unused=cfg.freeze_epochs > 0)
        self.device, self.rank, self.world = self.acc.device, self.acc.process_index, self.acc.num_processes
        check_batch(cfg.batch_size, self.world, cfg.grad_accum)
        if self.world > 1:
            log.info("%d processes (%s), %d images each per step", self.world, self.acc.distributed_type.value,
                     cfg.batch_size // self.world)
        self.model, self.info = build_model(cfg)  # the same weights everywhere (same seed; DDP broadcasts rank 0's)
        self.model.to(self.device)
        self.bf16 = use_bf16(cfg.precision, self.device)
        self.memory_format = memory_format(self.device, self.bf16)
        self.model.to(memory_format=self.memory_format)
        log.info("precision: %s%s", "bf16 autocast" if self.bf16 else "fp32",
                 ", channels_last" if self.memory_format == torch.channels_last else "")
        self.steps_per_epoch = max(1, len(train) // cfg.batch_size)
        self.total_steps = self.steps_per_epoch * cfg.epochs
        # with auxiliary targets the network trains with their head beside the classifier; the model stays apart
        self.aux = WithAux(self.model, len(AUX_TARGETS[cfg.aux_targets])).to(self.device) if cfg.aux_targets else None
        groups = param_groups(self.model, cfg)
        if self.aux is not None:
            groups.append({"params": list(self.aux.head.parameters()), "lr": cfg.lr, "weight_decay": 0.0})
        self.opt = torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.999))
        self.ddp = self.acc.prepare(self.model if self.aux is None else self.aux)  # itself in one process; DDP in several
        self.ema = WeightEMA(self.model, cfg.ema_decay) if cfg.ema_decay else None
        warm = max(1, int(cfg.warmup_epochs * self.steps_per_epoch))
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (
            1 + math.cos(math.pi * min(1.0, s / self.total_steps))))
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.device.type == "cuda")
        self.class_weights = self._class_weights() if cfg.balance == "weights" else None
        self.one_vs_rest = {LABELS.index(k): float(w) for k, w in (cfg.one_vs_rest or {}).items() if w}
        self.step, self.epoch, self.best_f1, self.history = 0, 0, float("-inf"), []  # a score under floors can be < -1
        self.loss_sum = 0.0  # this epoch's summed training loss so far (checkpointed: a resumed epoch reports it whole)
        self._signal, self._resume_checked = None, False
        self._reseed_rank()
        self._elapsed_before, self._t0 = 0.0, time.time()  # training wall time, summed over resumed sessions

    def _reseed_rank(self) -> None:
        """Processes other than the first draw their own dropout masks (rank 0 keeps the single-process stream)."""
        if self.rank:
            torch.manual_seed(sample_seed(self.cfg.seed, self.step, self.rank))

    @property
    def elapsed(self) -> float:
        return self._elapsed_before + time.time() - self._t0

    def _class_weights(self) -> torch.Tensor:
        counts = np.bincount(self.train_split.labels, minlength=len(LABELS)).astype(np.float64)
        w = np.sqrt(counts.sum() / (len(LABELS) * np.clip(counts, 1, None)))
        return torch.tensor(w / (w * counts / counts.sum()).sum(), dtype=torch.float32, device=self.device)

    # ------------------------------------------------------------------------------------------------ checkpoints
    def resume_key(self) -> dict:
        """The settings a resumed run must share with the checkpoint (RESUME_FIELDS)."""
        facts = {**vars(self.cfg), "train_rows": len(self.train_split)}
        return {k: facts[k] for k in RESUME_FIELDS}

    def save_checkpoint(self) -> None:
        """Written by the main process only (every process calls it: the epoch's loss is averaged over them)."""
        loss_sum = mean_over_processes(self.acc, self.loss_sum)
        if not self.acc.is_main_process:
            return
        checkpoint.save(self.ckpt_dir / "last.safetensors", {
            "model": self.model.state_dict(), **({"ema": self.ema.state_dict()} if self.ema else {}),
            **({"aux_head": self.aux.head.state_dict()} if self.aux is not None else {}),
            "optimizer": self.opt.state_dict(), "scheduler": self.sched.state_dict(),
            "scaler": self.scaler.state_dict(), "rng": rng_state(), "step": self.step, "epoch": self.epoch,
            "best_f1": self.best_f1, "history": self.history, "elapsed": self.elapsed, "resume_key": self.resume_key(),
            "loss_sum": loss_sum},
            keep_previous=True)

    def maybe_resume(self) -> bool:
        """Load `checkpoints/last.safetensors` (or the previous one when it is unreadable) if there is one. Refuses
        (CheckpointError, one line) a checkpoint of a different model, input or batch before anything is written."""
        if self._resume_checked:
            return self.step > 0
        self._resume_checked = True
        found = checkpoint.load_latest_good(self.ckpt_dir / "last.safetensors")
        if found is None:
            return False
        s, path = found
        self._check_compatible(s.get("resume_key", {}), path)
        try:
            self.model.load_state_dict(s["model"])
            self.opt.load_state_dict(s["optimizer"])
            if self.ema:
                if "ema" not in s:
                    raise KeyError("the checkpoint has no weight average (it was trained with ema_decay 0)")
                self.ema.load_state_dict(s["ema"])
            if self.aux is not None:
                self.aux.head.load_state_dict(s["aux_head"])
        except (RuntimeError, ValueError, KeyError) as e:
            raise CheckpointError(f"cannot resume from {path}: its weights do not fit this model "
                                  f"({str(e).splitlines()[0][:120]}); use a new --output-dir") from None
        self.sched.load_state_dict(s["scheduler"])
        self.scaler.load_state_dict(s["scaler"])
        set_rng_state(s["rng"])
        self.step, self.epoch, self.best_f1, self.history = s["step"], s["epoch"], s["best_f1"], s["history"]
        self._elapsed_before, self._t0 = s.get("elapsed", 0.0), time.time()
        self.loss_sum = s.get("loss_sum", 0.0)
        self._reseed_rank()
        log.info("resumed from %s at epoch %d, step %d", path, self.epoch, self.step)
        return True

    def _check_compatible(self, saved: dict, path: Path) -> None:
        now = self.resume_key()
        diff = [k for k in RESUME_FIELDS if k in saved and saved[k] != now[k]]
        if diff:
            was = ", ".join(f"{k}={saved[k]!r}" for k in diff)
            asked = ", ".join(f"{k}={now[k]!r}" for k in diff)
            raise CheckpointError(f"cannot resume {self.out}: its checkpoint has {was} but this run has {asked}; "
                                  "use a new --output-dir, or the old values to continue it")

    def _on_signal(self, signum, frame):
        self._signal = signum

    # ---------------------------------------------------------------------------------------------------- loop
    def fit(self) -> list[dict]:
        """Train to `cfg.epochs`, evaluating and checkpointing each epoch; returns the per-epoch history."""
        self.maybe_resume()
        old = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            while self.epoch < self.cfg.epochs:
                self._train_epoch()
                self._end_epoch()
        finally:
            for s, h in old.items():
                signal.signal(s, h)
        return self.history

    def _loader(self, start: int) -> torch.utils.data.DataLoader:
        """This epoch's batches from step `start` on. Augmentation is seeded per sample (FaceDataset), and the loader
        has its own generator: the global RNG (dropout) sees the same draws whether or not the run was resumed."""
        b = self.cfg.batch_size
        weights = [s["weight"] for s in self.cfg.sources] if self.cfg.sources else None
        sampler = ResumableSampler(self.train_split.labels, self.cfg.seed, balance=self.cfg.balance == "sampler",
                                   source=self.train_split.source, weights=weights, rank=self.rank, world=self.world)
        sampler.set_epoch(self.epoch, start * b, self.steps_per_epoch * b)
        workers = default_workers() if self.cfg.workers < 0 else self.cfg.workers
        return torch.utils.data.DataLoader(
            FaceDataset(self.train_split, self.info, self.cfg, train=True), batch_size=b // self.world,
            sampler=sampler, num_workers=workers, drop_last=True, worker_init_fn=_ignore_signals,
            pin_memory=self.device.type == "cuda", generator=torch.Generator().manual_seed(self.cfg.seed))

    def _set_frozen(self) -> None:
        frozen = self.epoch < self.cfg.freeze_epochs
        head = {id(p) for p in self.model.get_classifier().parameters()}
        for p in self.model.parameters():
            p.requires_grad_(id(p) in head or not frozen)

    def _train_epoch(self) -> None:
        cfg, start = self.cfg, self.step - self.epoch * self.steps_per_epoch
        self._set_frozen()
        self.model.train()
        bar = progress(self._loader(start), total=self.steps_per_epoch, initial=start, unit="step", leave=False,
                       desc=f"epoch {self.epoch + 1}/{cfg.epochs}", disable=not self.acc.is_main_process)
        t0, seen = time.perf_counter(), 0
        for x, y, _, mask, aux in bar:
            x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
            x = x.contiguous(memory_format=self.memory_format)
            self.opt.zero_grad(set_to_none=True)
            loss = self._backward(x, y, mask.to(self.device), aux.to(self.device))
            self.scaler.step(self.opt)
            self.scaler.update()
            self.sched.step()
            self.step += 1
            if self.ema:
                self.ema.update(self.model, self.step)
            self.loss_sum = self.loss_sum + loss.detach().float()  # a tensor: no device sync per step
            seen += len(x)
            if self.step % cfg.log_every == 0 or line_due(bar):
                bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{self.sched.get_last_lr()[0]:.2e}",
                                img_s=f"{seen / (time.perf_counter() - t0):.0f}")
            if any_process(self.acc, self._signal is not None):
                self._stop()
            if self.step % cfg.ckpt_every == 0:
                self.save_checkpoint()
        bar.close()
        log.info("epoch %d: %.0f images/s", self.epoch + 1, seen * self.world / max(time.perf_counter() - t0, 1e-9))

    def _backward(self, x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor, aux: torch.Tensor) -> torch.Tensor:
        """Gradients of the batch's mean loss, in `grad_accum` micro-batches (DDP syncs on the last one only); with
        auxiliary targets, their loss at `aux_weight` is part of it."""
        n, cfg = self.cfg.grad_accum, self.cfg
        total = torch.zeros((), device=x.device)
        for i, (xs, ys, ms, aux_s) in enumerate(zip(x.chunk(n), y.chunk(n), mask.chunk(n), aux.chunk(n))):
            sync = self.acc.no_sync(self.ddp) if i < n - 1 and self.world > 1 else contextlib.nullcontext()
            with sync, torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
                out = self.ddp(xs)
                logits, aux_pred = out if self.aux is not None else (out, None)
                loss = soft_cross_entropy(logits, ys, cfg.label_smoothing, self.class_weights, ms, self.one_vs_rest)
                if aux_pred is not None:
                    loss = loss + cfg.aux_weight * aux_loss(aux_pred, aux_s)
                loss = loss / n
            self.scaler.scale(loss).backward()
            total = total + loss.detach()
        return total

    def _stop(self) -> None:
        self.save_checkpoint()
        self.acc.wait_for_everyone()  # a launcher stops every process when one exits: let the main one finish writing
        self._signal = self._signal or signal.SIGTERM  # another process caught it
        if not self.acc.is_main_process:
            raise Interrupted(128 + self._signal)
        name = signal.Signals(self._signal).name
        tqdm.write(f"{name}: checkpoint saved at step {self.step}; rerun the same command to resume", file=sys.stderr)
        raise Interrupted(128 + self._signal)

    def _validate(self) -> dict[str, dict]:
        """Every validation split scored (each process its share of the rows), one report per split and view."""
        logits = {}
        for name, split in self.vals.items():
            rows = shard(len(split), self.rank, self.world)
            mine = split if self.world == 1 else split.subset(rows)
            part = predict_logits(self.model, mine, self.info, device=str(self.device))
            logits[name] = gather_rows(self.acc, rows, part, len(split))
        return view_reports(logits, self.vals)

    def _end_epoch(self) -> None:
        raw = None
        if self.ema:  # the raw weights are scored too, so the log shows what the average buys
            raw = {k: v["accuracy"] for k, v in self._validate().items()}
            log.info("epoch %d raw weights: %s", self.epoch + 1, "  ".join(f"{k} {v:.4f}" for k, v in raw.items()))
        averaged = self.ema.applied(self.model) if self.ema else contextlib.nullcontext()
        with averaged:  # the weights validated are the ones best.safetensors keeps and the export ships
            reports = self._validate()
        first = next(iter(reports.values()))
        self.epoch += 1
        m = {"accuracy": first["accuracy"], "macro_f1": first["macro_f1"], "select": select_score(reports, self.cfg),
             "reports": reports, "epoch": self.epoch, "step": self.step, "lr": self.sched.get_last_lr()[0],
             "train_loss": mean_over_processes(self.acc, self.loss_sum) / self.steps_per_epoch,
             **({"raw_accuracy": raw} if raw else {})}
        self.loss_sum = 0.0
        self.history.append(m)
        log.info("epoch %d/%d  train loss %.4f  %s  select %.4f", self.epoch, self.cfg.epochs, m["train_loss"],
                 "  ".join(f"{k} {v['accuracy']:.4f}/{v['macro_f1']:.4f}" for k, v in reports.items()), m["select"])
        if m["select"] > self.best_f1:  # best_f1 holds the best selection score (macro-F1 of validation by default)
            self.best_f1 = m["select"]
            if self.acc.is_main_process:
                weights = self.ema.state_dict() if self.ema else self.model.state_dict()
                checkpoint.save(self.ckpt_dir / "best.safetensors", {"model": weights,
                                                                     "epoch": self.epoch, "metrics": m},
                                keep_previous=True)
        self.save_checkpoint()
        if any_process(self.acc, self._signal is not None):
            self._stop()
