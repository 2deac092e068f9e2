"""Serving latency on this CPU: face detection per photo size, and classification of 1 and 8 faces per model.

Classification goes through `Predictor.probabilities`, so it includes what serving pays: preprocessing (grayscale,
resize to the native then the input size, normalisation), flip averaging and the calibrated softmax. Architectures
come from trainer/configs/*.yaml (their input size and channels) with untrained weights, which cost the same as
trained ones; the exports shipped in models/ are measured too.

    python bench/bench_inference.py [--repeats 50] [--threads 2] [--extra tf_efficientnet_lite0:96:3]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from PIL import Image
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from emotion.faces import FaceDetector, crop_box  # noqa: E402
from emotion.models import ModelInfo, create_model  # noqa: E402
from emotion.predict import Predictor, shipped_models  # noqa: E402
from emotion.bench import cpu_name  # noqa: E402

ASTRONAUT_FACE = (178, 80, 94, 100)  # (x, y, w, h) in skimage's 512x512 astronaut


def photo(width: int, height: int, astronaut: Image.Image) -> Image.Image:
    """The astronaut (scaled to 80% of the photo's height) pasted at the centre of a gray canvas."""
    side = int(height * 0.8)
    canvas = Image.new("RGB", (width, height), (120, 120, 120))
    canvas.paste(astronaut.resize((side, side), Image.BILINEAR), ((width - side) // 2, (height - side) // 2))
    return canvas


def timings(fn, repeats: int, warmup: int = 3) -> tuple[float, float]:
    """p50 and p95 wall milliseconds of `fn()`."""
    for _ in range(warmup):
        fn()
    ms = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        ms.append((time.perf_counter() - t) * 1000)
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 95))


def architectures(extra: list[str]) -> list[tuple[str, int, int, str]]:
    """(architecture, img_size, channels, where from) for each trainer config, plus `--extra arch:size:channels`."""
    rows = []
    for path in sorted((ROOT / "trainer" / "configs").glob("*.yaml")):
        cfg = yaml.safe_load(path.read_text()) or {}
        rows.append((cfg.get("model", "small_cnn"), int(cfg.get("img_size", 48)), int(cfg.get("channels", 1)),
                     f"trainer/configs/{path.name}"))
    for spec in extra:
        arch, size, channels = spec.split(":")
        rows.append((arch, int(size), int(channels), "--extra"))
    return rows


def untrained_export(folder: Path, arch: str, size: int, channels: int) -> str:
    """A randomly initialised export with flip averaging on (as the trainer writes it); returns its source."""
    info = ModelInfo(architecture=arch, input_size=(channels, size, size), mean=(0.5,) * channels,
                     std=(0.5,) * channels, tta_flip=True)
    model = create_model(arch, num_classes=8, in_chans=channels)
    folder.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "model.safetensors"))
    config = info.to_config(pretrained_cfg=dict(model.pretrained_cfg), num_features=model.num_features,
                            model_args={"in_chans": channels})
    (folder / "config.json").write_text(json.dumps(config))
    return f"local-dir:{folder}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    p.add_argument("--repeats", type=int, default=50, help="timed calls per row (after 3 warm-up calls)")
    p.add_argument("--threads", type=int, default=None, help="classifier threads, torch's and ONNX Runtime's "
                   "(default: every core)")
    p.add_argument("--detection-only", action="store_true", help="only the detection and predict rows")
    p.add_argument("--extra", action="append", default=[], metavar="ARCH:SIZE:CHANNELS",
                   help="another architecture to time, e.g. tf_efficientnet_lite0:96:3 (repeatable)")
    args = p.parse_args()
    if args.threads:
        from emotion.threads import set_threads

        set_threads(args.threads)
    from skimage import data

    astronaut = Image.fromarray(data.astronaut())
    face = crop_box(astronaut, ASTRONAUT_FACE)
    print(f"machine: {cpu_name()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}, "
          f"{args.repeats} repeats")
    print()
    print("| step | input | p50 ms | p95 ms |")
    print("|---|---|---|---|")
    detector = FaceDetector()
    for w, h in ((640, 480), (1920, 1080)):
        img = photo(w, h, astronaut)
        found = len(detector.detect(img))
        p50, p95 = timings(lambda: detector.detect(img), args.repeats)
        print(f"| face detection ({found} face) | {w}x{h} photo | {p50:.1f} | {p95:.1f} |")
    found = len(detector.detect(astronaut))
    p50, p95 = timings(lambda: detector.detect(astronaut), args.repeats)
    print(f"| face detection ({found} face) | 512x512 astronaut | {p50:.1f} | {p95:.1f} |")
    if shipped_models():  # what a user waits for: the example photo through the default model
        pred = Predictor.from_pretrained()
        p50, p95 = timings(lambda: pred.predict(astronaut), args.repeats)
        print(f"| predict (detect + classify, default model) | 512x512 astronaut | {p50:.1f} | {p95:.1f} |")

    if args.detection_only:
        return detector.close()
    with tempfile.TemporaryDirectory() as tmp:
        sources = [(f"{arch} (untrained, {origin})", size, ch, untrained_export(Path(tmp) / f"m{i}", arch, size, ch))
                   for i, (arch, size, ch, origin) in enumerate(architectures(args.extra))]
        sources += [(f"models/{name}", None, None, src) for name, src in shipped_models().items()]
        for label, _, _, source in sources:
            pred = Predictor.from_pretrained(source)
            c, hh, ww = pred.info.input_size
            flip = ", flip-averaged" if pred.info.tta_flip else ""
            for n in (1, 8):
                crops = [face] * n
                p50, p95 = timings(lambda: pred.probabilities(crops), args.repeats)
                print(f"| classify {n} face{'s' if n > 1 else ''}: {label} | {c}x{hh}x{ww}{flip} | {p50:.1f} | "
                      f"{p95:.1f} |")
    detector.close()


if __name__ == "__main__":
    main()
