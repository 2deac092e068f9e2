"""Data: any `datasets` source -> canonical 8-way targets -> tensors through the inference core's preprocessing."""
from __future__ import annotations

import logging

import numpy as np
import torch
from PIL import Image

from emotion.labels import LABELS
from emotion.info import ModelInfo
from emotion.preprocess import to_array

from . import augment
from .config import TrainConfig
from .errors import DataError
from .rows import FaceSplit, label_ids, load_raw, pick_rows, stratified_split  # noqa: F401  (re-exported)
from .sources import SourceConfig, decode_rows, load_sources

log = logging.getLogger(__name__)


def to_face_split(ds, soft_labels: bool) -> FaceSplit:
    """Decode a `datasets` split into canonical-order targets (FER+ `votes` -> soft targets when `soft_labels`)."""
    src = SourceConfig("data", "", soft_column="votes" if soft_labels else None)
    rows = decode_rows(ds, src, None, train=False)
    dup = np.asarray(ds["dup_in_train"], dtype=bool) if "dup_in_train" in ds.column_names else None
    return FaceSplit(rows.images, rows.targets, rows.labels, dup)


def load_splits(cfg: TrainConfig) -> tuple[FaceSplit, dict[str, FaceSplit], dict]:
    """Train and validation splits (validation per source, keyed by report name), plus a description of the data.

    With `cfg.sources` every source is loaded (trainer/sources.py); otherwise `cfg.data` alone, its validation split
    (cut from train when missing) reported as `validation`.
    """
    if cfg.sources:
        return load_sources(cfg)
    train, val, described = load_single(cfg)
    return train, {"validation": val}, described


def load_single(cfg: TrainConfig) -> tuple[FaceSplit, FaceSplit, dict]:
    raw = load_raw(cfg.data)
    if cfg.train_split not in raw:
        raise DataError(f"no split {cfg.train_split!r} in {cfg.data}; it has {', '.join(raw)} (set --train-split)")
    if cfg.val_split in raw:  # rows are selected before decoding: a tiny run need not decode 30k images
        train_rows, val_rows = raw[cfg.train_split], raw[cfg.val_split]
        train_rows = train_rows.select(pick_rows(len(train_rows), cfg.max_train_samples, cfg.seed))
        val_rows = val_rows.select(pick_rows(len(val_rows), cfg.max_val_samples))
        train, val = to_face_split(train_rows, cfg.soft_labels), to_face_split(val_rows, cfg.soft_labels)
    else:
        train = to_face_split(raw[cfg.train_split], cfg.soft_labels)
        tr, va = stratified_split(train.labels, cfg.val_fraction, cfg.seed)
        log.info("no %r split: cut %d validation rows from train (seed %d)", cfg.val_split, len(va), cfg.seed)
        train, val = train.subset(tr), train.subset(va)
        train = train.subset(pick_rows(len(train), cfg.max_train_samples, cfg.seed))
        val = val.subset(pick_rows(len(val), cfg.max_val_samples))
    return train, val, {"path": cfg.data, "splits": list(raw), "train_rows": len(train), "val_rows": len(val)}


def sample_seed(seed: int, epoch: int, position: int) -> int:
    """A seed for (seed, epoch, position): the same in every process and after a resume."""
    return int(np.random.SeedSequence([seed, epoch, position]).generate_state(1)[0])


class FaceDataset(torch.utils.data.Dataset):
    """(tensor, soft target, label, class mask, auxiliary targets) per row (the last is empty without them);
    preprocessing is the inference core's `to_array` (the pixels serving sees), wrapped as a tensor.

    Training indexes it with (row, seed, epoch, position) keys from `ResumableSampler`: the augmentation of a draw
    depends on those alone, never on worker count or process history, so a resumed run sees the same pictures.
    """

    def __init__(self, split: FaceSplit, info: ModelInfo, cfg: TrainConfig | None = None, train: bool = False):
        self.split, self.info, self.cfg, self.train = split, info, cfg, train
        self.families = set(cfg.augment) if train else set()
        self.all_classes = torch.ones(len(LABELS), dtype=torch.bool)
        self.no_aux = torch.zeros(0)

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, key):
        i, rng = (key, None) if isinstance(key, (int, np.integer)) else (key[0], np.random.default_rng(key[1:]))
        img = self.split.images[i]
        context = 0.0 if self.split.context is None else float(self.split.context[i])
        x = torch.from_numpy(to_array(self.augmented(img, context, rng) if rng is not None
                                      else augment.reframe(img, context), self.info))
        if rng is not None and "occlusion" in self.families:
            x = augment.occlusion(x, rng, self.cfg.erase)
        mask = self.all_classes if self.split.masks is None else torch.from_numpy(self.split.masks[i])
        aux = self.no_aux if self.split.aux is None else torch.from_numpy(self.split.aux[i])
        return x, torch.from_numpy(self.split.targets[i]), int(self.split.labels[i]), mask, aux

    def augmented(self, img: Image.Image, context: float, rng: np.random.Generator) -> Image.Image:
        """The configured augmentation families, at the training data's native size (48 px for FER+)."""
        cfg, fam, size = self.cfg, self.families, self.info.native_size
        img = augment.reframe(img, context, rng if "framing" in fam else None, scale_min=cfg.scale_min,
                              scale_max=cfg.scale_max, shift=cfg.shift)
        img = augment.to_gray(img, rng if "gray" in fam else None)
        img = img.resize((size, size), Image.BOX if img.width > size else Image.BILINEAR)
        if "geometry" in fam:
            img = augment.geometry(img, rng, cfg.rotate, cfg.hflip)
        if "light" in fam:
            img = augment.light(img, rng, cfg.jitter)
        if "degrade" in fam:
            img = augment.degrade(img, rng)
        return img


class ResumableSampler(torch.utils.data.Sampler):
    """Per-epoch draws fixed by (seed, epoch), so a resumed run replays the same batches from where it stopped.

    With several sources, each epoch takes round(n * weight) draws from each source (weights normalised), where n
    is the number of training rows. Within a source, rows are shuffled (repeated when drawn more often than they
    exist) or, with `balance`, drawn with square-root class balancing. Yields (row, seed, epoch, position) keys.

    `set_epoch(epoch, start, stop)` keeps positions [start, stop); `rank`/`world` keep every world-th of those from
    start + rank, so `world` processes each taking batch/world items per step cover exactly the positions one process
    would (and a run can resume with another number of processes).
    """

    def __init__(self, labels: np.ndarray, seed: int, balance: bool = False, source: np.ndarray | None = None,
                 weights: list[float] | None = None, rank: int = 0, world: int = 1):
        self.labels, self.seed, self.balance, self.rank, self.world = labels, seed, balance, rank, world
        self.source = np.zeros(len(labels), int) if source is None else source
        w = np.asarray(weights if weights is not None else [1.0], dtype=np.float64)
        self.weights = w / w.sum()
        self.epoch, self.start, self.stop = 0, 0, len(labels)

    def set_epoch(self, epoch: int, start: int = 0, stop: int | None = None) -> None:
        self.epoch, self.start = epoch, start
        self.stop = len(self.labels) if stop is None else min(stop, len(self.labels))

    def order(self) -> np.ndarray:
        rng = np.random.default_rng(self.seed * 1000 + self.epoch)
        n = len(self.labels)
        counts = np.round(self.weights * n).astype(int)
        counts[-1] = n - counts[:-1].sum()
        return rng.permutation(np.concatenate([self._draw(rng, np.flatnonzero(self.source == s), k)
                                               for s, k in enumerate(counts)]))

    def _draw(self, rng: np.random.Generator, rows: np.ndarray, k: int) -> np.ndarray:
        if not self.balance:
            reps = -(-k // max(1, len(rows)))
            return np.concatenate([rng.permutation(rows) for _ in range(reps)])[:k]
        counts = np.bincount(self.labels[rows], minlength=len(LABELS)).astype(np.float64)
        w = 1.0 / np.sqrt(counts[self.labels[rows]])  # square-root balancing: rare classes up, without 20x repeats
        return rng.choice(rows, size=k, replace=True, p=w / w.sum())

    def _positions(self) -> range:
        return range(self.start + self.rank, self.stop, self.world)

    def __iter__(self):
        order = self.order()
        return iter([(int(order[p]), self.seed, self.epoch, p) for p in self._positions()])

    def __len__(self) -> int:
        return len(self._positions())
