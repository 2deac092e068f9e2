"""How well models tell one class from the rest, apart from the bias they are served with (issue #21's contempt).

    python tools/contempt_separation.py --config trainer/configs/small_cnn_transfer.yaml \\
        --model local-dir:models/small_cnn --model local-dir:runs/small_cnn_transfer/export

A served recall is one point on a trade-off that the fitted bias picks. This reads the whole trade-off: the class
margin's threshold is set so that a given share of the negative report's faces (those not labelled with the class)
is called the class, and the recall on the positive report's faces is read there. Defaults: contempt, the held-out
contempt crops against FER+ validation. Reports are the config's validation splits (the same rows the trainer
selects on). `--raw RUN_DIR` also scores a run's checkpoint before the weight average and biases.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout: trainer/ and emotion/ beside tools/
RATES = (0.005, 0.01, 0.02, 0.05)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", required=True, help="the trainer config whose sources give the reports")
    ap.add_argument("--model", action="append", default=[], help="a model to score (local-dir:, hf-hub:, a name)")
    ap.add_argument("--raw", action="append", default=[], help="a run folder: its checkpoint without average/bias")
    ap.add_argument("--label", default="contempt", help="the class [default: contempt]")
    ap.add_argument("--positive", default="contempt", help="report whose faces are the class [default: contempt]")
    ap.add_argument("--negative", default="validation", help="report of the other faces [default: validation]")
    args = ap.parse_args(argv)
    if not args.model and not args.raw:
        ap.error("give at least one --model or --raw")

    from emotion.labels import LABELS
    from emotion.models import load_model
    from trainer.checkpoint import load_latest_good
    from trainer.config import TrainConfig
    from trainer.data import load_splits
    from trainer.evaluation import class_margin, predict_logits, recall_at_false_rate

    if args.label not in LABELS:
        ap.error(f"--label must be one of {', '.join(LABELS)}")
    if not Path(args.config).is_file():
        ap.error(f"no config file {args.config}")
    for d in args.raw:
        if not (Path(d) / "export").is_dir():
            ap.error(f"--raw {d}: no export/ there (a finished trainer run folder is needed)")
    cfg = TrainConfig(**yaml.safe_load(Path(args.config).read_text()))
    _, vals, _ = load_splits(cfg)
    for name in (args.positive, args.negative):
        if name not in vals:
            ap.error(f"no report {name!r} in {args.config}: it has {', '.join(vals)}")
    c = LABELS.index(args.label)
    pos_split, neg_split = vals[args.positive], vals[args.negative]
    pos_keep, neg_keep = pos_split.labels == c, neg_split.labels != c

    print(f"| model | {args.label} recall as served | " +
          " | ".join(f"at {100 * r:g}% of {args.negative} called {args.label}" for r in RATES) + " |")
    print("|---|---|" + "---|" * len(RATES))
    todo = [(m, m, None) for m in args.model] + [(f"{d} (raw)", f"local-dir:{d}/export", d) for d in args.raw]
    for title, source, run_dir in todo:
        model, info, _ = load_model(source)
        if run_dir:
            found = load_latest_good(Path(run_dir) / "checkpoints" / "best.safetensors")
            if found is None:
                ap.error(f"--raw {run_dir}: no readable checkpoints/best.safetensors")
            model.load_state_dict(found[0]["model"])
            info.logit_bias = {}
        pos = predict_logits(model, pos_split, info)[pos_keep]
        neg = predict_logits(model, neg_split, info)[neg_keep]
        recall = recall_at_false_rate(class_margin(pos, c), class_margin(neg, c), RATES)
        served = float((pos.argmax(1) == c).mean())
        print(f"| {title} | {served:.3f} | " + " | ".join(f"{recall[r]:.3f}" for r in RATES) + " |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
