"""`python -m emotion predict PHOTO_OR_FOLDER... [--model SOURCE] [--json]`: the emotion of every face."""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m emotion", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    pr = sub.add_parser("predict", help="detect faces and classify their expressions")
    pr.add_argument("paths", nargs="+", help="image files or folders (every image inside is predicted)")
    pr.add_argument("--model", help="a shipped model's name (small_cnn, resnet50, ...), local-dir:/path or "
                    "hf-hub:org/name[@rev] (default: EMOTION_MODEL or the shipped default)")
    pr.add_argument("--json", action="store_true", help="one JSON object per image (path, model, faces, image_size, "
                    "timings_ms) instead of a text line per face")
    pr.add_argument("--max-faces", type=int, default=20)
    pr.add_argument("--min-score", type=float, default=0.5, help="minimum face detection score (0..1)")
    pr.add_argument("--range", choices=("short", "full", "auto"), default="auto", help="face detector range")
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
        from tqdm import tqdm

        files = bar = tqdm(files, desc="predicting", unit="img", file=sys.stderr)
    for path in files:
        try:
            result = predictor.predict(path)
        except EmotionError as e:
            print(f"error: {path}: {e}", file=sys.stderr)
            failed += 1
            continue
        lines = [json.dumps({"path": str(path), "model": model, **result.to_dict()})] if args.json \
            else format_text(path, result)
        (bar.write if bar is not None else print)("\n".join(lines))
    return 1 if failed else 0


def format_text(path: Path, result) -> list[str]:
    if not result.faces:
        return [f"{path}: no face found"]
    return [f"{path}: face {i + 1} at x={f.box[0]} y={f.box[1]} w={f.box[2]} h={f.box[3]}: {f.emotion} "
            f"{f.confidence:.0%}{' (uncertain)' if f.uncertain else ''}" for i, f in enumerate(result.faces)]


if __name__ == "__main__":
    sys.exit(main())
