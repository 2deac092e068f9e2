"""`evaluate` and `compare`: score exported models on a data set, the way serving runs them."""
from __future__ import annotations

import json
from pathlib import Path

from emotion.labels import LABELS
from emotion.models import WEIGHTS_NAME, load_model

from .data import DataError, FaceSplit, load_raw, pick_rows, to_face_split
from .evaluation import compute_metrics, predict_logits
from .run import ms_per_face


def load_eval_split(data: str, split: str, max_samples: int | None = None) -> FaceSplit:
    raw = load_raw(data)
    if split not in raw:
        raise DataError(f"no split {split!r} in {data}; it has {', '.join(raw)}")
    ds = raw[split]
    return to_face_split(ds.select(pick_rows(len(ds), max_samples)), soft_labels=False)


def detect_and_crop(split: FaceSplit, info) -> tuple[FaceSplit, int]:
    """Photos -> the largest detected face, framed as serving frames it; images without a face stay whole."""
    from emotion.faces import FaceDetector, crop_face

    detector, found, crops = FaceDetector(), 0, []
    for img in split.images:
        rgb = img.convert("RGB")
        faces = detector.detect(rgb)
        if faces:
            found += 1
            face = max(faces, key=lambda f: f.box[2] * f.box[3])
            rgb = crop_face(rgb, face, info.crop_margin, info.align_eyes, info.crop_offset_y)
        crops.append(rgb)
    return FaceSplit(crops, split.targets, split.labels, split.dup), found


def score(source: str, split: FaceSplit, detect_faces: bool = False) -> dict:
    """Metrics with the model's own temperature (ECE before = T 1, after = config T), whole and deduplicated."""
    model, info, folder = load_model(source)
    found = None
    if detect_faces:
        split, found = detect_and_crop(split, info)
    logits = predict_logits(model, split, info)
    out = {"source": source, "architecture": info.architecture, "temperature": info.temperature,
           "params": sum(p.numel() for p in model.parameters()),
           "size_mb": round((folder / WEIGHTS_NAME).stat().st_size / 2**20, 2),
           "ms_per_face_cpu": round(ms_per_face(model, info), 2), "training": _training_note(folder),
           "splits": {"whole": compute_metrics(logits, split.labels, info.temperature)}}
    if found is not None:
        out["faces_detected"] = found
    if split.dup is not None and split.dup.any():
        keep = ~split.dup
        out["splits"]["dedup"] = compute_metrics(logits[keep], split.labels[keep], info.temperature)
    return out


def _training_note(folder: Path) -> str:
    """'N epochs, M min' from the export's eval_results.json, when it has them."""
    path = folder / "eval_results.json"
    if not path.is_file():
        return "–"
    r = json.loads(path.read_text())
    parts = [f"{r['epochs']} epochs" if "epochs" in r else "", f"{r['train_time_s'] / 60:.0f} min" if "train_time_s" in r
             else ""]
    return ", ".join(p for p in parts if p) or "–"


def evaluate_model(source: str, data: str, split: str = "validation", max_samples: int | None = None,
                   json_path: str | None = None, detect_faces: bool = False) -> str:
    """Evaluate one exported model; returns a readable report (and writes the full metrics as JSON).

    With `detect_faces`, each image is a photo: its largest face is found and cropped as serving does.
    """
    result = score(source, load_eval_split(data, split, max_samples), detect_faces)
    if json_path:
        Path(json_path).write_text(json.dumps(result, indent=2) + "\n")
    lines = [f"{source} on {data} [{split}]"]
    if detect_faces:
        lines.append(f"  a face was detected in {result['faces_detected']} of {result['splits']['whole']['n']} images")
    for name, m in result["splits"].items():
        lines.append(f"  {name:6s} n={m['n']:5d}  accuracy {m['accuracy']:.4f}  macro-F1 {m['macro_f1']:.4f}  "
                     f"ECE {m['ece_before']:.4f} -> {m['ece_after']:.4f} (T={result['temperature']:.3f})")
        lines.append("         recall: " + "  ".join(f"{lab} {m['per_class'][lab]['recall']:.2f}" for lab in LABELS))
    return "\n".join(lines)


def compare(sources: list[str], data: str, split: str = "validation", max_samples: int | None = None,
            out: str | None = None) -> str:
    """One markdown table of several models side by side."""
    faces = load_eval_split(data, split, max_samples)
    rows = [score(s, faces) for s in sources]
    head = ("| model | accuracy | accuracy (no dups) | macro-F1 (no dups) | "
            + " | ".join(f"recall {lab}" for lab in LABELS)
            + " | ECE before → after T | params | MB | ms/face (CPU, 1 thread) | training |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        w = r["splits"]["whole"]
        d = r["splits"].get("dedup", w)
        lines.append(
            f"| {Path(r['source'].split(':', 1)[-1]).name} | {w['accuracy']:.1%} | {d['accuracy']:.1%} | "
            f"{d['macro_f1']:.3f} | " + " | ".join(f"{d['per_class'][lab]['recall']:.2f}" for lab in LABELS)
            + f" | {d['ece_before']:.3f} → {d['ece_after']:.3f} | {r['params'] / 1e6:.2f} M | {r['size_mb']} | "
              f"{r['ms_per_face_cpu']} | {r['training']} |")
    table = "\n".join(lines)
    if out:
        Path(out).write_text(table + "\n")
    return table
