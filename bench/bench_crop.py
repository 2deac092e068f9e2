"""How much accuracy does the serving path (detect -> crop -> classify) keep, and which crop settings keep most?

Each FER+ validation face is upscaled 4x, edge-padded to twice its size (so the detector sees context) and,
optionally, rotated. The Predictor then finds and crops it as it would a photo. We compare its accuracy with the
model's accuracy on the original crops, for a grid of crop margins, vertical offsets and eye alignment.

    python bench/bench_crop.py --model local-dir:models/small_cnn --n 800 [--rotate 15]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from emotion import Predictor  # noqa: E402
from emotion.faces import crop_face  # noqa: E402
from trainer.compare import load_eval_split  # noqa: E402


def photo_like(face: Image.Image, rotate: float, rng: np.random.Generator) -> Image.Image:
    big = np.asarray(face.convert("L").resize((192, 192), Image.BICUBIC))
    padded = Image.fromarray(np.pad(big, 96, mode="edge")).convert("RGB")
    angle = rng.uniform(-rotate, rotate) if rotate else 0.0
    return padded.rotate(angle, resample=Image.BILINEAR, fillcolor=(128, 128, 128)) if angle else padded


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    p.add_argument("--model", default=None)
    p.add_argument("--data", default="../shared/data/ferplus")
    p.add_argument("--n", type=int, default=800)
    p.add_argument("--rotate", type=float, default=0.0, help="rotate each photo by up to this many degrees")
    p.add_argument("--margins", default="0.0,0.1,0.2,0.3")
    p.add_argument("--offsets", default="0.0,-0.1")
    args = p.parse_args()
    pred = Predictor.from_pretrained(args.model)
    split = load_eval_split(args.data, "validation")
    idx = np.random.default_rng(0).permutation(len(split))[: args.n]
    rng = np.random.default_rng(1)
    photos = [photo_like(split.images[i], args.rotate, rng) for i in idx]
    labels = split.labels[idx]
    direct = pred.probabilities([split.images[i] for i in idx]).argmax(1)
    detections = [pred.detector.detect(ph) for ph in photos]
    found = np.array([len(d) == 1 for d in detections])
    print(f"model {pred.source}; {args.n} faces, rotation up to {args.rotate} deg; detector found exactly one face "
          f"in {found.mean():.1%}")
    print(f"original crops: accuracy {np.mean(direct == labels):.4f} (on the detected subset "
          f"{np.mean(direct[found] == labels[found]):.4f})")
    print("| margin | offset_y | align eyes | accuracy via detection | agreement with original crop |")
    print("|---|---|---|---|---|")
    for align in (True, False):
        for margin in map(float, args.margins.split(",")):
            for offset in map(float, args.offsets.split(",")):
                crops = [crop_face(ph, d[0], margin, align, offset) for ph, d, ok in zip(photos, detections, found)
                         if ok]
                preds = pred.probabilities(crops).argmax(1)
                print(f"| {margin} | {offset} | {align} | {np.mean(preds == labels[found]):.4f} | "
                      f"{np.mean(preds == direct[found]):.4f} |")
    print(f"shipped setting: margin {pred.info.crop_margin}, offset {pred.info.crop_offset_y}, "
          f"align {pred.info.align_eyes}")


if __name__ == "__main__":
    main()
