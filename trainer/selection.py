"""Model selection: one score over the validation reports, shared by epoch choice and the post-hoc fits."""
from __future__ import annotations

# A missed floor costs 1 plus this times how far below it the report is: a point of accuracy short weighs 0.1 of
# the mix. With a flat 1 alone, a floor that no candidate reaches stopped ranking them, and the bias fit and the
# weight average traded that report freely (2026-12-07: FER+ 0.855 -> 0.844 under an unreachable 0.86 floor,
# docs/research/six_sources.md).
SHORTFALL = 10.0


def select_score(reports: dict[str, dict], cfg) -> float:
    """The model-selection score: `cfg.select_metric` mixed over the reports named in `cfg.select_on`, minus, for each
    report below its `cfg.select_floor`, 1 plus SHORTFALL times its shortfall. Any candidate that keeps every floor
    beats every one that does not; among those that miss a floor, the nearer to it wins."""
    mix = cfg.select_on or {next(iter(reports)): 1.0}
    score = sum(w * reports[k][cfg.select_metric] for k, w in mix.items()) / sum(mix.values())
    missed = [v - reports[k][cfg.select_metric] for k, v in (cfg.select_floor or {}).items()
              if reports[k][cfg.select_metric] < v]
    return score - len(missed) - SHORTFALL * sum(missed)
