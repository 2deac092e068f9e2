"""Selection that cannot trade silently: every candidate is held to a baseline (the shipped default) on every source.

A recipe chosen on the sources it was measured on traded the ones it was not: on 2026-12-06 the shipped transfer
recipe gained CK+ and the contempt crops and lost about 3 points on film and web faces that no report showed. With
`baseline:` set, a run scores that model as served (its biases, temperature, flip and blendshape head) on every
validation report before training, and each report gets a floor: the baseline's accuracy less 1.96 standard errors
of a bootstrap over the report's groups (people or films where the source names them and there are at least
MIN_GROUPS of them, else rows). The floors join
`select_floor` (the higher of the two wins), so the best epoch, the weight average and the biases are all chosen
among candidates that keep every source. After export, `compare` sets the exported model beside the baseline per
report: accuracy with a paired group-bootstrap interval of the difference, recall per class, the share of neutral
answers against the true share, and the share of happy faces called contempt. A report whose interval lies wholly
below zero is a trade, and the run says so.
"""
from __future__ import annotations

import logging

import numpy as np

from emotion.labels import LABELS

from .rows import FaceSplit

log = logging.getLogger(__name__)

BOOTSTRAPS = 1000
Z = 1.96  # two-sided 95%
MIN_GROUPS = 5  # fewer people or films than this: bootstrap the rows (and say so), an interval over 1 person is none
NEUTRAL, HAPPY, CONTEMPT = LABELS.index("neutral"), LABELS.index("happy"), LABELS.index("contempt")


def report_rows(vals: dict[str, FaceSplit]) -> dict[str, tuple[str, np.ndarray]]:
    """Every report name (each source's split and each of its views) -> (its split's name, the rows it keeps)."""
    out = {}
    for name, split in vals.items():
        out[name] = (name, np.ones(len(split), bool))
        for view, keep in split.views.items():
            out[f"{name}_{view}"] = (name, np.asarray(keep, bool))
    return out


def _group_draws(groups: np.ndarray | None, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(group index of each row, BOOTSTRAPS x G draws of groups with replacement); rows stand for themselves where
    the report has fewer than MIN_GROUPS groups (one held-out person has no spread to draw from)."""
    ids = np.unique(groups, return_inverse=True)[1] if groups is not None else np.arange(n)
    if n and ids.max() + 1 < MIN_GROUPS:
        ids = np.arange(n)
    g = int(ids.max()) + 1 if n else 0
    return ids, np.random.default_rng(seed).integers(0, g, size=(BOOTSTRAPS, g))


def bootstrap_accuracy(correct: np.ndarray, groups: np.ndarray | None, seed: int = 0) -> np.ndarray:
    """Accuracy of each bootstrap resample of the groups (BOOTSTRAPS,)."""
    ids, draws = _group_draws(groups, len(correct), seed)
    hits = np.bincount(ids, weights=correct.astype(np.float64))
    rows = np.bincount(ids).astype(np.float64)
    return hits[draws].sum(1) / np.maximum(rows[draws].sum(1), 1)


def paired_difference(correct_new: np.ndarray, correct_old: np.ndarray, groups: np.ndarray | None,
                      seed: int = 0) -> tuple[float, float, float]:
    """(new - old accuracy, and its 2.5% and 97.5% bootstrap quantiles, resampling the same groups for both)."""
    ids, draws = _group_draws(groups, len(correct_new), seed)
    delta = np.bincount(ids, weights=correct_new.astype(np.float64) - correct_old.astype(np.float64))
    rows = np.bincount(ids).astype(np.float64)
    diffs = delta[draws].sum(1) / np.maximum(rows[draws].sum(1), 1)
    low, high = np.quantile(diffs, [0.025, 0.975])
    return float(correct_new.mean() - correct_old.mean()), float(low), float(high)


def floors(base_logits: dict[str, np.ndarray], vals: dict[str, FaceSplit],
           given: dict[str, float] | None = None) -> dict[str, float]:
    """`select_floor` with every report's no-trade floor: the baseline's accuracy less its noise (Z bootstrap SEs
    over groups), or the given floor where that is higher."""
    out = dict(given or {})
    for report, (name, keep) in report_rows(vals).items():
        split = vals[name]
        correct = base_logits[name][keep].argmax(1) == split.labels[keep]
        groups = split.groups[keep] if split.groups is not None else None
        floor = float(correct.mean() - Z * bootstrap_accuracy(correct, groups).std())
        out[report] = round(max(out.get(report, 0.0), floor), 4)
    return out


def source_facts(logits: np.ndarray, labels: np.ndarray) -> dict:
    """Accuracy, recall of each class present, neutral answers against neutral faces, happy faces called contempt."""
    pred = logits.argmax(1)
    happy = labels == HAPPY
    return {
        "n": int(len(labels)), "accuracy": float(np.mean(pred == labels)),
        "recall": {LABELS[c]: float(np.mean(pred[labels == c] == c)) for c in range(len(LABELS)) if (labels == c).any()},
        "neutral_answers": float(np.mean(pred == NEUTRAL)), "neutral_true": float(np.mean(labels == NEUTRAL)),
        "happy_as_contempt": float(np.mean(pred[happy] == CONTEMPT)) if happy.any() else None,
    }


def compare(new_logits: dict[str, np.ndarray], base_logits: dict[str, np.ndarray],
            vals: dict[str, FaceSplit]) -> dict[str, dict]:
    """Per report: the new model's and the baseline's facts, the paired difference and whether it is a trade."""
    out = {}
    for report, (name, keep) in report_rows(vals).items():
        split = vals[name]
        labels, groups = split.labels[keep], split.groups[keep] if split.groups is not None else None
        new, old = new_logits[name][keep], base_logits[name][keep]
        diff, low, high = paired_difference(new.argmax(1) == labels, old.argmax(1) == labels, groups)
        out[report] = {"new": source_facts(new, labels), "baseline": source_facts(old, labels),
                       "difference": diff, "interval": [low, high], "trade": high < 0,
                       "groups": int(len(np.unique(groups))) if groups is not None else int(len(labels)),
                       "bootstrap": "groups" if groups is not None and len(np.unique(groups)) >= MIN_GROUPS
                       else "rows"}
    return out


def table(comparison: dict[str, dict]) -> str:
    """Markdown: one row per report, the baseline against the new model."""
    lines = ["| report | rows (groups) | baseline | new | difference (95% interval) | neutral answers / true | "
             "happy as contempt | recall (new) |", "|" + "---|" * 8]
    for report, c in comparison.items():
        new, old = c["new"], c["baseline"]
        hc = ("–" if new["happy_as_contempt"] is None
              else f"{new['happy_as_contempt']:.3f} (was {old['happy_as_contempt']:.3f})")
        recall = ", ".join(f"{k} {v:.2f}" for k, v in new["recall"].items())
        flag = " **trade**" if c["trade"] else ""
        groups = f"{c['groups']}" + ("" if c.get("bootstrap", "groups") == "groups" or c["groups"] == new["n"]
                                     else ", rows drawn")
        lines.append(f"| {report} | {new['n']} ({groups}) | {old['accuracy']:.3f} | {new['accuracy']:.3f} | "
                     f"{c['difference']:+.3f} ({c['interval'][0]:+.3f}, {c['interval'][1]:+.3f}){flag} | "
                     f"{new['neutral_answers']:.2f} (was {old['neutral_answers']:.2f}) / {new['neutral_true']:.2f} | "
                     f"{hc} | {recall} |")
    return "\n".join(lines)


def trades(comparison: dict[str, dict]) -> list[str]:
    """The reports the new model lost beyond their noise."""
    return [r for r, c in comparison.items() if c["trade"]]
