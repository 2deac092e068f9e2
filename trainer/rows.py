"""Rows at the bottom of the trainer: `datasets` sources -> decoded face splits in the canonical label order.

Nothing here knows about configs or training; `sources.py` (one source -> rows), `config.py` and `data.py` (a run's
splits, tensors, sampling) build on it.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from emotion.labels import LABEL2ID, canonical

from .errors import DataError


@dataclass
class FaceSplit:
    """One split held in memory: face crops, soft targets (N, 8), hard labels (N,), and per-row facts.

    `masks` (N, 8) marks the classes each row's source speaks for (None = all 8); `context` (N,) is the extra margin
    kept around the serving crop (photos kept for re-framing, 0 for ready crops); `dup` marks FER+ rows whose pixels
    also occur in train; `views` names row subsets reported on their own ("dedup", "clean").
    """

    images: list[Image.Image]
    targets: np.ndarray
    labels: np.ndarray
    dup: np.ndarray | None = None
    masks: np.ndarray | None = None
    context: np.ndarray | None = None
    views: dict[str, np.ndarray] = field(default_factory=dict)
    source: np.ndarray | None = None  # (N,) index of each row's source in a multi-source run
    aux: np.ndarray | None = None  # (N, K) auxiliary targets (trainer/aux_targets.py); NaN rows: none for that face
    groups: np.ndarray | None = None  # (N,) who or what each row comes from (a person, a film): bootstrap by it

    def __post_init__(self):
        if self.dup is not None and "dedup" not in self.views:
            self.views = {"dedup": ~self.dup, **self.views}

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, idx: np.ndarray) -> "FaceSplit":
        pick = lambda a: None if a is None else a[idx]  # noqa: E731
        return FaceSplit([self.images[i] for i in idx], self.targets[idx], self.labels[idx], pick(self.dup),
                         pick(self.masks), pick(self.context), {k: v[idx] for k, v in self.views.items()},
                         pick(self.source), pick(self.aux), pick(self.groups))

    @classmethod
    def concat(cls, splits: list["FaceSplit"], masks: list[np.ndarray]) -> "FaceSplit":
        """Several sources' train splits as one, each row keeping its source's class mask and its source id."""
        n = [len(s) for s in splits]
        ctx = [s.context if s.context is not None else np.zeros(len(s), np.float32) for s in splits]
        return cls([im for s in splits for im in s.images], np.concatenate([s.targets for s in splits]),
                   np.concatenate([s.labels for s in splits]), masks=np.repeat(np.stack(masks), n, axis=0),
                   context=np.concatenate(ctx), source=np.repeat(np.arange(len(splits)), n))


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


def label_ids(ds) -> tuple[np.ndarray, list[str] | None]:
    """The `label` column as canonical ids (through the core's label map), and the data set's own class names."""
    names = _label_names(ds)
    raw = ds["label"]
    if names is not None:
        mapping = np.array([LABEL2ID[canonical(n)] for n in names])
        return mapping[np.asarray(raw)].astype(np.int64), names
    if raw and isinstance(raw[0], str):
        return np.array([LABEL2ID[canonical(n)] for n in raw], dtype=np.int64), None
    raise DataError("integer labels without class names: give the data set a ClassLabel feature or string labels")


def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, val): `fraction` of each class goes to validation, chosen with `seed`."""
    rng = np.random.default_rng(seed)
    val = []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        val.extend(idx[: max(1, round(len(idx) * fraction))])
    val = np.sort(np.array(val))
    return np.setdiff1d(np.arange(len(labels)), val), val


def pick_rows(length: int, n: int | None, seed: int | None = None) -> np.ndarray:
    """Row indices of a `--max-*-samples` cut: `n` rows drawn with `seed` (kept in order), the first `n` without a
    seed, or all rows when `n` is unset or covers them."""
    if not n or n >= length:
        return np.arange(length)
    if seed is None:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).permutation(length)[:n])
