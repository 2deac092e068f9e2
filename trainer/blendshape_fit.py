"""Fit a model's blendshape head (emotion/blendshape_head.py) on a multi-source config's training rows.

The head is a logistic read-out of one label against the rest with the classifier's served margin as a fixed offset:
it learns what the face's geometry adds to what the classifier already says, so a face the classifier reads well
keeps its answer. Positives and negatives count equally; the negatives of each source count as the recipe draws that
source (its `weight`). Measured on small_cnn_transfer (docs/research/transfer.md), against giving every source's negatives
the same total or the selection mix's shares: the draw shares kept FER+ at its floor with the most contempt.
"""
from __future__ import annotations

import hashlib
import logging
import math
import os
from pathlib import Path

import numpy as np
import torch

from emotion.action_units import MODEL_SHA256
from emotion.atomic import atomic_write
from emotion.blendshape_head import BLENDSHAPES, FEATURES, BlendshapeHead, features
from emotion.face_geometry import GEOMETRY, N_LANDMARKS
from emotion.progress import progress

log = logging.getLogger(__name__)

SAVE_EVERY = 2000  # new faces between the cache's saves (~30 s of landmarker time; a save rewrites the whole file)


class FaceCache:
    """What the landmarker read on each image, kept in one .npz between runs (`path`; None keeps nothing). Rows are
    keyed by the sha256 of the image's mode, size and pixels, and the file holds only for the landmarker whose
    digest it was written with: another one, or an unreadable file, starts an empty cache."""

    def __init__(self, path: str | os.PathLike | None = None):
        self.path = Path(path) if path else None
        self.rows: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self.added = 0
        if self.path is not None and self.path.is_file():
            try:
                with np.load(self.path) as z:
                    if str(z["model"]) == MODEL_SHA256:
                        self.rows = dict(zip(z["keys"].tolist(), zip(z["shapes"], z["points"])))
            except (OSError, ValueError, KeyError):
                log.warning("%s is not a face cache this version can read: starting an empty one", self.path)

    @staticmethod
    def key(image) -> str:
        digest = hashlib.sha256(f"{image.mode} {image.size}".encode())
        digest.update(image.tobytes())
        return digest.hexdigest()

    def save(self) -> None:
        """Write the rows (atomically) if any were added."""
        if self.path is None or not self.added:
            return
        keys = list(self.rows)

        def write(tmp: Path) -> None:
            with tmp.open("wb") as f:  # a file object: np.savez would add ".npz" to a path
                np.savez(f, model=np.array(MODEL_SHA256), keys=np.array(keys),
                         shapes=np.stack([self.rows[k][0] for k in keys]),
                         points=np.stack([self.rows[k][1] for k in keys]))

        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(self.path, write)
        self.added = 0


def read_faces(images, reader, cache: FaceCache | None = None,
               save_every: int = SAVE_EVERY) -> tuple[np.ndarray, np.ndarray]:
    """(N, 52) blendshape scores in BLENDSHAPES order and (N, 478, 3) landmarks, read as serving reads a crop (the
    whole image is the box); NaN rows where the landmarker found no face. With a `cache` (FaceCache), an image read
    before is not read again, and what is read is saved to it (every `save_every` new faces too: a killed run
    keeps what it read)."""
    shapes = np.full((len(images), len(BLENDSHAPES)), np.nan, np.float32)
    points = np.full((len(images), N_LANDMARKS, 3), np.nan, np.float32)
    cache = cache or FaceCache()
    for i, img in enumerate(progress(images, desc="landmarks", unit="face", leave=False)):
        key = cache.key(img) if cache.path is not None else None
        if key in cache.rows:
            shapes[i], points[i] = cache.rows[key]
            continue
        found = reader.read(img, [(0, 0, img.width, img.height)])[0]
        if found.blendshapes is not None:
            shapes[i] = [found.blendshapes[n] for n in BLENDSHAPES]
            points[i] = found.landmarks
        if key is not None:
            cache.rows[key] = (shapes[i].copy(), points[i].copy())
            cache.added += 1
            if cache.added >= save_every:
                cache.save()
    cache.save()
    return shapes, points


def feature_matrix(faces: tuple[np.ndarray, np.ndarray], names) -> np.ndarray:
    """(N, len(names)) features of `read_faces`' rows; NaN rows where the landmarker found no face (or landmarks that
    are not one: serving reads those as no face too)."""
    shapes, points = faces
    out = np.full((len(shapes), len(names)), np.nan, np.float32)
    for i, (row, landmarks) in enumerate(zip(shapes, points)):
        if not np.isnan(row).any():
            try:
                out[i] = features(dict(zip(BLENDSHAPES, row.tolist())), names, landmarks)
            except ValueError:
                pass
    return out


def residuals(x: np.ndarray, weights: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """What the head adds to each row of `feature_matrix`: weights . (x - centre), 0 where no face was found."""
    return np.nan_to_num(x - centre) @ weights


def feature_names(prefixes) -> list[str]:
    """The features whose names start with one of `prefixes` ("mouth": every mouth shape; "geometry": the mouth's
    asymmetry on the landmarks, emotion.face_geometry)."""
    names = [f for f in FEATURES if f.startswith(tuple(p for p in prefixes if p != "geometry"))]
    names += [f for f in GEOMETRY if "geometry" in prefixes and f not in names]
    if not names:
        raise ValueError(f"no blendshape feature starts with {', '.join(prefixes)}: see emotion.blendshape_head "
                         "('geometry' names the landmarks' mouth asymmetry)")
    return names


def standardise(x: np.ndarray, names, negative: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The centre (the mean face of the other labels, over rows with a face) and scale of each feature the fit
    works in: blendshape scores as they are (0..1), landmark asymmetries (in eye-corner distances, ~100x smaller)
    divided by their spread over those faces."""
    rows = x[negative & ~np.isnan(x).any(axis=1)]
    if not len(rows):
        raise ValueError("the head needs faces of other labels that the landmarker can read among the training rows")
    centre = rows.mean(axis=0)
    scale = np.array([rows[:, j].std() if n in GEOMETRY else 1.0 for j, n in enumerate(names)])
    return centre, np.where(scale > 0, scale, 1.0)


def row_weights(positive: np.ndarray, source: np.ndarray, share: dict[int, float] | None = None) -> np.ndarray:
    """Positives and negatives weigh the same in total; among negatives each source weighs its `share` (by source
    index; equal shares when None) in total, a source without negatives giving its share to the others."""
    w = np.zeros(len(positive))
    neg_sources = [int(s) for s in np.unique(source[~positive])]
    shares = {s: (1.0 if share is None else float(share[s])) for s in neg_sources}
    for s in neg_sources:
        rows = ~positive & (source == s)
        w[rows] = 0.5 * shares[s] / sum(shares.values()) / rows.sum()
    if positive.any():
        w[positive] = 0.5 / positive.sum()
    return w


def fit_weights(x: np.ndarray, offset: np.ndarray, positive: np.ndarray, weight: np.ndarray,
                l2: float = 1e-3) -> np.ndarray:
    """Weights w minimising the weighted logistic loss of offset + x @ w + b (+ l2 |w|^2); b is dropped: a
    constant belongs to the label's logit bias, which is refitted with the head."""
    if not positive.any() or positive.all():
        raise ValueError("the head needs faces of the label and faces of other labels among the training rows")
    X, z0, y, sw = (torch.tensor(a, dtype=torch.float64) for a in (x, offset, positive.astype(float), weight))
    w = torch.zeros(X.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=500, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(z0 + X @ w + b, y, weight=sw, reduction="sum")
        loss = loss / sw.sum() + l2 * (w ** 2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach().numpy()


def make_head(label: str, names, weights: np.ndarray, x: np.ndarray, labels,
              logit_bias: dict[str, float] | None = None, centre: np.ndarray | None = None,
              gate_quantile: float = 1.0) -> BlendshapeHead:
    """The head with its gate and the logit biases to serve with it. The gate is the `gate_quantile` quantile of the
    residuals on the rows it was fitted on (1.0: the largest, so that the gate changes no top class on them), at
    least 0."""
    if not 0.0 < gate_quantile <= 1.0:
        raise ValueError(f"the gate's quantile must be in (0, 1], not {gate_quantile}")
    centre = np.zeros(len(names)) if centre is None else centre
    gate = max(0.0, float(np.quantile(residuals(x, weights, centre), gate_quantile)) if len(x) else 0.0)
    config = {"label": label, "weights": dict(zip(names, map(float, weights))),
              "gate": math.ceil(gate * 1e4) / 1e4,  # rounded up: still a bound
              "logit_bias": logit_bias or {}}
    if np.any(centre):
        config["centre"] = dict(zip(names, map(float, centre)))
    return BlendshapeHead.from_dict(config, labels)


def served(logits: np.ndarray, residual: np.ndarray, head: BlendshapeHead, labels) -> tuple[np.ndarray, list[int]]:
    """What serving computes from `logits` (N, classes; with the head's biases, without its residual): the residual
    added only on the rows the head's gate lets through (BlendshapeHead.gated), and those rows."""
    out, rows = head.gated(np.array(logits), labels, head.logit_bias)
    out[rows, list(labels).index(head.label)] += np.asarray(residual)[rows].astype(out.dtype)
    return out, rows
