"""`evaluate` and `compare`: score exported models on a data set, the way serving runs them."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from emotion.labels import LABELS
from emotion.bench import ms_per_face
from emotion.models import WEIGHTS_NAME, load_model
from emotion.sources import model_id

from .data import DataError, FaceSplit, label_ids, load_raw, pick_rows, to_face_split
from .evaluation import compute_metrics, predict_logits

CLEAN_COLUMN = "observer_agrees"  # photo data sets: False where the raters did not see the posed emotion
# Faces cut by other tools, fed as ready crops (no detection): (margin, align eyes, offset, size or None = as cut).
# tight: the detector's box alone, unaligned, as a 48 px gray file (FER-style crop sets); loose: a quarter of the
# box added on each side, unaligned, in colour (aligned film-face sets frame wider than serving's crop).
FRAMINGS = {"tight": (0.0, False, 0.0, 48), "loose": (0.25, False, 0.0, None)}


def load_eval_split(data: str, split: str, max_samples: int | None = None, photos: bool = False) -> FaceSplit:
    """Hard labels of one split; `photos` keeps the images in colour (for the detector) and the raters' `clean`
    view (rows whose observers agree with the posed label, where the data set says so)."""
    raw = load_raw(data)
    if split not in raw:
        raise DataError(f"no split {split!r} in {data}; it has {', '.join(raw)}")
    ds = raw[split]
    ds = ds.select(pick_rows(len(ds), max_samples))
    if not photos:
        return to_face_split(ds, soft_labels=False)
    labels, _ = label_ids(ds)
    views = {"clean": np.array([v is not False for v in ds[CLEAN_COLUMN]])} if CLEAN_COLUMN in ds.column_names else {}
    return FaceSplit([img.convert("RGB") for img in ds["image"]], np.eye(len(LABELS), dtype=np.float32)[labels],
                     labels, views=views)


def detect_and_crop(split: FaceSplit, info) -> tuple[FaceSplit, int]:
    """Photos -> the largest face found at serving's threshold, framed as serving frames it (or the whole photo)."""
    from emotion.faces import crop_largest_faces

    crops, found = crop_largest_faces(split.images, info.crop_margin, info.align_eyes, info.crop_offset_y)
    return FaceSplit(crops, split.targets, split.labels, split.dup, views=split.views), int(found.sum())


def other_framings(photos: FaceSplit) -> dict[str, FaceSplit]:
    """The photos' largest faces cut as FRAMINGS says, each framing a split of ready crops (rows without a face
    stay whole)."""
    from emotion.faces import crops_of, largest_faces

    found = largest_faces(photos.images)  # detected once, cut once per framing
    out = {}
    for name, (margin, align, offset, size) in FRAMINGS.items():
        crops = crops_of(found, margin, align, offset)
        if size:
            crops = [c.convert("L").resize((size, size), Image.BOX) for c in crops]
        out[name] = FaceSplit(crops, photos.targets, photos.labels, views=photos.views)
    return out


def framing_accuracy(source: str, framed: dict[str, FaceSplit]) -> dict[str, float]:
    """Accuracy over all rows of each framing's ready crops (serving's preprocessing, no detection)."""
    model, info, _ = load_model(source)
    return {name: float((predict_logits(model, split, info).argmax(1) == split.labels).mean())
            for name, split in framed.items()}


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
    for view, keep in split.views.items():
        if keep.any() and not keep.all():
            out["splits"][view] = compute_metrics(logits[keep], split.labels[keep], info.temperature)
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
            out: str | None = None, photos: str | None = None) -> str:
    """Markdown tables of several models side by side: FER+-style crops of `data`, and (with `photos`) a photo data
    set scored through the serving detector, all rows and the rows whose raters agree with the posed label, and its
    faces cut as other tools cut them (FRAMINGS) and given as ready crops."""
    faces = load_eval_split(data, split, max_samples)
    posed = load_eval_split(photos, split, None, photos=True) if photos else None
    rows = [(score(s, faces), score(s, posed, detect_faces=True) if posed is not None else None) for s in sources]
    framed = other_framings(posed) if posed is not None else {}
    framings = [framing_accuracy(s, framed) for s in sources] if framed else [{}] * len(sources)
    head = ["model", "accuracy", "accuracy (no dups)", "macro-F1 (no dups)"]
    if posed is not None:
        head += ["posed photos", "posed, raters agree", "lowest recall (agree)", "posed, tight crops",
                 "posed, loose crops"]
    head += ["ECE before → after T", "params", "MB", "ms/face (CPU, 1 thread)", "training"]
    lines = [_row(head), "|" + "---|" * len(head)]
    for (r, p), f in zip(rows, framings):
        w = r["splits"]["whole"]
        d = r["splits"].get("dedup", w)
        cells = [_name(r), f"{w['accuracy']:.1%}", f"{d['accuracy']:.1%}", f"{d['macro_f1']:.3f}"]
        if p is not None:
            c = p["splits"].get("clean", p["splits"]["whole"])
            low = min((m["recall"], lab) for lab, m in c["per_class"].items() if m["support"])
            cells += [f"{p['splits']['whole']['accuracy']:.1%}", f"{c['accuracy']:.1%}", f"{low[0]:.2f} ({low[1]})",
                      f"{f['tight']:.1%}", f"{f['loose']:.1%}"]
        cells += [f"{d['ece_before']:.3f} → {d['ece_after']:.3f}", f"{r['params'] / 1e6:.2f} M", f"{r['size_mb']}",
                  f"{r['ms_per_face_cpu']}", r["training"]]
        lines.append(_row(cells))
    tables = ["\n".join(lines), _recall_table("Recall per class, FER+ validation without duplicates",
                                              [(_name(r), r["splits"].get("dedup", r["splits"]["whole"])) for r, _ in rows])]
    if posed is not None:
        tables.append(_recall_table("Recall per class, posed photos whose raters agree (through the detector)",
                                    [(_name(r), p["splits"].get("clean", p["splits"]["whole"])) for r, p in rows]))
    table = "\n\n".join(tables)
    if out:
        Path(out).write_text(table + "\n")
    return table


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _name(result: dict) -> str:
    return model_id(result["source"])


def _recall_table(title: str, named: list[tuple[str, dict]]) -> str:
    lines = [f"{title}:", "", _row(["model", *LABELS]), "|" + "---|" * (len(LABELS) + 1)]
    for name, m in named:
        lines.append(_row([name] + [f"{m['per_class'][lab]['recall']:.2f}" if m["per_class"][lab]["support"] else "–"
                                    for lab in LABELS]))
    return "\n".join(lines)


def held_to(cfg, model: str, baseline: str | None, out: str | None = None) -> str:
    """`model` beside `baseline` (default: the config's) on every validation report of the multi-source `cfg`,
    each as served (biases, temperature, flip, blendshape head): trainer/no_trade.py's table, and the trades."""
    from . import no_trade
    from .sources import validation_rows

    baseline = baseline or cfg.baseline
    if not cfg.sources or not baseline:
        raise DataError("held-to needs a config with sources: and a baseline (baseline: in it, or --baseline)")
    vals = validation_rows(cfg)
    logits = {}
    for source in (model, baseline):
        net, info, _ = load_model(source)
        logits[source] = {name: predict_logits(net, split, info) for name, split in vals.items()}
    comparison = no_trade.compare(logits[model], logits[baseline], vals)
    if out:
        Path(out).write_text(json.dumps({"model": model, "baseline": baseline, "reports": comparison}, indent=1))
    lost = no_trade.trades(comparison)
    verdict = f"trades: {', '.join(lost)}" if lost else "no report lost beyond its noise"
    return f"{model} against {baseline}\n\n{no_trade.table(comparison)}\n\n{verdict}"
