"""Score exported models on every row of one source (the rows a leave-one-source-out arm is scored on), alone and
as pairwise ensembles: accuracy, recall per class, and how many faces of each class are called neutral.

    python tools/score_held_out.py --config trainer/configs/small_cnn_transfer.yaml --source posed --ensembles \\
        --model local-dir:runs/small_cnn_fer_only --model local-dir:runs/resnet50_transfer-without-posed/export

A model that trained on the source is marked "(trained on it)": its score measures that source, not transfer.
Each model is scored as served (its biases, temperature, flip and head); an ensemble averages the models' calibrated
log-probabilities. `--neutral-shift` also reads each model with its neutral logit lowered by these amounts: how much
of a held-out source's loss is the neutral prior.
"""
from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout: trainer/ and emotion/ beside tools/


def row(title: str, log_probs: np.ndarray, labels: np.ndarray, names) -> str:
    """One table line: accuracy, recall per class present, and the faces of each other class called neutral."""
    pred, neutral = log_probs.argmax(1), names.index("neutral")
    present = [c for c in range(len(names)) if (labels == c).any()]
    recall = [f"{np.mean(pred[labels == c] == c):.2f}" for c in present]
    to_neutral = sum(int(np.sum(pred[labels == c] == neutral)) for c in present if c != neutral)
    return f"| {title} | {np.mean(pred == labels):.3f} | " + " | ".join(recall) + f" | {to_neutral} |"


def trained_on(folder: Path, data: str) -> bool:
    """Whether the export's eval_results.json lists `data` among its training sources."""
    results = folder / "eval_results.json"
    if not results.is_file():
        return False
    dataset = json.loads(results.read_text()).get("dataset") or {}
    paths = [s.get("path") for s in dataset.get("sources") or []] + [dataset.get("path")]
    return any(p and Path(p).resolve() == Path(data).resolve() for p in paths)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", required=True, help="a multi-source trainer config: where the source's rows are")
    ap.add_argument("--source", required=True, help="the source whose every row is scored, e.g. posed")
    ap.add_argument("--model", action="append", default=[], help="a model to score (local-dir:, hf-hub:, a name)")
    ap.add_argument("--ensembles", action="store_true", help="also score every pair of the models, averaged")
    ap.add_argument("--neutral-shift", type=float, action="append", default=[], metavar="D",
                    help="also read each model with its neutral logit lowered by D (repeatable)")
    args = ap.parse_args(argv)
    if not args.model:
        ap.error("give at least one --model")
    if not Path(args.config).is_file():
        ap.error(f"no config file {args.config}")

    import torch

    from emotion.labels import LABELS
    from emotion.models import load_model
    from trainer.config import ConfigError, TrainConfig
    from trainer.evaluation import predict_logits
    from trainer.loso import held_out_rows

    try:
        cfg = TrainConfig(**yaml.safe_load(Path(args.config).read_text()))
    except (ConfigError, TypeError) as e:
        ap.error(f"{args.config}: {e}")
    names = [s["name"] for s in cfg.sources or []]
    if args.source not in names:
        ap.error(f"no source {args.source!r} in {args.config}: it has {', '.join(names) or 'none'}")
    data = next(s["data"] for s in cfg.sources if s["name"] == args.source)
    rows = held_out_rows(cfg, args.source)
    present = [LABELS[c] for c in range(len(LABELS)) if (rows.labels == c).any()]
    print(f"{len(rows)} rows of {args.source} ({data})\n")
    print("| model | accuracy | " + " | ".join(present) + " | other faces called neutral |")
    print("|---|---|" + "---|" * (len(present) + 1))
    scored = {}
    for source in args.model:
        model, info, folder = load_model(source)
        logits = predict_logits(model, rows, info)
        title = source + (" (trained on it)" if trained_on(Path(folder), data) else "")
        scored[title] = torch.log_softmax(torch.from_numpy(logits / info.temperature), 1).numpy()
        print(row(title, scored[title], rows.labels, LABELS), flush=True)
        for shift in args.neutral_shift:
            shifted = logits.copy()
            shifted[:, LABELS.index("neutral")] -= shift
            print(row(f"{title}, neutral −{shift:g}", shifted, rows.labels, LABELS), flush=True)
    if args.ensembles:
        for a, b in itertools.combinations(scored, 2):
            print(row(f"{a} + {b}", (scored[a] + scored[b]) / 2, rows.labels, LABELS), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
