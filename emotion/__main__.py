"""`python -m emotion predict PHOTO_OR_FOLDER_OR_VIDEO... [--model SOURCE] [--json]`: the emotion of every face.

A video (by its suffix) gives one line per track, or its per-frame table with --csv / --parquet.

`python -m emotion predict-dataset SOURCE --output DIR`: every face of a data set (image folder, parquet folder or
Hub data set) into parquet shards; resumable; `--workers N` processes, or `--ray` for a Ray cluster.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
if not sys.stderr.isatty():  # off a terminal, datasets' bars are carriage-return fragments in the log
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
AU_HELP = ("also each face's facial action units (AU1, AU2, AU4, ... in 0..1) and 52 blendshapes, from the face "
           "landmarker (off by default: ~12-25 ms more per face; see docs/action_units.md)")
TOP_AUS = 3  # action units shown per face in the text output (--json has all of them)
VIDEO_SUFFIXES = {".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv", ".flv", ".3gp"}


def detector_options(parser: argparse.ArgumentParser) -> None:
    """--max-faces, --min-score and --range, with the detector's defaults."""
    from .faces import DEFAULT_MAX_FACES, DEFAULT_MIN_SCORE, DEFAULT_RANGE, RANGES

    parser.add_argument("--max-faces", type=int, default=DEFAULT_MAX_FACES)
    parser.add_argument("--min-score", type=float, default=DEFAULT_MIN_SCORE,
                        help="minimum face detection score (0..1)")
    parser.add_argument("--range", choices=RANGES, default=DEFAULT_RANGE,
                        help="face search: auto, short (near faces only: fastest), full (also a small face beside "
                             "a portrait)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m emotion", description=__doc__, allow_abbrev=False)
    sub = p.add_subparsers(dest="command", required=True)
    pr = sub.add_parser("predict", help="detect faces and classify their expressions", allow_abbrev=False)
    pr.add_argument("paths", nargs="+", help="image files or folders (every image inside is predicted)")
    pr.add_argument("--model", help="a shipped model's name (small_cnn, resnet50, ...), local-dir:/path or "
                    "hf-hub:org/name[@rev] (default: EMOTION_MODEL or the shipped default)")
    pr.add_argument("--backend", choices=("auto", "int8", "onnxruntime", "torch"), default="auto",
                    help="what runs the classifier (auto: its current model.int8.onnx, else model.onnx, in ONNX "
                         "Runtime; else torch)")
    pr.add_argument("--no-blendshape-head", action="store_true",
                    help="skip the model's blendshape head (small_cnn's second look at contempt, docs/models.md): "
                         "faster on faces near contempt, which it then reads as the model alone does")
    pr.add_argument("--json", action="store_true", help="one JSON object per image (path, model, faces, image_size, "
                    "timings_ms) instead of a text line per face")
    detector_options(pr)
    pr.add_argument("--action-units", action="store_true", help=AU_HELP + "; videos: columns au_1, ..., smoothed "
                    "along each track")
    video = pr.add_argument_group("videos")
    sample = video.add_mutually_exclusive_group()
    sample.add_argument("--every", type=int, help="analyse every Nth frame (default: every frame)")
    sample.add_argument("--fps", type=float, help="analyse about this many frames per second")
    out = video.add_mutually_exclusive_group()
    out.add_argument("--csv", type=Path, help="write the per-frame, per-track table here")
    out.add_argument("--parquet", type=Path, help="write the per-frame, per-track table here (parquet)")
    pr.add_argument("--verbose", action="store_true", help="debug logs, and the face detector's native messages")
    add_dataset_parser(sub)
    return p


def add_dataset_parser(sub) -> None:
    d = sub.add_parser("predict-dataset", allow_abbrev=False, help="every face of a data set -> parquet shards",
                       description="Every face of every image of SOURCE -> parquet shards in --output (one row per "
                       "face; image id, box, 8 probabilities, top emotion, uncertain, error). A rerun with the same "
                       "options skips the shards already written.")
    d.add_argument("source", help="a folder of images, a folder of .parquet files, or a Hub data set id (org/name)")
    d.add_argument("--output", required=True, help="folder for the part-NNNNNN.parquet shards")
    d.add_argument("--model", help="local-dir:/path or hf-hub:org/name[@rev] (default: EMOTION_MODEL or shipped)")
    d.add_argument("--workers", type=int, default=1, help="processes on this machine, each with its own model")
    d.add_argument("--threads", type=int, help="torch threads per process (default: 1 when --workers > 1)")
    d.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS",
                   help="run on Ray Data instead: 'auto' joins the cluster this machine is in, no value starts a "
                        "local Ray (needs pip install -r requirements-ray.txt)")
    d.add_argument("--shard-size", type=int, default=1000, help="images per output shard (the unit of resume)")
    d.add_argument("--batch-size", type=int, default=32, help="images classified together")
    d.add_argument("--split", default="train", help="Hub data set split")
    d.add_argument("--config", help="Hub data set configuration")
    d.add_argument("--image-column", help="column holding the images (default: found from the schema)")
    d.add_argument("--id-column", help="column holding each image's id (default: its file name, else a hash)")
    detector_options(d)
    d.add_argument("--action-units", action="store_true", help=AU_HELP + "; columns au_1, au_2, ..., "
                   "action_units_reason")
    d.add_argument("--no-progress", action="store_true", help="no progress bar")
    d.add_argument("--verbose", action="store_true", help="debug logs, and the face detector's native messages")


def expand(paths: list[str]) -> list[Path]:
    """Files as given; folders replaced by the images inside them (sorted)."""
    out = []
    for p in map(Path, paths):
        if p.is_dir():
            out.extend(sorted(f for f in p.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file()))
        else:
            out.append(p)
    return out


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.verbose:
        import logging

        logging.basicConfig(level=logging.DEBUG, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    if args.command == "predict-dataset":
        return predict_dataset(args)
    from .errors import EmotionError
    from .predict import Predictor

    try:
        predictor = Predictor.from_pretrained(args.model, min_score=args.min_score, max_faces=args.max_faces,
                                              range=args.range, backend=args.backend,
                                              blendshape_head=not args.no_blendshape_head)
    except EmotionError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from .sources import parse

    source = parse(predictor.source)
    model = {"id": source.id, "source": str(source), "revision": source.revision}
    files = expand(args.paths)
    if not files:
        print("error: no images found in the given folders; pass image files or folders with images", file=sys.stderr)
        return 2
    failed = 0
    bar = None
    if any(Path(p).is_dir() for p in args.paths):
        from .progress import progress

        files = bar = progress(files, desc="predicting", unit="img")
    for path in files:
        if path.suffix.lower() in VIDEO_SUFFIXES:
            failed += predict_video(predictor, path, args)
            continue
        try:
            result = predictor.predict(path, action_units=args.action_units)
        except EmotionError as e:
            print(f"error: {path}: {e}", file=sys.stderr)
            failed += 1
            continue
        lines = [json.dumps({"path": str(path), "model": model, **result.to_dict()})] if args.json \
            else format_text(path, result)
        (bar.write if bar is not None else print)("\n".join(lines))
    return 1 if failed else 0


def predict_video(predictor, path: Path, args) -> int:
    """One video: a line per track (or JSON), the table to --csv/--parquet. Returns 1 on failure, else 0."""
    from .errors import EmotionError

    try:
        result = predictor.predict_video(path, every=args.every, fps=args.fps, action_units=args.action_units)
    except EmotionError as e:
        print(f"error: {path}: {e}", file=sys.stderr)
        return 1
    table = args.csv or args.parquet
    if table:
        frame = result.to_pandas()
        frame.to_csv(table, index=False) if args.csv else frame.to_parquet(table, index=False)
    if args.json:
        print(json.dumps({"path": str(path), **{k: v for k, v in result.to_dict().items() if k != "rows" or not table}}))
    else:
        for t in result.tracks:
            print(f"{path}: track {t['track']} from {t['first_s']:.2f} s to {t['last_s']:.2f} s "
                  f"({t['frames']} frames): mostly {t['emotion']}")
        if not result.tracks:
            print(f"{path}: no face found in {result.frames} frames")
    if result.interrupted:
        print(f"interrupted: kept the first {result.frames} frames{f' in {table}' if table else ''}", file=sys.stderr)
    return 0


def predict_dataset(args) -> int:
    """Runs `predict-dataset`; bad options or sources end with one line on stderr and exit code 2."""
    from .batch import Options, run
    from .batch_sources import open_source
    from .errors import EmotionError

    options = Options(args.model, args.min_score, args.max_faces, args.range, args.threads, args.action_units)
    try:
        source = open_source(args.source, split=args.split, config=args.config, image_column=args.image_column,
                             id_column=args.id_column)
        if args.ray:
            from .batch_ray import run_ray

            summary = run_ray(source, Path(args.output), options, address=args.ray, workers=args.workers,
                              batch_size=args.batch_size)
        else:
            summary = run(source, Path(args.output), options, workers=args.workers, shard_size=args.shard_size,
                          batch_size=args.batch_size, progress=not args.no_progress)
    except EmotionError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(summary.line(), file=sys.stderr)
    return 0


def format_text(path: Path, result) -> list[str]:
    if not result.faces:
        return [f"{path}: no face found"]
    cut = ([f"{path}: showing the {len(result.faces)} highest-scoring of {result.faces_total} faces "
            "(raise --max-faces to see more)"] if result.truncated else [])
    lines = []
    for i, f in enumerate(result.faces):
        lines.append(f"{path}: face {i + 1} at x={f.box[0]} y={f.box[1]} w={f.box[2]} h={f.box[3]}: {f.emotion} "
                     f"{f.confidence:.0%}{' (uncertain)' if f.uncertain else ''}")
        if f.has_action_units:
            lines.append(f"{path}: face {i + 1} action units: {top_action_units(f)}")
    return cut + lines


def top_action_units(face) -> str:
    """'AU12 0.92 (lip corner puller), AU10 0.55 (...), AU7 0.40 (...)', or why there are none."""
    from .action_units import AU_NAMES

    if face.action_units is None:
        return f"none ({face.action_units_reason})"
    top = sorted(face.action_units.items(), key=lambda kv: -kv[1])[:TOP_AUS]
    return ", ".join(f"{au} {v:.2f} ({AU_NAMES[au]})" for au, v in top)


if __name__ == "__main__":
    sys.exit(main())
