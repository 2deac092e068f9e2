"""Action units as auxiliary training targets (issue #21): free labels for every face.

FER+'s crowd calls a closed-mouth frown neutral, so a model trained on its votes alone learns to overlook lowered
brows and pressed lips: the faces other labs pose as anger, contempt and fear. Face Landmarker reads those actions on
any face. With `aux_targets: action_units`, each training row gets the 23 action units of emotion.action_units
(read once on the row's image, kept in a FaceCache between runs), and a linear head on the network's pooled features
predicts them beside the classifier, trained with a binary cross-entropy against the 0..1 scores at `aux_weight`.
Rows where the landmarker found no face add no auxiliary loss. The head is used in training only: the export, and so
serving, is the classifier alone.

Each AU is the max of its left and right blendshapes, so a mirrored face has the same targets: the training
mirror (augment.geometry) needs no swap.
"""
from __future__ import annotations

import logging

import numpy as np
import torch
from torch import nn

from emotion.action_units import AU_TABLE, ActionUnitReader, action_units
from emotion.blendshape_head import BLENDSHAPES

from .blendshape_fit import FaceCache, read_faces

log = logging.getLogger(__name__)

AUX_TARGETS = {"action_units": tuple(AU_TABLE)}  # aux_targets (config.py checks the choice) -> its targets


def au_matrix(shapes: np.ndarray) -> np.ndarray:
    """(N, 23) action units from `read_faces`' (N, 52) blendshape rows; NaN rows stay NaN."""
    out = np.full((len(shapes), len(AU_TABLE)), np.nan, np.float32)
    for i, row in enumerate(shapes):
        if not np.isnan(row).any():
            out[i] = list(action_units(dict(zip(BLENDSHAPES, row.tolist()))).values())
    return out


def read_targets(images, kind: str, cache_path: str | None) -> np.ndarray:
    """(N, len(AUX_TARGETS[kind])) targets for `images` (NaN rows: no face found), read through the cache."""
    cache, reader = FaceCache(cache_path), ActionUnitReader()
    try:
        shapes, _ = read_faces(images, reader, cache)
    finally:
        reader.close()
    targets = au_matrix(shapes)
    log.info("auxiliary targets (%s): a face read on %d of %d training rows", kind,
             int((~np.isnan(targets[:, 0])).sum()), len(targets))
    return targets


class WithAux(nn.Module):
    """The model and a linear head on its pooled features: forward gives (class logits, auxiliary logits). The
    classifier sees exactly what the model alone would give it, so the exported model is `self.model`."""

    def __init__(self, model: nn.Module, n_targets: int):
        super().__init__()
        self.model = model
        self.head = nn.Linear(model.num_features, n_targets)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pooled = self.model.forward_head(self.model.forward_features(x), pre_logits=True)
        return self.model.get_classifier()(pooled), self.head(pooled)


def aux_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy of the predicted scores against the 0..1 targets, averaged over targets and over the
    batch's rows (a row without a face, NaN, adds 0: the weight of the auxiliary task follows how many faces were
    read)."""
    found = ~torch.isnan(target).any(dim=1)
    if not found.any():
        return pred.sum() * 0.0  # keeps the graph (DDP expects every parameter to get a gradient)
    per_row = nn.functional.binary_cross_entropy_with_logits(pred[found].float(), target[found],
                                                             reduction="none").mean(dim=1)
    return per_row.sum() / len(target)
