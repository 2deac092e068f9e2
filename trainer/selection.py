"""Model selection: one score over the validation reports, shared by epoch choice and the post-hoc fits."""
from __future__ import annotations


def select_score(reports: dict[str, dict], cfg) -> float:
    """The model-selection score: `cfg.select_metric` mixed over the reports named in `cfg.select_on`, minus 1 for
    each report below its `cfg.select_floor` (so any candidate that keeps every floor beats every one that does not).
    """
    mix = cfg.select_on or {next(iter(reports)): 1.0}
    score = sum(w * reports[k][cfg.select_metric] for k, w in mix.items()) / sum(mix.values())
    return score - sum(reports[k][cfg.select_metric] < v for k, v in (cfg.select_floor or {}).items())
