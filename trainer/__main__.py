"""`python -m trainer [train] --config trainer/configs/small_cnn.yaml [--field value ...]`, and
evaluate/compare/push/export-onnx."""
from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import sys

if importlib.util.find_spec("torch") is None:  # `pip install .` / requirements.txt serve without it
    raise SystemExit("error: the trainer needs torch, which the serving set (requirements.txt) leaves out: "
                     "pip install -r requirements-train.txt, or pip install .[train]")

os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
if not sys.stderr.isatty():  # off a terminal, datasets' bars are carriage-return fragments in the log
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")

from emotion.errors import EmotionError  # noqa: E402

from .config import add_config_args, resolve_config  # noqa: E402
from .distributed import launched_rank  # noqa: E402
from .errors import TrainerError  # noqa: E402

COMMANDS = ("train", "loso", "held-to", "evaluate", "compare", "push", "export-onnx")
DATA_HELP = "Hub dataset id, a folder of parquet shards, or an image folder [default: ../shared/data/ferplus]"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m trainer", description=__doc__, allow_abbrev=False)
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train, evaluate, calibrate and export a model (rerun to resume)",
                       description="Train, evaluate, calibrate and export a model; rerun the same command to resume. "
                       "The defaults shown are TrainConfig's (trainer/config.py): a --config file overrides them, "
                       "and options override both.", allow_abbrev=False)
    add_config_args(t)
    t.add_argument("--push-to-hub", metavar="ORG/NAME", help="upload the export to this Hub repo when done")
    t.add_argument("--private", action="store_true", help="with --push-to-hub: create the Hub repo private")
    t.add_argument("--revision", help="with --push-to-hub: the branch to upload to (default: main)")
    lo = sub.add_parser("loso", help="leave-one-source-out: train without each source, score on it (rerun to resume)",
                        description="For each source of a multi-source --config (or those given with --hold-out), "
                        "train the same recipe without it and score the export on every row of it; writes "
                        "OUTPUT_DIR-loso.json and OUTPUT_DIR-loso.md. Options override the config as for train.",
                        allow_abbrev=False)
    add_config_args(lo)
    lo.add_argument("--hold-out", nargs="+", metavar="SOURCE", help="only these sources (default: every one)")
    h = sub.add_parser("held-to", help="a model beside a baseline on every validation report of a config",
                       description="Score --candidate and the baseline (the config's baseline:, or --baseline) as served "
                       "on every source's validation rows of a multi-source --config, cut as its run cuts them: "
                       "accuracy with a 95%% bootstrap interval of the difference (by person or film), recall, "
                       "neutral answers, happy faces called contempt; names the reports lost beyond their noise.",
                       allow_abbrev=False)
    add_config_args(h)
    h.add_argument("--candidate", required=True, help="the model to check: local-dir:/path, hf-hub:org/name[@rev]")
    h.add_argument("--json", help="also write the comparison to this file")
    e = sub.add_parser("evaluate", help="evaluate an exported model on a data set", allow_abbrev=False)
    e.add_argument("--model", required=True, help="local-dir:/path or hf-hub:org/name[@rev]")
    e.add_argument("--data", default="../shared/data/ferplus", help=DATA_HELP)
    e.add_argument("--split", default="validation", help="the split to score [default: validation]")
    e.add_argument("--max-samples", type=int, help="score only this many rows (quick checks)")
    e.add_argument("--json", help="also write the metrics to this file")
    e.add_argument("--detect-faces", action="store_true",
                   help="the images are photos: detect and crop the largest face first, as serving does")
    c = sub.add_parser("compare", help="one table of several exported models side by side", allow_abbrev=False)
    c.add_argument("--models", nargs="+", required=True,
                   help="exported models: local-dir:/path, hf-hub:org/name[@rev] or a shipped model's name")
    c.add_argument("--data", default="../shared/data/ferplus", help=DATA_HELP)
    c.add_argument("--split", default="validation", help="the split to score [default: validation]")
    c.add_argument("--max-samples", type=int, help="score only this many rows (quick checks)")
    c.add_argument("--out", help="write the markdown table here too")
    c.add_argument("--photos", help="also score a photo data set through the serving detector (all rows and the "
                                    "rows whose raters agree), e.g. ../shared/data/taiwanese_performers")
    u = sub.add_parser("push", help="upload an export folder to the Hugging Face Hub", allow_abbrev=False)
    u.add_argument("export_dir", help="the export folder a training run wrote (OUTPUT_DIR/export)")
    u.add_argument("--repo-id", required=True, help="the Hub model repo, org/name")
    u.add_argument("--private", action="store_true", help="create the repo private")
    u.add_argument("--revision", help="the branch to upload to (default: main)")
    u.add_argument("--dry-run", action="store_true", help="list what would be uploaded; no network")
    o = sub.add_parser("export-onnx", help="write model.onnx beside model.safetensors (training does it too)",
                       description="Write model.onnx into exported model folders, from their model.safetensors "
                       "(input 'pixels' (batch, C, H, W), output 'logits'; see emotion/onnx_export.py).",
                       allow_abbrev=False)
    o.add_argument("model_dirs", nargs="+", metavar="FOLDER", help="exported model folders, e.g. models/small_cnn")
    o.add_argument("--int8", metavar="DATA", help="also write model.int8.onnx, calibrated on face crops of this data "
                   "set (a folder of parquet shards, an image folder or a Hub id; emotion/quantize.py)")
    o.add_argument("--int8-faces", type=int, default=512, metavar="N", help="calibration faces drawn [default: 512]")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS + ("-h", "--help"):
        argv.insert(0, "train")  # `python -m trainer --config ...` trains
    args = build_parser().parse_args(argv)
    main_process = launched_rank() == 0  # under accelerate launch / torchrun the other processes only warn
    logging.basicConfig(level=logging.INFO if main_process else logging.WARNING,
                        format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    try:
        return _dispatch(args)
    except (TrainerError, EmotionError) as e:  # expected: one line naming the fix; anything else keeps its trace
        print(f"error: {e}", file=sys.stderr)
        return 2


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "train":
        from .run import train_and_export

        export_dir = train_and_export(resolve_config(args))
        if launched_rank() > 0:
            return 0
        print(f"exported: {export_dir}")
        if args.push_to_hub:
            from .hub import push_to_hub

            print(push_to_hub(export_dir, args.push_to_hub, private=args.private, revision=args.revision))
        return 0
    if args.command == "loso":
        from .loso import loso_table, run_loso

        print(loso_table(run_loso(resolve_config(args), args.hold_out)))
        return 0
    if args.command == "held-to":
        from .compare import held_to

        cfg = resolve_config(args)
        print(held_to(cfg, args.candidate, None, args.json))
        return 0
    if args.command == "push":
        from .hub import push_to_hub

        print(push_to_hub(args.export_dir, args.repo_id, private=args.private, revision=args.revision,
                          dry_run=args.dry_run))
        return 0
    if args.command == "export-onnx":
        from emotion.onnx_export import export_onnx

        faces = calibration_faces(args.int8, args.int8_faces) if args.int8 else None
        for folder in args.model_dirs:
            path = export_onnx(folder)
            print(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MB)")
            if faces is not None:
                from emotion.quantize import quantize_onnx

                path = quantize_onnx(folder, faces, f"{len(faces)} of {args.int8}'s train split, drawn with seed 0")
                print(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MB)")
        return 0
    from .compare import compare, evaluate_model

    if args.command == "evaluate":
        print(evaluate_model(args.model, args.data, args.split, args.max_samples, args.json, args.detect_faces))
    else:
        print(compare(args.models, args.data, args.split, args.max_samples, args.out, args.photos))
    return 0


def calibration_faces(data: str, n: int) -> list:
    """`n` face crops drawn (seed 0) from the train split (else the first split) of a data set of aligned faces."""
    import numpy as np

    from .rows import load_raw

    raw = load_raw(data)
    split = raw["train"] if "train" in raw else raw[next(iter(raw))]
    if "image" not in split.column_names:
        raise SystemExit(f"error: {data} has no 'image' column: give a data set of face crops")
    rows = np.random.default_rng(0).permutation(len(split))[:max(1, n)]
    return list(split.select(np.sort(rows))["image"])


if __name__ == "__main__":
    sys.exit(main())
