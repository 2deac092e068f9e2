"""Data: any `datasets` source -> canonical 8-way targets -> tensors through the inference core's preprocessing."""
from __future__ import annotations

import logging
import random
import re
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision import transforms as T

from emotion.labels import LABEL2ID, LABELS, canonical
from emotion.models import ModelInfo
from emotion.preprocess import to_tensor

from .config import TrainConfig

log = logging.getLogger(__name__)


class DataError(ValueError):
    """The data set cannot be used; the message says what to give instead."""


@dataclass
class FaceSplit:
    """One split held in memory: grayscale face crops, soft targets (N, 8), hard labels (N,), optional dup mask."""

    images: list[Image.Image]
    targets: np.ndarray
    labels: np.ndarray
    dup: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, idx: np.ndarray) -> "FaceSplit":
        return FaceSplit([self.images[i] for i in idx], self.targets[idx], self.labels[idx],
                         None if self.dup is None else self.dup[idx])


def load_raw(data: str):
    """`datasets.load_dataset` on a folder of parquet shards, an image folder, or a Hub id."""
    import datasets

    path = Path(data).expanduser()
    if path.is_dir():
        shards = sorted(path.rglob("*.parquet"))
        if shards:  # split name from the file name: train-0000-of-0003.parquet -> train
            files: dict[str, list[str]] = {}
            for f in shards:
                files.setdefault(re.split(r"[-_.]", f.name)[0], []).append(str(f))
            return datasets.load_dataset("parquet", data_files=files)
        return datasets.load_dataset("imagefolder", data_dir=str(path))
    if path.suffix or data.startswith((".", "/", "~")) or data.count("/") > 1:
        raise DataError(f"data path {data} not found; give a folder of parquet shards, an image folder "
                        "(one sub-folder per emotion) or a Hub dataset id such as org/name")
    try:
        return datasets.load_dataset(data)
    except Exception as e:  # offline, unknown id, gated: all end the same way for the user
        raise DataError(f"could not load the Hub dataset {data!r} ({type(e).__name__}); check the id and network, "
                        "or download it and pass the local folder with --data") from None


def _label_names(ds) -> list[str] | None:
    feat = ds.features.get("label")
    return list(feat.names) if hasattr(feat, "names") else None


def to_face_split(ds, soft_labels: bool) -> FaceSplit:
    """Decode a `datasets` split into canonical-order targets; names/ints mapped through the core's label map."""
    if "image" not in ds.column_names or "label" not in ds.column_names:
        raise DataError(f"the data set needs 'image' and 'label' columns; it has {ds.column_names}")
    names = _label_names(ds)
    raw = ds["label"]
    if names is not None:
        mapping = np.array([LABEL2ID[canonical(n)] for n in names])
        labels = mapping[np.asarray(raw)]
    elif raw and isinstance(raw[0], str):
        labels = np.array([LABEL2ID[canonical(n)] for n in raw])
    else:
        raise DataError("integer labels without class names: give the data set a ClassLabel feature or string labels")
    targets = np.eye(len(LABELS), dtype=np.float32)[labels]
    if soft_labels and "votes" in ds.column_names and names is not None:
        votes = np.asarray(ds["votes"], dtype=np.float32)  # in the order of `names`
        soft = np.zeros_like(targets)
        soft[:, mapping] = votes
        ok = soft.sum(1) > 0
        targets[ok] = soft[ok] / soft[ok].sum(1, keepdims=True)
    images = [img.convert("L") for img in ds["image"]]
    dup = np.asarray(ds["dup_in_train"], dtype=bool) if "dup_in_train" in ds.column_names else None
    return FaceSplit(images, targets, labels.astype(np.int64), dup)


def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, val): `fraction` of each class goes to validation, chosen with `seed`."""
    rng = np.random.default_rng(seed)
    val = []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        val.extend(idx[: max(1, round(len(idx) * fraction))])
    val = np.sort(np.array(val))
    return np.setdiff1d(np.arange(len(labels)), val), val


def load_splits(cfg: TrainConfig) -> tuple[FaceSplit, FaceSplit, dict]:
    """Train and validation splits (validation cut from train when missing), plus a description of the source."""
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


def pick_rows(length: int, n: int | None, seed: int | None = None) -> np.ndarray:
    """Row indices of a `--max-*-samples` cut: `n` rows drawn with `seed` (kept in order), the first `n` without a
    seed, or all rows when `n` is unset or covers them."""
    if not n or n >= length:
        return np.arange(length)
    if seed is None:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).permutation(length)[:n])


def train_augment(cfg: TrainConfig, size: int) -> T.Compose:
    """PIL -> PIL augmentation, applied before the shared preprocessing (training only)."""
    ops = [T.RandomResizedCrop(size, scale=(cfg.scale_min, 1.0), ratio=(0.9, 1.1), antialias=True)]
    if cfg.hflip:
        ops.append(T.RandomHorizontalFlip())
    if cfg.rotate:
        ops.append(T.RandomRotation(cfg.rotate, interpolation=T.InterpolationMode.BILINEAR))
    if cfg.jitter:
        ops.append(T.ColorJitter(brightness=cfg.jitter, contrast=cfg.jitter))
    return T.Compose(ops)


def sample_seed(seed: int, epoch: int, position: int) -> int:
    """The augmentation seed of the sample at `position` of epoch `epoch`'s order: the same in every process, with any
    number of loader workers, before and after a resume."""
    return int(np.random.SeedSequence([seed, epoch, position]).generate_state(1)[0])


@contextmanager
def seeded(seed: int):
    """torch, numpy and Python's RNGs seeded with `seed` inside the block, and put back as they were after it."""
    py, np_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        np.random.seed(seed % 2**32)
        random.seed(seed)
        try:
            yield
        finally:
            random.setstate(py)
            np.random.set_state(np_state)


class FaceDataset(torch.utils.data.Dataset):
    """Tensors for training or evaluation; preprocessing is the inference core's `to_tensor`.

    Training items are asked for as (index, position) by ResumableSampler: the augmentation is seeded by (seed, epoch,
    position), so it does not depend on worker count, process history or where a run was resumed."""

    def __init__(self, split: FaceSplit, info: ModelInfo, cfg: TrainConfig | None = None, train: bool = False,
                 epoch: int = 0):
        self.split, self.info = split, info
        self.augment = train_augment(cfg, info.native_size) if train else None
        self.erase = T.RandomErasing(p=cfg.erase, scale=(0.02, 0.2)) if train and cfg.erase else None
        self.seed, self.epoch = (cfg.seed if cfg else 0), epoch

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, key: int | tuple[int, int]):
        i, position = key if isinstance(key, tuple) else (key, key)
        img = self.split.images[i]
        if self.augment is None:
            x = to_tensor(img, self.info)
        else:
            with seeded(sample_seed(self.seed, self.epoch, position)):
                x = to_tensor(self.augment(img.resize((self.info.native_size,) * 2, Image.BILINEAR)), self.info)
                if self.erase is not None:
                    x = self.erase(x)
        return x, torch.from_numpy(self.split.targets[i]), int(self.split.labels[i])


class ResumableSampler(torch.utils.data.Sampler):
    """Per-epoch order fixed by (seed, epoch), so a resumed run replays the same batches from where it stopped.

    Yields (index, position in the epoch's order). `set_epoch(epoch, start, stop)` keeps positions [start, stop);
    `rank`/`world` keep every world-th of those from start + rank, so `world` processes each taking batch/world items
    per step cover exactly the positions one process would (and a run can resume with another number of processes)."""

    def __init__(self, labels: np.ndarray, seed: int, balance: bool = False, rank: int = 0, world: int = 1):
        self.labels, self.seed, self.balance, self.rank, self.world = labels, seed, balance, rank, world
        self.epoch, self.start, self.stop = 0, 0, len(labels)

    def set_epoch(self, epoch: int, start: int = 0, stop: int | None = None) -> None:
        self.epoch, self.start = epoch, start
        self.stop = len(self.labels) if stop is None else min(stop, len(self.labels))

    def order(self) -> np.ndarray:
        rng = np.random.default_rng(self.seed * 1000 + self.epoch)
        n = len(self.labels)
        if not self.balance:
            return rng.permutation(n)
        counts = np.bincount(self.labels, minlength=len(LABELS)).astype(np.float64)
        w = 1.0 / np.sqrt(counts[self.labels])  # square-root balancing: rare classes up, without 20x repeats
        return rng.choice(n, size=n, replace=True, p=w / w.sum())

    def _positions(self) -> range:
        return range(self.start + self.rank, self.stop, self.world)

    def __iter__(self):
        order = self.order()
        return iter([(int(order[p]), p) for p in self._positions()])

    def __len__(self) -> int:
        return len(self._positions())
