"""`python -m emotion predict PHOTO_OR_FOLDER_OR_VIDEO... [--model SOURCE] [--json]`: the emotion of every face.

A video (by its suffix) gives one line per track, or its per-frame table with --csv / --parquet.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
VIDEO_SUFFIXES = {".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv", ".flv", ".3gp"}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m emotion", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    pr = sub.add_parser("predict", help="detect faces and classify their expressions")
    pr.add_argument("paths", nargs="+", help="image files or folders (every image inside is predicted)")
    pr.add_argument("--model", help="local-dir:/path or hf-hub:org/name[@rev] (default: EMOTION_MODEL or shipped)")
    pr.add_argument("--json", action="store_true", help="one JSON object per image instead of text lines")
    pr.add_argument("--max-faces", type=int, default=20)
    pr.add_argument("--min-score", type=float, default=0.5, help="minimum face detection score (0..1)")
    pr.add_argument("--range", choices=("short", "full", "auto"), default="auto", help="face detector range")
    video = pr.add_argument_group("videos")
    sample = video.add_mutually_exclusive_group()
    sample.add_argument("--every", type=int, help="analyse every Nth frame (default: every frame)")
    sample.add_argument("--fps", type=float, help="analyse about this many frames per second")
    out = video.add_mutually_exclusive_group()
    out.add_argument("--csv", type=Path, help="write the per-frame, per-track table here")
    out.add_argument("--parquet", type=Path, help="write the per-frame, per-track table here (parquet)")
    return p


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
    from .errors import EmotionError
    from .predict import Predictor

    try:
        predictor = Predictor.from_pretrained(args.model, min_score=args.min_score, max_faces=args.max_faces,
                                              range=args.range)
    except EmotionError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    files = expand(args.paths)
    if not files:
        print("error: no images found in the given folders; pass image files or folders with images", file=sys.stderr)
        return 2
    failed = 0
    bar = None
    if any(Path(p).is_dir() for p in args.paths):
        from tqdm import tqdm

        files = bar = tqdm(files, desc="predicting", unit="img", file=sys.stderr)
    for path in files:
        if path.suffix.lower() in VIDEO_SUFFIXES:
            failed += predict_video(predictor, path, args)
            continue
        try:
            result = predictor.predict(path)
        except EmotionError as e:
            print(f"error: {path}: {e}", file=sys.stderr)
            failed += 1
            continue
        lines = [json.dumps({"path": str(path), **result.to_dict()})] if args.json else format_text(path, result)
        (bar.write if bar is not None else print)("\n".join(lines))
    return 1 if failed else 0


def predict_video(predictor, path: Path, args) -> int:
    """One video: a line per track (or JSON), the table to --csv/--parquet. Returns 1 on failure, else 0."""
    from .errors import EmotionError

    try:
        result = predictor.predict_video(path, every=args.every, fps=args.fps)
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


def format_text(path: Path, result) -> list[str]:
    if not result.faces:
        return [f"{path}: no face found"]
    cut = ([f"{path}: showing the {len(result.faces)} highest-scoring of {result.faces_total} faces "
            "(raise --max-faces to see more)"] if result.truncated else [])
    return cut + [f"{path}: face {i + 1} at x={f.box[0]} y={f.box[1]} w={f.box[2]} h={f.box[3]}: {f.emotion} "
            f"{f.confidence:.0%}{' (uncertain)' if f.uncertain else ''}" for i, f in enumerate(result.faces)]


if __name__ == "__main__":
    sys.exit(main())
