"""Accuracy through serving on photo data sets: each photo's file bytes through `Predictor.predict` (decode, detect,
crop, classify), the largest face's emotion against the label; a photo without a face counts as wrong.

    python bench/bench_serving_accuracy.py [--model SOURCE] [--backend NAME] [--boxes out.json] [--data ../shared/data]

Prints accuracy on taiwanese_performers validation (all rows, and the rows whose raters agree with the posed label)
and on jaffe_dev (all 85 rows), with the photos where no face was found. `--boxes` writes each photo's largest face
box and eyes, to compare the crops of two detectors (run it from two checkouts: `git worktree add /tmp/old REF`).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SETS = {"taiwanese_performers": "validation-*.parquet", "jaffe_dev": "train-*.parquet"}


def rows(data: Path, name: str) -> list[dict]:
    """The set's rows: image bytes, label, and whether the raters agree (None where the set has no raters)."""
    import pyarrow.parquet as pq

    out = []
    for path in sorted((data / name).glob(SETS[name])):
        for r in pq.read_table(path).to_pylist():
            out.append({"bytes": r["image"]["bytes"], "label": r["label"], "agrees": r.get("observer_agrees"),
                        "id": r["image"].get("path") or r.get("sequence")})
    return out


def score(predictor, items: list[dict]) -> tuple[list[dict], float]:
    """Each photo's largest face (label index, box, eyes) or None, and the seconds it took."""
    labels = predictor.labels
    t = time.perf_counter()
    out = []
    for item in items:
        faces = predictor.predict(item["bytes"]).faces
        face = max(faces, key=lambda f: f.box[2] * f.box[3], default=None)
        out.append(None if face is None else {"pred": labels.index(face.emotion), "box": list(face.box),
                                              "eyes": [list(map(float, p)) for p in (face.keypoints or [])[:2]]})
    return out, time.perf_counter() - t


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="model source (default: the shipped default)")
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    p.add_argument("--boxes", default=None, help="write each photo's largest face box and eyes here (JSON)")
    p.add_argument("--backend", default="auto", help="auto, int8, onnxruntime or torch (emotion.backends)")
    args = p.parse_args()
    from emotion.bench import cpu_name
    from emotion.predict import Predictor
    from emotion.threads import set_threads

    set_threads(1)
    predictor = Predictor.from_pretrained(args.model, backend=args.backend)
    print(f"machine: {cpu_name()}; model {predictor.source}, backend {predictor.backend}; checkout {ROOT}\n")
    print("| set | rows | accuracy | no face found | seconds |")
    print("|---|---|---|---|---|")
    boxes = {}
    for name in SETS:
        items = rows(Path(args.data), name)
        found, seconds = score(predictor, items)
        subsets = {"all": [True] * len(items)}
        if any(i["agrees"] is not None for i in items):
            subsets["raters agree"] = [i["agrees"] is True for i in items]
        for sub, mask in subsets.items():
            pairs = [(i, f) for i, f, m in zip(items, found, mask) if m]
            right = sum(f is not None and f["pred"] == i["label"] for i, f in pairs)
            missed = sum(f is None for _, f in pairs)
            print(f"| {name} ({sub}) | {len(pairs)} | {right / len(pairs):.4f} ({right}) | {missed} | {seconds:.1f} |")
        boxes[name] = {i["id"]: f for i, f in zip(items, found)}
    if args.boxes:
        Path(args.boxes).write_text(json.dumps(boxes))


if __name__ == "__main__":
    main()
