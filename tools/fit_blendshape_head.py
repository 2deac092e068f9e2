"""Fit a model's blendshape head (emotion/blendshape_head.py) and the logit biases served with it.

    python tools/fit_blendshape_head.py --config trainer/configs/small_cnn_transfer.yaml --model models/small_cnn
    python tools/fit_blendshape_head.py ... --write     # store the head and T in the folder's config.json

The head is fitted on the config's training rows (every source), with the model's served margin for `--label` as a
fixed offset; each source's faces of other labels weigh as the recipe draws that source. The logit biases the
config fits (neutral, contempt) are then refitted jointly on the validation reports with the head applied, under
the config's selection mix and floors, and T on the reports with more than one class, as the trainer does. It
prints each report's accuracy as the folder serves it now and with the head. With `--write` the folder's
config.json gets the head (carrying the biases it is served with; the model's own stay for serving without it) and
T, blendshape_head.json the fit's record, eval_results.json (if any) the reports' metrics as the folder now serves
them, and the model card is rendered again.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout: trainer/ and emotion/ beside tools/


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", required=True, help="the multi-source trainer config the model was trained with")
    ap.add_argument("--model", required=True, help="the model's folder (its config.json is what --write changes)")
    ap.add_argument("--label", default="contempt", help="the class the head speaks for [default: contempt]")
    ap.add_argument("--features", default="mouth,geometry", help="comma-separated feature name prefixes; 'geometry' "
                    "names the landmarks' mouth asymmetry [default: mouth,geometry, the shipped head's]")
    ap.add_argument("--max-rows", type=int, default=None, help="at most this many training rows per source")
    ap.add_argument("--l2", type=float, default=1e-3, help="L2 penalty on the weights [default: 0.001]")
    ap.add_argument("--gate-quantile", type=float, default=0.98,
                    help="the gate: this quantile of the residuals on the training rows (1: the largest) [default: "
                    "0.98]")
    ap.add_argument("--floor", action="append", default=[], metavar="REPORT=ACCURACY",
                    help="a report's floor for the bias fit instead of the config's (repeatable): a model weaker "
                    "than the recipe's on FER+ keeps its own, e.g. validation=0.83")
    ap.add_argument("--keep-bias", action="append", default=[], choices=["neutral", "contempt"],
                    help="serve this class's bias as the model has it instead of fitting it again (repeatable)")
    ap.add_argument("--cache", metavar="FILE.npz", help="keep what the landmarker reads on each face in this file "
                    "and reuse it on later runs (e.g. runs/faces.npz): a rerun with other --l2, --gate-quantile, "
                    "--features or --keep-bias then skips the landmarker, which reads every row (~12 ms a face)")
    ap.add_argument("--write", action="store_true", help="store the head (with its biases) and T in the model's folder")
    return ap


def main(argv: list[str] | None = None) -> int:
    ap = _parser()
    args = ap.parse_args(argv)
    folder = Path(args.model)
    if not (folder / "config.json").is_file():
        ap.error(f"--model {folder}: no config.json there (give an exported model's folder)")
    if not Path(args.config).is_file():
        ap.error(f"no config file {args.config}")
    if args.max_rows is not None and args.max_rows < 1:
        ap.error("--max-rows must be at least 1")
    if not 0.0 < args.gate_quantile <= 1.0:
        ap.error("--gate-quantile must be above 0 and at most 1")

    from emotion.action_units import ActionUnitReader
    from emotion.errors import EmotionError
    from emotion.models import load_model
    from trainer import blendshape_fit as bf
    from trainer.config import TrainConfig
    from trainer.data import load_splits

    cfg = TrainConfig(**yaml.safe_load(Path(args.config).read_text()))
    floors = _floors(ap, args.floor)
    if floors:
        cfg.select_floor = {**(cfg.select_floor or {}), **floors}
    for name in args.keep_bias:
        setattr(cfg, f"{name}_bias", "none")
    model, info, _ = load_model(f"local-dir:{folder}")
    if args.label not in info.labels:
        ap.error(f"--label must be one of {', '.join(info.labels)}")
    try:
        names = bf.feature_names(args.features.split(","))
    except ValueError as e:
        ap.error(str(e))
    train, vals, _ = load_splits(cfg)
    reports = set(vals) | {f"{name}_{view}" for name, split in vals.items() for view in split.views}
    if set(floors) - reports:
        ap.error(f"--floor names no report of {args.config}: {', '.join(sorted(set(floors) - reports))} (its "
                 f"reports: {', '.join(sorted(reports))})")
    if train.source is None:
        ap.error(f"{args.config} has no sources: the head is fitted on a multi-source config's training rows")
    rows = _sample(train.source, args.max_rows, cfg.seed)
    train = train.subset(rows)
    reader, c, t0 = ActionUnitReader(), info.labels.index(args.label), time.time()
    try:
        cache = bf.FaceCache(args.cache)
        read = lambda images: bf.read_faces(images, reader, cache)  # noqa: E731
        record = _fit(model, info, train, vals, cfg, read, c, names, args.l2, args.gate_quantile, bf)
    except (EmotionError, ValueError) as e:
        ap.error(str(e))
    finally:
        reader.close()
    record.update(config=args.config, features=args.features, l2=args.l2, gate_quantile=args.gate_quantile,
                  select_floor=cfg.select_floor, keep_bias=args.keep_bias, seconds=round(time.time() - t0),
                  sources=[{"name": src["name"], "path": str(src["data"])} for src in cfg.sources])
    _print(record)
    if args.write:
        _write(folder, record)
        print(f"wrote the head and T to {folder / 'config.json'}, the record to {folder / 'blendshape_head.json'}")
    return 0


def _floors(ap: argparse.ArgumentParser, given: list[str]) -> dict[str, float]:
    """--floor's REPORT=ACCURACY pairs as {report: accuracy}, each accuracy in [0, 1]."""
    try:
        floors = {k: float(v) for k, _, v in (f.partition("=") for f in given)}
    except ValueError:
        ap.error(f"--floor takes REPORT=ACCURACY (e.g. validation=0.83), not {' '.join(given)}")
    if not all(0.0 <= v <= 1.0 for v in floors.values()):
        ap.error("--floor: an accuracy is between 0 and 1")
    return floors


def _sample(source: np.ndarray, max_rows: int | None, seed: int) -> np.ndarray:
    """Row indices: every row, or at most `max_rows` of each source (seeded)."""
    rng = np.random.default_rng(seed)
    keep = [np.flatnonzero(source == s) for s in np.unique(source)]
    if max_rows is not None:
        keep = [rng.choice(k, max_rows, replace=False) if len(k) > max_rows else k for k in keep]
    return np.sort(np.concatenate(keep))


def _fit(model, info, train, vals, cfg, read, c, names, l2, gate_quantile, bf) -> dict:
    from trainer.evaluation import class_margin, predict_logits, view_reports
    from trainer.posthoc import BIASES, fit_biases
    from trainer.run import report_metrics, report_temperature

    served = {k: predict_logits(model, v, info) for k, v in vals.items()}
    plain = replace(info, blendshape_head={})  # the model with its own biases: the offset the head adds to
    x = bf.feature_matrix(read(train.images), names)
    offset = class_margin(predict_logits(model, train, plain), c)
    positive = train.labels == c
    share = {i: float(src.get("weight", 1.0)) for i, src in enumerate(cfg.sources)}  # as the recipe draws them
    centre, scale = bf.standardise(x, names, ~positive)
    weights = bf.fit_weights(np.nan_to_num((x - centre) / scale), offset, positive,
                             bf.row_weights(positive, train.source, share), l2) / scale
    # Each report's logits plus the residual, ungated (the biases are fitted on the head's full effect): with the
    # model's own biases except those the config fits (fit_biases adds the chosen ones).
    fitted = {name for name, _ in BIASES if getattr(cfg, f"{name}_bias") == "fit"}
    kept = {k: v for k, v in plain.logit_bias.items() if k not in fitted}  # served as the model has them
    base = replace(plain, logit_bias=kept)
    logits, residual = {}, {}
    for k, v in vals.items():
        residual[k] = bf.residuals(bf.feature_matrix(read(v.images), names), weights, centre)
        logits[k] = predict_logits(model, v, base)
        logits[k][:, c] += residual[k]
    sweeps, logits = fit_biases(logits, vals, info.labels, cfg)
    served_bias = {**kept, **{n: s["chosen"] for n, s in sweeps.items() if s["chosen"]}}
    head = bf.make_head(info.labels[c], names, weights, x, info.labels, served_bias, centre, gate_quantile)
    gated = {}  # the reports as serving computes them: the residual only where the gate lets it through
    for k in logits:
        without = logits[k].copy()
        without[:, c] -= residual[k]
        logits[k], rows = bf.served(without, residual[k], head, info.labels)
        gated[k] = (rows, len(without))
    temperature = report_temperature(logits, vals)
    return {"head": head.as_dict(), "temperature": round(temperature, 4), "train_rows": int(len(train)),
            "gated_share": {k: round(len(rows) / max(1, n), 4) for k, (rows, n) in gated.items()},
            "train_positives": int(positive.sum()), "before": view_reports(served, vals),
            "after": view_reports(logits, vals), "before_logit_bias": info.logit_bias,
            "splits": report_metrics(logits, vals, temperature)}


def _print(record: dict) -> None:
    print(f"head: {len(record['head']['weights'])} features, gate {record['head']['gate']}, fitted on "
          f"{record['train_rows']} rows ({record['train_positives']} of the label) in {record['seconds']} s")
    print(f"logit bias {record['before_logit_bias']} -> {record['head']['logit_bias']} with the head, "
          f"T {record['temperature']}")
    print("| report | accuracy as served now | with the head | faces the gate lets through |\n|---|---|---|---|")
    for k, before in record["before"].items():
        share = record["gated_share"].get(k)  # none for a view of another report (validation_dedup)
        print(f"| {k} | {before['accuracy']:.4f} | {record['after'][k]['accuracy']:.4f} | "
              f"{'–' if share is None else f'{share:.1%}'} |")


def _write(folder: Path, record: dict) -> None:
    path = folder / "config.json"
    config = json.loads(path.read_text())
    config.setdefault("emotion", {}).update(blendshape_head=record["head"], temperature=record["temperature"])
    path.write_text(json.dumps(config, indent=2) + "\n")
    splits = record.pop("splits")
    (folder / "blendshape_head.json").write_text(json.dumps(record, indent=2) + "\n")
    results_path = folder / "eval_results.json"  # the card's numbers: the reports as the folder now serves them
    if results_path.is_file():
        results = json.loads(results_path.read_text())
        results.update(splits=splits, temperature=record["temperature"],
                       blendshape_head={"label": record["head"]["label"], "features": len(record["head"]["weights"]),
                                        "gate": record["head"]["gate"], "logit_bias": record["head"]["logit_bias"],
                                        "train_rows": record["train_rows"], "fitted_with": record["config"],
                                        "sources": record["sources"]})
        results_path.write_text(json.dumps(results, indent=2) + "\n")
    if (folder / "README.md").is_file():  # the model card, rendered again from the files above
        from model_card.render import render_card

        render_card(folder)


if __name__ == "__main__":
    sys.exit(main())
