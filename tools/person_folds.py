"""Person-level cross-validation of a multi-source recipe on one small source (JAFFE's 4 people, a few films).

    python tools/person_folds.py write --config trainer/configs/small_cnn_six_sources_keep_contempt.yaml \
        --source jaffe --out runs/folds
    python -m trainer train --config runs/folds/jaffe_KA.yaml     # one run per fold (rerun to resume)
    python tools/person_folds.py score --config trainer/configs/small_cnn_six_sources_keep_contempt.yaml \
        --source jaffe --out runs/folds [--baseline models/small_cnn] [--alphas 0,0.5,0.7,0.85,1]

`write` makes one config per group of the source's `group_column` (or, with `--folds K`, per fold of several groups
dealt round-robin: SFEW's 42 films in 4 folds): the recipe as it is, with exactly that fold's groups held
out (`val_groups`), trained without the post-hoc weight average and logit biases (the folds compare weights).
`score` reads each fold's export and prints, for each weight average with the baseline (alpha 0: the baseline,
1: the fold's own weights), the photos of the held-out group read right, summed over the folds, and FER+ validation
accuracy averaged over them; no logit bias and no blendshape head on either side, so that only the weights differ.
A source's one validation person cannot show what a recipe does for unseen people; every person held out once can.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout: trainer/ and emotion/ beside tools/


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    for name in ("write", "score"):
        p = sub.add_parser(name)
        p.add_argument("--config", required=True, help="the multi-source recipe (a trainer config with sources:)")
        p.add_argument("--source", required=True, help="the source to fold, by name (it needs a group_column)")
        p.add_argument("--out", required=True, help="the folder of the fold configs and runs")
        p.add_argument("--folds", type=int, default=0,
                       help="deal the groups into this many folds (several films each); 0: one fold per group")
        if name == "score":
            p.add_argument("--baseline", default="models/small_cnn", help="the model folder to compare with")
            p.add_argument("--alphas", default="0,0.5,0.7,0.85,1", help="weight averages with the baseline")
            p.add_argument("--head-alpha", type=float, default=None,
                           help="average the classifier head (pretrained_cfg's classifier) at this share instead, "
                                "the features at each of --alphas")
            p.add_argument("--ferplus", default="../shared/data/ferplus", help="FER+ (its validation split is scored)")
    return ap


def dealt(groups: list[str], folds: int) -> dict[str, list[str]]:
    """Fold name -> its groups: one fold per group (`folds` 0), else the sorted groups dealt round-robin into
    `folds` folds named f0, f1, ... (every group held out exactly once)."""
    if folds <= 0:
        return {group: [group] for group in groups}
    if folds > len(groups):
        raise SystemExit(f"--folds {folds} is more than the {len(groups)} groups")
    return {f"f{i}": groups[i::folds] for i in range(folds)}


def fold_configs(recipe: dict, source: str, folds: dict[str, list[str]], out: Path) -> dict[str, dict]:
    """One config per fold: `recipe` with `source` holding out exactly that fold's groups, its run in
    out/<source>_<fold>, no weight average and no fitted biases."""
    if not any(s.get("name") == source for s in recipe.get("sources") or []):
        raise SystemExit(f"the config has no source named {source!r}")
    configs = {}
    for fold, held in folds.items():
        config = copy.deepcopy(recipe)
        for s in config["sources"]:
            if s["name"] == source:
                s["val_groups"] = list(held)
        config.update(output_dir=str(out / f"{source}_{fold}"), interpolate="none", neutral_bias="none",
                      contempt_bias="none")
        config.pop("interpolate_grid", None)
        configs[fold] = config
    return configs


def source_groups(recipe: dict, source: str) -> list[str]:
    from trainer.rows import load_raw
    from trainer.sources import SourceConfig

    src = SourceConfig.parse(next(s for s in recipe["sources"] if s.get("name") == source))
    if not src.group_column:
        raise SystemExit(f"source {source} has no group_column: nothing to fold by")
    rows = load_raw(src.data)[src.train_split]
    return sorted({str(v) for v in rows[src.group_column]})


def averaged(tuned, base, alpha: float, head_alpha: float | None = None, head: str = "fc"):
    """`tuned`'s weights averaged with `base`'s: alpha * tuned + (1 - alpha) * base (integer buffers: tuned's); the
    parameters under `head` (the classifier) at `head_alpha` instead, where it is given."""
    out = copy.deepcopy(tuned)
    a, b = tuned.state_dict(), base.state_dict()

    def share(k: str) -> float:
        return alpha if head_alpha is None or not (k == head or k.startswith(head + ".")) else head_alpha

    out.load_state_dict({k: (share(k) * a[k].float() + (1 - share(k)) * b[k].float()).to(a[k].dtype)
                         if a[k].is_floating_point() else a[k] for k in a})
    return out


def score(args, recipe: dict, folds: list[str]) -> dict:
    from emotion.models import load_model
    from trainer.compare import load_eval_split
    from trainer.config import resolve_config
    from trainer.evaluation import predict_logits
    from trainer.sources import validation_rows

    alphas = [float(a) for a in args.alphas.split(",")]
    base, info, _ = load_model(f"local-dir:{args.baseline}")
    head = getattr(base, "pretrained_cfg", {}).get("classifier", "fc")  # the classifier layer's name
    plain = dataclasses.replace(info, logit_bias={}, blendshape_head={})
    ferplus = load_eval_split(args.ferplus, "validation", None)

    neutral = info.labels.index("neutral")

    def answers(net, split) -> np.ndarray:
        return predict_logits(net, split, plain).argmax(1)

    def right(net, split):
        return int((answers(net, split) == np.asarray(split.labels)).sum())

    rows = {}
    for group in folds:
        cfg = resolve_config(argparse.Namespace(config=str(Path(args.out) / f"{args.source}_{group}.yaml")))
        cfg.sources = [s for s in cfg.sources if s["name"] == args.source]
        (held,) = validation_rows(cfg).values()
        tuned, _, _ = load_model(f"local-dir:{Path(cfg.output_dir) / 'export'}")
        rows[group] = {"photos": len(held.labels), "neutral_true": int((np.asarray(held.labels) == neutral).sum())}
        for alpha in alphas:
            net = averaged(tuned, base, alpha, args.head_alpha, head)
            said = answers(net, held)
            rows[group][alpha] = {"right": int((said == np.asarray(held.labels)).sum()),
                                  "neutral": int((said == neutral).sum()),
                                  "ferplus": right(net, ferplus) / len(ferplus.labels)}
        print(group, json.dumps(rows[group]), flush=True)
    total = sum(r["photos"] for r in rows.values())
    true_neutral = sum(r["neutral_true"] for r in rows.values()) / max(1, total)
    print(f"\n| alpha | {args.source}: held-out groups read right (of {total}) | neutral answers (true "
          f"{true_neutral:.2f}) | FER+ validation (mean of folds) |")
    print("|---|---|---|---|")
    for alpha in alphas:
        right_all = sum(r[alpha]["right"] for r in rows.values())
        said_neutral = sum(r[alpha]["neutral"] for r in rows.values()) / max(1, total)
        fer = np.mean([r[alpha]["ferplus"] for r in rows.values()])
        print(f"| {alpha:g} | {right_all} ({right_all / total:.3f}) | {said_neutral:.2f} | {fer:.4f} |")
    return rows


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    recipe = yaml.safe_load(Path(args.config).read_text())
    folds = dealt(source_groups(recipe, args.source), args.folds)
    out = Path(args.out)
    if args.command == "write":
        out.mkdir(parents=True, exist_ok=True)
        for fold, config in fold_configs(recipe, args.source, folds, out).items():
            path = out / f"{args.source}_{fold}.yaml"
            path.write_text(yaml.safe_dump(config, sort_keys=False))
            print(f"wrote {path}: python -m trainer train --config {path}")
    else:
        written = [fold for fold in folds if (out / f"{args.source}_{fold}.yaml").is_file()]
        if not written:
            raise SystemExit(f"no fold configs in {out}: run `write` first")
        if len(written) < len(folds):
            print(f"scoring {len(written)} of {len(folds)} folds (the others have no config in {out})")
        score(args, recipe, written)
    return 0


if __name__ == "__main__":
    sys.exit(main())
