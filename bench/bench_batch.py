"""Batch prediction throughput (images/s): 1 process, N processes and a local Ray, on two data sets.

    python bench/bench_batch.py [--fer-images 2000] [--photos 200] [--workers 2] [--model SOURCE] [--skip-ray]

- FER+: the first `--fer-images` validation rows (48x48 faces), as one parquet file, as `predict-dataset` reads it.
- Photos: `--photos` 1600x1067 JPEGs, each a skimage background (no faces of its own) with 3-5 real faces pasted on
  it (FER+ train faces, 48 px grayscale, scaled to 150-260 px), as an image folder.
Each configuration runs `emotion.batch.run` (or `run_ray`) into a fresh folder, end to end: process or actor start,
model load, reading, detection, classification and writing are all in the time, as a user would see them.
Needs ../shared/data/ferplus (or EMOTION_TEST_DATA) and, for the Ray rows, `pip install -r requirements-ray.txt`.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DATA = Path(os.environ.get("EMOTION_TEST_DATA", ROOT.parent / "shared" / "data")) / "ferplus"
BACKGROUNDS = ("brick", "grass", "gravel", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry", "moon",
               "coins", "retina")


def fer_parquet(n: int, folder: Path) -> Path:
    import pyarrow.parquet as pq

    table = pq.read_table(DATA / "validation-0000-of-0001.parquet").slice(0, n)
    folder.mkdir(parents=True)
    pq.write_table(table, folder / "validation.parquet")
    return folder


def photos(n: int, folder: Path, seed: int = 0) -> Path:
    """n photos with several real faces each, pasted at random non-overlapping places on real backgrounds."""
    import io

    import pyarrow.parquet as pq
    from PIL import Image
    from skimage import data

    rng = np.random.default_rng(seed)
    faces = pq.read_table(DATA / "train-0000-of-0003.parquet", columns=["image"]).slice(0, 2000).column("image")
    backgrounds = [Image.fromarray(getattr(data, name)()).convert("RGB").resize((1600, 1067)) for name in BACKGROUNDS]
    folder.mkdir(parents=True)
    for i in range(n):
        img = backgrounds[i % len(backgrounds)].copy()
        for j in range(int(rng.integers(3, 5))):  # 3-4 faces along a row, each in its own 400 px column
            face = Image.open(io.BytesIO(faces[int(rng.integers(len(faces)))].as_py()["bytes"])).convert("RGB")
            side = int(rng.integers(250, 400))
            img.paste(face.resize((side, side), Image.BICUBIC),
                      (j * 400 + int(rng.integers(0, 400 - side + 1)), int(rng.integers(0, 1067 - side))))
        img.save(folder / f"photo_{i:04d}.jpg", quality=90)
    return folder


def time_run(name: str, fn) -> tuple[str, float, object]:
    t0 = time.perf_counter()
    summary = fn()
    return name, time.perf_counter() - t0, summary


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                allow_abbrev=False)
    p.add_argument("--fer-images", type=int, default=2000)
    p.add_argument("--photos", type=int, default=200)
    p.add_argument("--workers", type=int, default=2, help="N for the N-process and Ray rows")
    p.add_argument("--model", help="model source (default: the shipped default)")
    p.add_argument("--skip-ray", action="store_true")
    args = p.parse_args()

    from emotion.batch import Options, run
    from emotion.batch_sources import open_source
    from emotion.bench import machine

    print(f"# {machine()}, python {platform.python_version()}, load average {os.getloadavg()[0]:.1f} at start")
    options = Options(args.model, threads=1)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        sets = {f"FER+ val ({args.fer_images} x 48 px)": fer_parquet(args.fer_images, tmp / "fer"),
                f"photos ({args.photos} x 1600x1067, 3-5 faces)": photos(args.photos, tmp / "photos")}
        print("| data | runner | images | faces | errors | wall s | images/s |\n|---|---|---|---|---|---|---|")
        for k, (label, src) in enumerate(sets.items()):
            runs = [("1 process", lambda o: run(open_source(str(src)), o, options, progress=False)),
                    (f"{args.workers} processes",
                     lambda o: run(open_source(str(src)), o, options, workers=args.workers, progress=False))]
            if not args.skip_ray:
                runs.append((f"local Ray, {args.workers} actors", lambda o: ray_run(src, o, options, args.workers)))
            for j, (runner, fn) in enumerate(runs):
                try:
                    name, wall, s = time_run(runner, lambda: fn(tmp / f"out-{k}-{j}"))
                except Exception as e:  # noqa: BLE001 - e.g. Ray's start-up timeout on a loaded machine
                    print(f"| {label} | {runner} | failed: {type(e).__name__}: {str(e)[:150]} | | | | |", flush=True)
                    continue
                print(f"| {label} | {name} | {s.images} | {s.faces} | {s.errors} | {wall:.1f} | "
                      f"{s.images / wall:.1f} |", flush=True)


def ray_run(src: Path, output: Path, options, workers: int):
    """Starting Ray is part of the cost on one machine, so it is in the time (ray.init inside run_ray)."""
    from emotion.batch_ray import run_ray
    from emotion.batch_sources import open_source

    return run_ray(open_source(str(src)), output, options, workers=workers)


if __name__ == "__main__":
    main()
