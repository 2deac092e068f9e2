"""Serving speed on the photos people take, in one run: the face search before YuNet (a git ref), today's, and the
peer fer-tflite; medians of rounds that alternate between the three so that load hits them alike. Today's runs in
this process, the other two each in a process of its own (bench/fer_worker.py; `--before-worker`): in a process that
had also run the search before YuNet, today's portrait read ~10% slower (5.8 against 5.2-5.3 ms, two runs each,
2-core AMD EPYC, 2026-12-07), a cost no user of either pays.

Photos (generated from scikit-image's astronaut, NASA, public domain):
- the astronaut, 512x512, one face (a PIL image in memory; for fer a BGR array);
- a group photo, 1200x800, six ~190 px faces in two rows of three, one with dark glasses (in memory);
- a 1920x1080 JPEG (quality 90) with one ~55 px face: the astronaut at 300 px pasted at (1300, 500) on a flat
  background, from its file bytes (decoding in the time, on both sides);
- a 4032x3024 phone JPEG with one ~260 px face: the astronaut at 1400 px at (1500, 900), from its file bytes;
and a 720p clip with two faces (bench_video.make_clip) through `predict_video`, at 5 fps sampling and every frame.

"before" is emotion/faces.py and emotion/boxes.py at --base (git show), with the whole-image decode it had:
BlazeFace short and full range, tiles, two views a face. "now" is `Predictor.predict` with the shipped default
model (ONNX Runtime, 1 thread a worker; a request alone on every core, as the server runs it). The
peer is fer 25.10.3 with its defaults (Haar cascade, the quantized TFLite classifier, TensorFlow's own threads) in
a venv of its own, run by bench/fer_worker.py:

    python -m venv /tmp/ferenv && /tmp/ferenv/bin/pip install fer==25.10.3 tensorflow-cpu==2.21.0 "setuptools<80"
    python bench/bench_speed.py --fer-python /tmp/ferenv/bin/python [--repeats 20] [--rounds 3] [--base 187ae83]
                                [--skip-video] [--seconds 6] [--model SOURCE]
"""
from __future__ import annotations

import argparse
import importlib.util
import io
import json
import statistics
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from emotion.images import load_image  # noqa: E402
from emotion.predict import Predictor  # noqa: E402

BASE = "187ae83"  # the last commit before YuNet
ASTRONAUT_FACE = (178, 80, 94, 100)


def legacy_faces(commit: str):
    """emotion/faces.py and emotion/boxes.py as they were at `commit`, as the package `emotion_before` (its other
    imports are today's modules)."""
    import emotion

    package = types.ModuleType("emotion_before")
    package.__path__ = []
    sys.modules["emotion_before"] = package
    for name in ("crops", "errors", "info"):
        sys.modules[f"emotion_before.{name}"] = importlib.import_module(f"emotion.{name}")
    for name in ("boxes", "faces"):
        try:
            src = subprocess.run(["git", "-C", str(ROOT), "show", f"{commit}:emotion/{name}.py"],
                                 capture_output=True, text=True, check=True).stdout
        except (OSError, subprocess.CalledProcessError) as e:
            sys.exit(f"cannot read emotion/{name}.py at {commit} ({e}): run from a git checkout, or pass --base")
        spec = importlib.util.spec_from_loader(f"emotion_before.{name}", loader=None)
        module = importlib.util.module_from_spec(spec)
        module.__package__, module.__file__ = "emotion_before", str(Path(emotion.__file__).parent / f"{name}.py")
        sys.modules[spec.name] = module
        exec(compile(src, f"{commit}:emotion/{name}.py", "exec"), module.__dict__)  # noqa: S102 - our own history
    from emotion import faces

    module.Face = faces.Face  # its faces are today's class (the same fields), so Predictor.crops takes them
    module.ASSETS = _assets_at(commit, module.MODEL_FILES.values())  # its BlazeFace files (full range: gone since)
    return module


def _assets_at(commit: str, names) -> Path:
    """A temporary folder holding emotion/assets/<name> as it was at `commit`, for each of `names`."""
    folder = Path(tempfile.mkdtemp(prefix="assets_before_"))
    for name in names:
        try:
            data = subprocess.run(["git", "-C", str(ROOT), "show", f"{commit}:emotion/assets/{name}"],
                                  capture_output=True, check=True).stdout
        except (OSError, subprocess.CalledProcessError) as e:
            sys.exit(f"cannot read emotion/assets/{name} at {commit} ({e}): run from a git checkout, or pass --base")
        (folder / name).write_bytes(data)
    return folder


def before_predictor(source: str | None, legacy) -> Predictor:
    """Today's Predictor with the search before YuNet, and the whole-image decode it had."""
    predictor = Predictor.from_pretrained(source)
    predictor.detector = legacy.FaceDetector()

    def detect(self, image, **options):
        img = load_image(image)
        return img, self.detector.find(img, **{k: v for k, v in options.items() if v is not None})

    predictor.detect = types.MethodType(detect, predictor)
    return predictor


def photos(folder: Path) -> dict[str, tuple[object, Path, bool]]:
    """name -> (what our Predictor is given, the file fer's worker reads, whether fer decodes it in the time)."""
    from skimage import data

    astronaut = Image.fromarray(data.astronaut())
    x, y, w, h = ASTRONAUT_FACE
    head = astronaut.crop((x - 38, y - 50, x + w + 38, y + h + 26)).resize((344, 356))  # her face ~190 px
    glasses = head.copy()
    draw = ImageDraw.Draw(glasses)
    for cx in (127, 212):  # over her eyes
        draw.ellipse((cx - 34, 122, cx + 34, 166), fill=(12, 12, 12))
    group = Image.new("RGB", (1200, 800), (128, 128, 128))
    for i in range(3):
        for j in range(2):
            group.paste(glasses if (i, j) == (2, 1) else head, (i * 400 + 28, j * 400 + 22))
    out = {}
    for name, image in (("astronaut 512x512, 1 face", astronaut), ("group 1200x800, 6 faces (1 dark glasses)", group)):
        path = folder / f"{len(out)}.png"
        image.save(path)
        out[name] = (image, path, False)
    for name, size, side, at in (("1920x1080 JPEG, 1 face ~55 px, from bytes", (1920, 1080), 300, (1300, 500)),
                                 ("4032x3024 JPEG, 1 face ~260 px, from bytes", (4032, 3024), 1400, (1500, 900))):
        canvas = Image.new("RGB", size, (128, 128, 128))
        canvas.paste(astronaut.resize((side, side)), at)
        buf = io.BytesIO()
        canvas.save(buf, "JPEG", quality=90)
        path = folder / f"{len(out)}.jpg"
        path.write_bytes(buf.getvalue())
        out[name] = (buf.getvalue(), path, True)
    return out


class Worker:
    """A contender in a process of its own (`argv`: fer-tflite in its venv, bench/fer_worker.py, or the search before
    YuNet, `--before-worker`), timed on request: one JSON line in, one out (fer_worker.py's docstring)."""

    def __init__(self, argv: list[str], shots: dict):
        self.argv = argv
        self.process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=subprocess.DEVNULL, text=True)
        self.version = self._ask({"photos": {name: {"path": str(path), "from_bytes": from_bytes}
                                             for name, (_, path, from_bytes) in shots.items()}})["ready"]

    def time(self, name: str, n: int) -> tuple[list[float], int]:
        reply = self._ask({"time": name, "n": n})
        return reply["ms"], reply["faces"]

    def _ask(self, request: dict) -> dict:
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            sys.exit(f"a worker stopped: run {' '.join(self.argv)} by hand to see why")
        return json.loads(line)

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=30)


def timed(fn, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1000)
    return out


def timed_predictions(predictor: Predictor, source, n: int) -> tuple[list[float], int]:
    """`n` timed `predict` calls on `source`, and the faces it finds (counted in an untimed call first)."""
    faces = len(predictor.predict(source).faces)
    return timed(lambda: predictor.predict(source), n), faces


def photo_rows(args, shots: dict, before: Worker | None, now: Predictor, fer: Worker | None) -> None:
    """One table row per photo: medians over `args.rounds` rounds of before, now and fer, `args.repeats` calls
    each per round, after 2 warm-up calls of each."""
    ms: dict[tuple[str, str], list[float]] = {}
    faces: dict[tuple[str, str], int] = {}
    contenders = {"before": before and before.time, "now": lambda name, n: timed_predictions(now, shots[name][0], n),
                  "fer": fer and fer.time}
    for r in range(args.rounds + 1):  # round 0 warms up
        n = 2 if r == 0 else args.repeats
        for name in shots:
            for who, time_them in contenders.items():
                if time_them is not None:
                    times, faces[who, name] = time_them(name, n)
                    ms.setdefault((who, name), []).extend(times if r else [])
    print("| photo | before ms | now ms | fer-tflite ms | now vs fer | now vs before | faces before / now / fer |")
    print("|---|---|---|---|---|---|---|")
    for name in shots:
        med = {who: statistics.median(ms[who, name]) if ms.get((who, name)) else float("nan")
               for who in ("before", "now", "fer")}
        count = " / ".join(str(faces.get((who, name), "-")) for who in ("before", "now", "fer"))
        ratio = med["fer"] / med["now"]
        print(f"| {name} | {med['before']:.1f} | {med['now']:.1f} | {med['fer']:.1f} | "
              f"{ratio:.1f}x {'faster' if ratio >= 1 else 'slower'} | {med['before'] / med['now']:.1f}x | {count} |")


def split_rows(now: Predictor, shots: dict, repeats: int) -> None:
    """Where today's time goes: decode + detection and classification, from the prediction's own timings."""
    print("\n| photo | detect (with decoding) ms | classify ms | views |")
    print("|---|---|---|---|")
    for name, (source, _, _) in shots.items():
        detect, classify, views = [], [], []
        for _ in range(repeats):
            now.detector.passes.clear()
            timings = now.predict(source).timings_ms
            detect.append(timings["detect"])
            classify.append(timings["classify"])
            views.append(now.detector.passes["views"])
        print(f"| {name} | {statistics.median(detect):.1f} | {statistics.median(classify):.1f} | {max(views)} |")


def serve_before(base: str, model: str | None) -> None:
    """`--before-worker`: the search at `base` (`before_predictor`) answering Worker's requests on stdin/stdout, with
    the threads today's runs with. Photos timed from their bytes are decoded in every call; the others once."""
    _one_thread()
    predictor = before_predictor(model, legacy_faces(base))
    photos: dict[str, object] = {}
    for line in sys.stdin:
        request = json.loads(line)
        if "photos" in request:
            for name, spec in request["photos"].items():
                data = Path(spec["path"]).read_bytes()
                photos[name] = data if spec["from_bytes"] else load_image(data)
            reply = {"ready": f"emotion/faces.py at {base}"}
        else:
            times, faces = timed_predictions(predictor, photos[request["time"]], request["n"])
            reply = {"ms": times, "faces": faces}
        print(json.dumps(reply), flush=True)


def video_rows(args, now: Predictor, folder: Path) -> None:
    from bench_video import make_clip

    clip = make_clip(folder / "clip.mp4", args.seconds)
    print("\n| clip 1280x720, 25 fps, 2 faces | frames | wall s | x real time |")
    print("|---|---|---|---|")
    for label, options in (("5 fps sampling", {"fps": 5}), ("every frame", {})):
        walls = []
        for _ in range(args.video_rounds):
            t = time.perf_counter()
            result = now.predict_video(clip, progress=False, **options)
            walls.append(time.perf_counter() - t)
        wall = statistics.median(walls)
        print(f"| {label} ({len(result.tracks)} tracks) | {result.frames} | {wall:.2f} | {args.seconds / wall:.2f} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=20, help="timed calls per photo, per side, per round")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds (median over all of them)")
    p.add_argument("--base", default=BASE, help="the commit whose face search is 'before' ('' to skip it)")
    p.add_argument("--fer-python", default=None, help="the python of a venv with fer 25.10.3 (see above)")
    p.add_argument("--model", default=None, help="model source (default: the shipped default)")
    p.add_argument("--skip-video", action="store_true")
    p.add_argument("--seconds", type=float, default=6.0, help="length of the generated 720p clip")
    p.add_argument("--video-rounds", type=int, default=3)
    p.add_argument("--before-worker", metavar="BASE", help=argparse.SUPPRESS)  # run by Worker: see serve_before
    args = p.parse_args()
    if args.before_worker:
        return serve_before(args.before_worker, args.model)
    if min(args.repeats, args.rounds, args.video_rounds) < 1 or args.seconds <= 0:
        p.error("--repeats, --rounds and --video-rounds must be >= 1 and --seconds > 0")
    from emotion.bench import cpu_name
    from emotion.threads import wide_threads

    _one_thread()
    now = Predictor.from_pretrained(args.model)
    with tempfile.TemporaryDirectory() as tmp:
        shots = photos(Path(tmp))
        model = ["--model", args.model] if args.model else []
        before = (Worker([sys.executable, str(Path(__file__).resolve()), "--before-worker", args.base, *model], shots)
                  if args.base else None)
        fer = Worker([args.fer_python, str(ROOT / "bench" / "fer_worker.py")], shots) if args.fer_python else None
        print(f"machine: {cpu_name()}; ours: 1 thread a worker ({wide_threads()} alone), backend {now.backend}, "
              f"model {now.source}; before = emotion/faces.py at {args.base or '-'}; "
              f"peer: {fer.version if fer else 'not run (--fer-python)'}; "
              f"median of {args.rounds} x {args.repeats} calls\n")
        photo_rows(args, shots, before, now, fer)
        split_rows(now, shots, args.repeats)
        for worker in (before, fer):
            if worker is not None:
                worker.close()
        if not args.skip_video:
            video_rows(args, now, Path(tmp))


def _one_thread() -> None:
    """Serving's setting (webapp.pool.configure_threads, 2 workers): one thread per worker (ONNX Runtime's sessions,
    and torch's); a lone request's steps on every core."""
    from emotion.threads import CORES, set_threads

    set_threads(1, budget=CORES)


if __name__ == "__main__":
    main()
