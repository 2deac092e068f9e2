"""Action units (emotion.action_units) checked on posed expressions: mean AU per posed emotion, the expected
contrasts, the issue's acceptance numbers, and the cost per face.

Blendshapes are not certified FACS coding; what can be checked here is whether each AU moves with the posed
emotions the way FACS says it should (Ekman & Friesen's prototypes):

- AU4 (brow lowerer) and AU24 (lip presser) higher on anger than on happy;
- AU12 (lip corner puller) and AU6 (cheek raiser) higher on happy than on every other emotion;
- AU9 (nose wrinkler) higher on disgust than on every other emotion;
- AU1, AU2 (brow raisers) and AU26 (jaw drop) higher on surprise than on every other emotion;
- AU15 (lip corner depressor) higher on sad than on happy.

Sets: `ckplus_dev` (48x48 gray CK+ crops; the whole crop is the box, since no detector works at 48 px),
FER+ validation (48x48 gray, crowd labels; every `--fer-step`th row), and the Taiwanese posed performers
(256x256 colour, train + validation; our FaceDetector gives the box, its largest face). The acceptance is the
issue's: the first 10 posed anger and the first 10 posed happy photos of the performers' validation split.

    python bench/bench_action_units.py [--data ../shared/data] [--fer-step 4]
"""
from __future__ import annotations

import argparse
import io
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from emotion.action_units import AU_TABLE, ActionUnitReader  # noqa: E402
from emotion.bench import machine  # noqa: E402
from emotion.faces import FaceDetector  # noqa: E402
from emotion.labels import LABELS as EMOTIONS  # noqa: E402

SHOWN = ("AU1", "AU2", "AU4", "AU5", "AU6", "AU7", "AU9", "AU10", "AU12", "AU15", "AU17", "AU20", "AU24", "AU26",
         "AU43")
# (AU, emotion that should be higher, emotions it should beat): "*" = every other emotion.
CHECKS = [("AU4", "anger", ("happy",)), ("AU24", "anger", ("happy",)), ("AU12", "happy", "*"),
          ("AU6", "happy", "*"), ("AU9", "disgust", "*"), ("AU1", "surprise", "*"), ("AU2", "surprise", "*"),
          ("AU26", "surprise", "*"), ("AU15", "sad", ("happy",))]
SIGNAL = 0.02  # an AU whose mean stays under this for every emotion does not move: its ordering is noise


def rows(path: Path, step: int = 1) -> list[dict]:
    """The parquet rows (every `step`th) with the image decoded to an RGB array."""
    import pyarrow.parquet as pq

    table = pq.read_table(path).to_pylist()[::step]
    for row in table:
        row["rgb"] = np.asarray(Image.open(io.BytesIO(row["image"]["bytes"])).convert("RGB"))
    return table


def read_all(reader: ActionUnitReader, data: list[dict], detector: FaceDetector | None) -> list[dict]:
    """Each row with its reading ("au": FaceActionUnits or None when our detector found no face) and its ms."""
    for row in data:
        rgb = row["rgb"]
        if detector is None:
            box = (0, 0, rgb.shape[1], rgb.shape[0])
        else:
            faces = detector.detect(Image.fromarray(rgb))
            box = max(faces, key=lambda f: f.box[2] * f.box[3]).box if faces else None
        start = time.perf_counter()
        row["au"] = reader.read(rgb, [box])[0] if box is not None else None
        row["ms"] = (time.perf_counter() - start) * 1000 if box is not None else None
    return data


def means(data: list[dict]) -> dict[str, dict[str, float]]:
    """Mean AUs per emotion over the rows that got AUs."""
    out = {}
    for label, name in enumerate(EMOTIONS):
        got = [r["au"].action_units for r in data if r["label"] == label and r["au"] and r["au"].action_units]
        if got:
            out[name] = {au: float(np.mean([g[au] for g in got])) for au in AU_TABLE}
            out[name]["n"] = len(got)
    return out


def print_table(title: str, data: list[dict]) -> dict:
    found = sum(r["au"] is not None for r in data)
    hits = sum(bool(r["au"] and r["au"].action_units) for r in data)
    print(f"\n### {title}\n\n{len(data)} images; a face box for {found}, AUs for {hits} "
          f"({hits / max(1, found):.1%} of the boxes).\n")
    table = means(data)
    print("| emotion | n | " + " | ".join(SHOWN) + " |\n|---|---|" + "---|" * len(SHOWN))
    for name, row in table.items():
        print(f"| {name} | {row['n']} | " + " | ".join(f"{row[au]:.2f}" for au in SHOWN) + " |")
    return table


def print_checks(tables: dict[str, dict]) -> None:
    print("\n### Expected contrasts (holds / fails: the emotions it does not beat; no signal: no emotion's mean "
          f"reaches {SIGNAL})\n")
    print("| check | " + " | ".join(tables) + " |\n|---|" + "---|" * len(tables))
    for au, high, others in CHECKS:
        cells = []
        for table in tables.values():
            rivals = [e for e in table if e != high] if others == "*" else list(others)
            lost = [e for e in rivals if e in table and table[e][au] >= table[high][au]] if high in table else ["?"]
            top = max(row[au] for row in table.values())
            cells.append(f"no signal (max {top:.3f})" if top < SIGNAL else
                         "holds" if not lost else "fails: " + ", ".join(lost))
        vs = "all others" if others == "*" else ", ".join(others)
        print(f"| {au} {high} > {vs} | " + " | ".join(cells) + " |")


def acceptance(validation: list[dict]) -> None:
    """The issue's check on the first 10 anger and 10 happy validation photos (and on all), max (shipped) and mean."""
    print("\n### Acceptance: posed anger vs posed happy photos of the performers' validation split\n")
    print("| photos | left/right combined by | AU4 anger | AU4 happy | difference (>= 0.03) | AU12 anger | "
          "AU12 happy | difference (>= 0.3) |\n|---|---|---|---|---|---|---|---|")
    for count in (10, None):
        picked = {e: [r for r in validation if r["label"] == EMOTIONS.index(e) and r["au"] and r["au"].blendshapes]
                  [:count] for e in ("anger", "happy")}
        what = (f"first {count} of each" if count else
                f"all ({len(picked['anger'])} anger, {len(picked['happy'])} happy)")
        for how, fn in (("max (shipped)", max), ("mean", lambda a, b: (a + b) / 2)):
            m = {(au, e): np.mean([fn(*(r["au"].blendshapes[n] for n in AU_TABLE[au])) for r in picked[e]])
                 for au in ("AU4", "AU12") for e in picked}
            print(f"| {what} | {how} | {m['AU4', 'anger']:.3f} | {m['AU4', 'happy']:.3f} | "
                  f"{m['AU4', 'anger'] - m['AU4', 'happy']:+.3f} | {m['AU12', 'anger']:.3f} | "
                  f"{m['AU12', 'happy']:.3f} | {m['AU12', 'happy'] - m['AU12', 'anger']:+.3f} |")


def astronaut(reader: ActionUnitReader, detector: FaceDetector) -> None:
    image = Image.open(ROOT / "examples" / "astronaut.jpg").convert("RGB")
    face = detector.detect(image)[0]
    got = reader.read(np.asarray(image), [face])[0]
    print(f"\nexamples/astronaut.jpg (box {face.box}): AU12 {got.action_units['AU12']:.3f}, "
          f"AU4 {got.action_units['AU4']:.3f}, AU6 {got.action_units['AU6']:.3f}, {len(got.blendshapes)} blendshapes")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--fer-step", type=int, default=4, help="read every Nth FER+ validation row")
    args = parser.parse_args()
    reader, detector = ActionUnitReader(), FaceDetector()
    print(f"Machine: {machine()}\n")
    astronaut(reader, detector)
    tables = {}
    ck = read_all(reader, rows(args.data / "ckplus_dev" / "train-0000-of-0001.parquet"), None)
    tables["ckplus_dev (48 px gray)"] = print_table("ckplus_dev: 48x48 gray CK+ crops, the whole crop as the box", ck)
    fer = read_all(reader, rows(args.data / "ferplus" / "validation-0000-of-0001.parquet", args.fer_step), None)
    tables["FER+ (48 px gray)"] = print_table(f"FER+ validation, every {args.fer_step}th row, 48x48 gray", fer)
    posed = {s: read_all(reader, rows(args.data / "taiwanese_performers" / f"{s}-0000-of-0001.parquet"), detector)
             for s in ("validation", "train")}
    tables["posed performers (256 px colour)"] = print_table(
        "Posed performers, train + validation, 256x256 colour, our detector's box",
        posed["validation"] + posed["train"])
    print_checks(tables)
    acceptance(posed["validation"])
    ms = [r["ms"] for s in posed.values() for r in s if r["ms"] is not None]
    print(f"\nPer face (crop + landmarker + mapping, posed photos, {len(ms)} faces, 1 thread): "
          f"p50 {np.median(ms):.1f} ms, p95 {np.percentile(ms, 95):.1f} ms")


if __name__ == "__main__":
    main()
