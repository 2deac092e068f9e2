"""Face detection on group photos and on photos without faces: recall by face size, false faces per image, time.

Group photos are generated: real faces (FER+ validation, 48 px grayscale, upscaled; or Taiwanese performers, the
head cut out of the 256 px colour photo) pasted at 24-400 px on scikit-image photos that hold no face (coffee,
chelsea, rocket, ...), never overlapping. Face-free images are the same backgrounds, whole, cropped, rescaled and
mirrored. A detection finds a face when its box overlaps the pasted face's box by IoU >= 0.3 (boxes of tiny faces
differ by a few pixels between detectors); each face can be found once; a detection that finds none is false.

    python bench/bench_detect.py [--photos 40] [--empty 200] [--source taiwanese|ferplus|both] [--min-score 0.5]
"""
from __future__ import annotations

import argparse
import io
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from emotion.boxes import iou  # noqa: E402
from emotion.faces import FaceDetector  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
BACKGROUNDS = ("binary_blobs", "brick", "cat", "cell", "chelsea", "clock", "coffee", "coins", "colorwheel", "grass",
               "gravel", "horse", "hubble_deep_field", "immunohistochemistry", "logo", "moon", "page", "retina",
               "rocket", "shepp_logan_phantom", "stereo_motorcycle", "text")  # skimage.data: no face in any
SIZE_BINS = ((24, 40), (40, 80), (80, 160), (160, 401))
FLOORS = {(24, 40): 0.90, (40, 80): 0.98, (80, 160): 0.98, (160, 401): 0.98}
MATCH_IOU = 0.3


def backgrounds() -> dict[str, Image.Image]:
    """The face-free scikit-image photos, as RGB."""
    from skimage import data

    out = {}
    for name in BACKGROUNDS:
        a = getattr(data, name)()
        a = a[0] if isinstance(a, tuple) else a
        a = (a * 255).astype(np.uint8) if a.dtype == bool else a
        out[name] = Image.fromarray(a).convert("RGB")
    return out


def ferplus_faces(n: int, rng: np.random.Generator) -> list[tuple[Image.Image, tuple[float, ...]]]:
    """FER+ validation faces as RGB, each with its face box as fractions of the image (the FER frame is the face)."""
    table = pq.read_table(DATA / "ferplus" / "validation-0000-of-0001.parquet", columns=["image"])
    rows = rng.choice(table.num_rows, size=min(n, table.num_rows), replace=False)
    images = table.column("image").to_pylist()
    return [(Image.open(io.BytesIO(images[i]["bytes"])).convert("RGB"), (0.0, 0.0, 1.0, 1.0)) for i in rows]


def taiwanese_faces(n: int, rng: np.random.Generator, detector: FaceDetector) -> list[tuple[Image.Image, tuple]]:
    """Heads cut from the Taiwanese performers' photos: a square 1.8x the face box around it (hair, chin, some
    white), with the face box as fractions of the cut. The box comes from the detector on the photo alone."""
    out = []
    for split in ("validation", "train"):
        table = pq.read_table(DATA / "taiwanese_performers" / f"{split}-0000-of-0001.parquet", columns=["image"])
        for i in rng.permutation(table.num_rows):
            photo = Image.open(io.BytesIO(table.column("image")[int(i)].as_py()["bytes"])).convert("RGB")
            found = detector.detect(photo, range="short", max_faces=1)
            if not found:
                continue
            x, y, w, h = found[0].box
            side = 1.8 * max(w, h)
            x0, y0 = x + w / 2 - side / 2, y + h / 2 - side / 2
            head = photo.crop((round(x0), round(y0), round(x0 + side), round(y0 + side)))
            out.append((head, ((x - x0) / side, (y - y0) / side, w / side, h / side)))
            if len(out) >= n:
                return out
    return out


def group_photo(rng: np.random.Generator, background: Image.Image, faces: list, count: int, long_side: int):
    """`background` scaled to `long_side`, with up to `count` faces pasted at 24-400 px, not overlapping.

    Returns the photo and the pasted faces' boxes (x, y, w, h)."""
    scale = long_side / max(background.size)
    photo = background.resize((round(background.width * scale), round(background.height * scale)), Image.BICUBIC)
    taken, boxes = [], []
    for _ in range(count * 20):
        if len(boxes) >= count:
            break
        face, (fx, fy, fw, fh) = faces[rng.integers(len(faces))]
        size = float(np.exp(rng.uniform(np.log(24), np.log(400))))  # face box side: log-uniform 24..400 px
        side = round(size / max(fw, fh))
        if side >= min(photo.size):
            continue
        px, py = int(rng.integers(0, photo.width - side)), int(rng.integers(0, photo.height - side))
        if any(iou((px, py, side, side), t) > 0 for t in taken):
            continue
        photo.paste(face.resize((side, side), Image.BICUBIC), (px, py))
        taken.append((px, py, side, side))
        boxes.append((px + fx * side, py + fy * side, fw * side, fh * side))
    return photo, boxes


def face_free(rng: np.random.Generator, bgs: dict[str, Image.Image], count: int) -> list[Image.Image]:
    """`count` face-free images: each background whole, cropped, rescaled (0.5-3x) and mirrored at random."""
    names, out = list(bgs), []
    for i in range(count):
        img = bgs[names[i % len(names)]]
        if i >= len(names):  # the first round is the backgrounds as they are
            w, h = img.size
            cw, ch = int(w * rng.uniform(0.5, 1)), int(h * rng.uniform(0.5, 1))
            x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
            s = float(np.exp(rng.uniform(np.log(0.5), np.log(3))))
            img = img.crop((x, y, x + cw, y + ch)).resize((max(32, round(cw * s)), max(32, round(ch * s))))
            if rng.random() < 0.5:
                img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        out.append(img)
    return out


def match(found: list, truth: list) -> tuple[list[bool], int]:
    """Which true boxes were found, and how many detections found none (greedy, best IoU first)."""
    pairs = sorted(((iou(f.box, t), i, j) for i, f in enumerate(found) for j, t in enumerate(truth)), reverse=True)
    used_f, hit = set(), [False] * len(truth)
    for overlap, i, j in pairs:
        if overlap < MATCH_IOU:
            break
        if i not in used_f and not hit[j]:
            used_f.add(i)
            hit[j] = True
    return hit, len(found) - len(used_f)


def run_groups(detector, photos, min_score: float) -> dict:
    sizes, hits, false, ms = [], [], 0, []
    for photo, truth in photos:
        t = time.perf_counter()
        found = detector.detect(photo, min_score=min_score, max_faces=100)
        ms.append((time.perf_counter() - t) * 1000)
        hit, extra = match(found, truth)
        sizes += [max(b[2], b[3]) for b in truth]
        hits += hit
        false += extra
    return {"sizes": np.array(sizes), "hits": np.array(hits), "false": false, "ms": ms}


def report_groups(name: str, r: dict, photos: int) -> None:
    print(f"\n**{name}**: {photos} photos, {len(r['sizes'])} faces, {r['false']} false faces "
          f"({r['false'] / photos:.2f} per photo), detection p50 {np.percentile(r['ms'], 50):.0f} ms, "
          f"p95 {np.percentile(r['ms'], 95):.0f} ms\n")
    print("| face size (px) | faces | found | recall | floor |")
    print("|---|---|---|---|---|")
    for lo, hi in SIZE_BINS:
        sel = (r["sizes"] >= lo) & (r["sizes"] < hi)
        rec = r["hits"][sel].mean() if sel.any() else float("nan")
        ok = "ok" if rec >= FLOORS[(lo, hi)] else "BELOW"
        print(f"| {lo}-{min(hi, 400)} | {sel.sum()} | {r['hits'][sel].sum()} | {rec:.3f} | >= {FLOORS[(lo, hi)]} {ok} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--photos", type=int, default=40, help="group photos per face source")
    p.add_argument("--faces", type=int, default=16, help="faces pasted per group photo (at most)")
    p.add_argument("--empty", type=int, default=200, help="face-free images")
    p.add_argument("--source", choices=("taiwanese", "ferplus", "both"), default="both")
    p.add_argument("--min-score", type=float, default=0.5)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    from emotion.bench import cpu_name

    rng = np.random.default_rng(args.seed)
    detector = FaceDetector()
    bgs = backgrounds()
    print(f"machine: {cpu_name()}; min_score {args.min_score}; seed {args.seed}")
    sources = ("taiwanese", "ferplus") if args.source == "both" else (args.source,)
    for source in sources:
        faces = (taiwanese_faces(400, rng, detector) if source == "taiwanese" else ferplus_faces(1000, rng))
        photos = [group_photo(rng, bgs[BACKGROUNDS[i % len(BACKGROUNDS)]], faces, args.faces,
                              int(rng.integers(800, 2049))) for i in range(args.photos)]
        report_groups(f"group photos, {source} faces", run_groups(detector, photos, args.min_score), len(photos))
    empty = face_free(rng, bgs, args.empty)
    false, ms, worst = 0, [], {}
    for i, img in enumerate(empty):
        t = time.perf_counter()
        n = len(detector.detect(img, min_score=args.min_score, max_faces=100))
        ms.append((time.perf_counter() - t) * 1000)
        false += n
        if n:
            worst[BACKGROUNDS[i % len(BACKGROUNDS)]] = worst.get(BACKGROUNDS[i % len(BACKGROUNDS)], 0) + n
    print(f"\n**face-free images**: {len(empty)} images, {false} false faces ({false / len(empty):.3f} per image, "
          f"floor <= 0.01 {'ok' if false / len(empty) <= 0.01 else 'ABOVE'}), detection p50 "
          f"{np.percentile(ms, 50):.0f} ms; false faces by background: {worst or 'none'}")
    detector.close()


if __name__ == "__main__":
    main()
