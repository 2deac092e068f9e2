"""Targets that keep what a model already does (issue #35): on the sources given a `teacher_weight`, each training
row's target becomes (1 - w) x its labels + w x the teacher's probabilities on that row.

Fine-tuning the shipped default with film faces and a third lab cost FER+ about a point at every weight average
(docs/research/six_sources.md): what a source no longer pulls towards is forgotten. Distilling the teacher's own
answers on those rows (learning without forgetting, Li and Hoiem 2016) anchors the old sources' function while the new
ones move it. The teacher's probabilities are its raw logits' softmax (no logit bias, no blendshape head, temperature
1): the student's biases and head are fitted after training as the teacher's were. They are computed once, on the
row's un-augmented crop through serving's preprocessing and mirror averaging, so a resumed run gets the same targets.
"""
from __future__ import annotations

import dataclasses
import logging

import numpy as np

from emotion.models import load_model

from .evaluation import predict_logits, softmax
from .rows import FaceSplit
from .sources import SourceConfig

log = logging.getLogger(__name__)


def teacher_probs(source: str, split: FaceSplit, loaded: tuple | None = None) -> np.ndarray:
    """The teacher's probabilities (N, 8) on `split`'s rows: raw logits (mirror-averaged as served), softmax at 1.
    `loaded`: the teacher's (model, info) when the caller has loaded it already."""
    model, info = loaded or load_model(source)[:2]
    raw = dataclasses.replace(info, logit_bias={}, blendshape_head={})
    return softmax(predict_logits(model, split, raw)).astype(np.float32)


def blend_targets(train: FaceSplit, sources: list[dict], teacher: str | None) -> dict[str, float]:
    """Blends the teacher into `train.targets` in place on every source with a teacher_weight; returns what it did
    (source name -> weight) for eval_results.json. Nothing happens without a teacher."""
    done, loaded = {}, None
    if teacher is None or train.source is None:
        return done
    for i, src in enumerate(SourceConfig.parse(s) for s in sources):
        w = src.teacher_weight
        rows = np.flatnonzero(train.source == i)
        if w <= 0 or not len(rows):
            continue
        loaded = loaded or load_model(teacher)[:2]  # once for every source it teaches
        probs = teacher_probs(teacher, train.subset(rows), loaded)
        if train.masks is not None:  # the teacher speaks only for the classes the source speaks for
            probs = probs * train.masks[rows]
            probs /= np.maximum(probs.sum(1, keepdims=True), 1e-12)
        agree = float((probs.argmax(1) == train.targets[rows].argmax(1)).mean())
        train.targets[rows] = (1 - w) * train.targets[rows] + w * probs
        log.info("source %s: %d targets take %.2f of %s's answers (it agrees with the labels on %.1f%%)", src.name,
                 len(rows), w, teacher, 100 * agree)
        done[src.name] = w
    return done
