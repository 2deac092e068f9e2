"""Fit a model's blendshape head (emotion/blendshape_head.py) on a multi-source config's training rows.

The head is a logistic read-out of one label against the rest with the classifier's served margin as a fixed offset:
it learns what the face's geometry adds to what the classifier already says, so a face the classifier reads well
keeps its answer. Positives and negatives count equally; the negatives of each source count as the recipe draws that
source (its `weight`). Measured on small_cnn_transfer (docs/transfer.md), against giving every source's negatives
the same total or the selection mix's shares: the draw shares kept FER+ at its floor with the most contempt.
"""
from __future__ import annotations

import logging
import math

import numpy as np
import torch

from emotion.blendshape_head import BLENDSHAPES, FEATURES, BlendshapeHead, features

log = logging.getLogger(__name__)


def read_blendshapes(images, reader) -> np.ndarray:
    """(N, 52) blendshape scores in BLENDSHAPES order, read as serving reads a crop (the whole image is the box);
    NaN rows where the landmarker found no face."""
    out = np.full((len(images), len(BLENDSHAPES)), np.nan, np.float32)
    for i, img in enumerate(images):
        found = reader.read(img, [(0, 0, img.width, img.height)])[0]
        if found.blendshapes is not None:
            out[i] = [found.blendshapes[n] for n in BLENDSHAPES]
    return out


def feature_matrix(blendshapes: np.ndarray, names) -> np.ndarray:
    """(N, len(names)) features of `read_blendshapes`' rows; a row without landmarks is all zeros (no residual)."""
    out = np.zeros((len(blendshapes), len(names)), np.float32)
    for i, row in enumerate(blendshapes):
        if not np.isnan(row).any():
            out[i] = features(dict(zip(BLENDSHAPES, row.tolist())), names)
    return out


def feature_names(prefixes) -> list[str]:
    """The features whose names start with one of `prefixes` ("mouth": every mouth shape)."""
    names = [f for f in FEATURES if f.startswith(tuple(prefixes))]
    if not names:
        raise ValueError(f"no blendshape feature starts with {', '.join(prefixes)}: see emotion.blendshape_head")
    return names


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
              logit_bias: dict[str, float] | None = None) -> BlendshapeHead:
    """The head with its gate (the largest residual on the rows it was fitted on, at least 0) and the logit biases
    to serve with it."""
    gate = max(0.0, float((x @ weights).max()) if len(x) else 0.0)
    return BlendshapeHead.from_dict({"label": label, "weights": dict(zip(names, map(float, weights))),
                                     "gate": math.ceil(gate * 1e4) / 1e4,  # rounded up: still a bound
                                     "logit_bias": logit_bias or {}}, labels)
