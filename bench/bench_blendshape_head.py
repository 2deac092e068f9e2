"""What the blendshape head costs (emotion/blendshape_head.py): classification time per face with and without it,
and the share of faces its gate sends to the landmarker, on FER+ validation faces and wild contempt crops.

    python bench/bench_blendshape_head.py [--model models/small_cnn] [--faces 400] [--threads 1]

Faces are classified one at a time as ready crops (`Predictor.probabilities`), so every gated face pays for one
landmarker run. The model is loaded twice: as shipped, and with `blendshape_head=False`.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from emotion.bench import machine  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="models/small_cnn", help="a model folder with a blendshape head")
    ap.add_argument("--faces", type=int, default=400, help="faces per set")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--data", default="../shared/data", help="folder holding ferplus/ and contempt_dev/")
    args = ap.parse_args()
    from emotion.threads import set_threads

    set_threads(args.threads)
    from emotion.predict import Predictor
    from trainer.rows import load_raw

    folder = Path(args.model)
    if not json.loads((folder / "config.json").read_text()).get("emotion", {}).get("blendshape_head"):
        sys.exit(f"{folder} has no blendshape head: fit one with tools/fit_blendshape_head.py")
    headed = Predictor.from_pretrained(f"local-dir:{folder}")
    plain = Predictor.from_pretrained(f"local-dir:{folder}", blendshape_head=False)
    sets = {"FER+ validation": load_raw(f"{args.data}/ferplus")["validation"],
            "wild contempt crops": load_raw(f"{args.data}/contempt_dev")["train"]}
    print(f"{folder}, {machine()}, {args.threads} thread(s), one face per call, median / mean ms per face")
    print("| faces | without the head | with it | gated (landmarker run) |\n|---|---|---|---|")
    for name, ds in sets.items():
        faces = [ds[i]["image"].convert("RGB") for i in range(min(args.faces, len(ds)))]
        row = []
        for predictor in (plain, headed):
            predictor.probabilities(faces[:2])  # warm-up: the landmarker loads on the first gated face
            times = []
            for face in faces:
                t = time.perf_counter()
                predictor.probabilities([face])
                times.append((time.perf_counter() - t) * 1000)
            row.append(f"{statistics.median(times):.2f} / {statistics.mean(times):.2f}")
        print(f"| {name} ({len(faces)}) | {row[0]} | {row[1]} | {gated_share(headed, faces):.1%} |")


def gated_share(predictor, faces) -> float:
    """The share of `faces` the head's gate sends to the landmarker, as serving decides it."""
    info = predictor.info
    _, rows = info.head().gated(predictor._backend.logits(faces), info.labels, info.logit_bias)
    return len(rows) / len(faces)


if __name__ == "__main__":
    main()
