"""Face trackers compared on scenes with known tracks: our FaceTracker (emotion.tracking, what predict_video and
the webcam use), the plain IoU tracker it replaced, and norfair 2.3.

The trackers see the same detections: the true face boxes of a generated scene with detector noise (box jitter,
3% random misses, bursts of misses, a face not seen while more than half of it is behind a nearer face's head), so
the comparison does not depend on a detector. Scenes are 8 s at 25 fps in a 1280x720 frame, each drawn with
several seeds:

- interview: 3 faces sitting side by side, swaying (about 0.4 face widths per second at most);
- group: 6 faces shoulder to shoulder in two rows (1.3-1.7 sides apart), swaying, with bursts of misses;
- walkers: 4 faces walking across at 1-2.5 face widths/s at nearby heights (their paths cross); one walks out and
  comes back 1.5 s later (the same person: a tracker without appearance cannot know, so it costs every tracker);
- crossing: two faces at the same height walk towards each other and pass (the smaller one behind);
- dropout: 3 faces moving at 1-2 widths/s; the detector misses each in bursts of 0.1-0.6 s;
- fast: 2 faces moving back and forth at 3-5 widths/s (a pan, someone running).

Sampling: every frame (25 fps) and every 5th (5 fps, the default of the REST route and the Video tab).
`--detector N` adds N draws of the walkers scene rendered for real (the astronaut's head pasted on scikit-image's
coffee photo, H.264) and run through `predict_video`'s own detection (full search once a second, `follow`
between), so the detections carry the real detector's jitter, misses and occlusions.

Scores (summed over scenes and draws): ID switches (a true face's track id changes from one detection to its
next), tracks per true face (1.0: each person is one "Face N"), mixed tracks (tracks holding detections of two
or more faces: a label that jumps to another person), IDF1 (identity F1 of the best one-to-one match between true
faces and tracks; misses count against it, so 1.0 is out of reach) and ms per update (1 thread). MOTA is left
out: every detection gets a track, so its misses and false positives are the same for every tracker.

norfair 2.3 pins numpy<2 and rich<15 (pip would downgrade this project's numpy 2); to measure it, install it
beside the venv without its dependencies (it runs on numpy 2); without it, its rows are left out:

    pip install --no-deps --target /tmp/norfair norfair==2.3.0 filterpy==1.4.5
    PYTHONPATH=/tmp/norfair python bench/bench_tracker.py [--seeds 5] [--detector 4]
"""
from __future__ import annotations

import argparse
import itertools
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from emotion.boxes import iou  # noqa: E402
from emotion.video import FaceTracker  # noqa: E402

W, H, FPS, SECONDS = 1280, 720, 25, 8.0
N = round(FPS * SECONDS)
T = np.arange(N) / FPS
ASTRONAUT_FACE = (178, 80, 94, 100)  # her face in skimage's 512x512 photo, (x, y, w, h)
HEAD = (0.43, 0.5, 0.43, 0.3)  # the head around a face box, in face sides: left, top, right, bottom (her crop)
JITTER, SIZE_JITTER, MISS = 0.03, 0.04, 0.03  # centre and size noise (fraction of the side), random misses


# ----------------------------------------------------------------------------------------------------- scenes
def _boxes(cx: np.ndarray, cy: np.ndarray, side: float) -> np.ndarray:
    cx, cy = np.broadcast_to(cx, (N,)), np.broadcast_to(cy, (N,))
    return np.stack([cx - side / 2, cy - side / 2, np.full(N, side), np.full(N, side)], 1)


def _bounce(x0: float, v: float, side: float) -> np.ndarray:
    """Back and forth between the frame's edges at `v` px/s (a triangle wave)."""
    lo, hi = side / 2, W - side / 2
    u = np.mod(x0 - lo + v * T, 2 * (hi - lo))
    return lo + np.where(u < hi - lo, u, 2 * (hi - lo) - u)


def interview(rng) -> list[np.ndarray]:
    out = []
    for x in (250, 640, 1030):
        side = rng.uniform(110, 160)
        sway = 0.3 * side * np.sin(2 * np.pi * rng.uniform(0.1, 0.25) * T + rng.uniform(0, 6.3))
        nod = 0.1 * side * np.sin(2 * np.pi * rng.uniform(0.2, 0.5) * T + rng.uniform(0, 6.3))
        out.append(_boxes(x + rng.uniform(-40, 40) + sway, rng.uniform(250, 400) + nod, side))
    return out


def group(rng) -> list[np.ndarray]:
    side = rng.uniform(70, 110)
    gap = rng.uniform(1.3, 1.7) * side  # centre to centre: shoulder to shoulder
    out = []
    for row, y in enumerate((260.0, 260.0 + 1.4 * side)):
        for k in range(3):
            x = 640 + (k - 1) * gap + (gap / 2 if row else 0)
            sway = 0.25 * side * np.sin(2 * np.pi * rng.uniform(0.1, 0.3) * T + rng.uniform(0, 6.3))
            out.append(_boxes(x + sway, y + 0.1 * side * np.sin(2 * np.pi * rng.uniform(0.2, 0.5) * T), side))
    return out


def walkers(rng) -> list[np.ndarray]:
    out = []
    for k in range(4):
        side = rng.uniform(80, 140)
        v = rng.uniform(1, 2.5) * side * (1 if k % 2 == 0 else -1)
        t0 = rng.uniform(0, 3) if k else 0.0
        x = (-side / 2 if v > 0 else W + side / 2) + v * (T - t0)
        if k == 0:  # walks out on the right, turns 0.75 s later and comes back in
            turn = (W + side / 2 - x[0]) / v + 0.75
            x = np.where(T < turn, x, x[0] + v * turn - v * (T - turn))
        y = rng.uniform(250, 420) + 0.05 * side * np.sin(2 * np.pi * 2 * T)  # a step's bob
        out.append(_boxes(x, y, side))
    return out


def crossing(rng) -> list[np.ndarray]:
    meet, y = rng.uniform(3, 5), rng.uniform(250, 450)
    out = []
    for side, x0 in ((130.0, 200.0), (105.0, 1080.0)):
        out.append(_boxes(x0 + (640 - x0) / meet * T, y + rng.uniform(-15, 15), side))
    return out


def dropout(rng) -> list[np.ndarray]:
    sides = [(rng.uniform(90, 140), y) for y in (180.0, 360.0, 540.0)]
    return [_boxes(_bounce(rng.uniform(100, 1100), rng.uniform(1, 2) * side * rng.choice([-1, 1]), side), y, side)
            for side, y in sides]


def fast(rng) -> list[np.ndarray]:
    return [_boxes(_bounce(rng.uniform(100, 1100), rng.uniform(3, 5) * side, side), np.full(N, y), side)
            for side, y in ((rng.uniform(100, 150), 220.0), (rng.uniform(100, 150), 480.0))]


SCENES: dict[str, Callable] = {"interview": interview, "group": group, "walkers": walkers, "crossing": crossing,
                               "dropout": dropout, "fast": fast}
# Bursts of detector misses, per face: the chance one starts in a frame, and its length in seconds (min, max).
BURSTS = {"dropout": (1 / 50, 0.1, 0.6), "group": (1 / 100, 0.1, 0.6)}


def visible(paths: list[np.ndarray]) -> np.ndarray:
    """(faces, frames) bool: at least half the box inside the frame."""
    out = []
    for p in paths:
        x, y, w, h = p.T
        inside = (np.clip(x + w, 0, W) - np.clip(x, 0, W)) * (np.clip(y + h, 0, H) - np.clip(y, 0, H))
        out.append(inside >= 0.5 * w * h)
    return np.array(out)


def detections(scene: str, paths: list[np.ndarray], rng) -> list[list[tuple[tuple[int, ...], int]]]:
    """Per frame: (jittered box, true face) for the faces the simulated detector sees."""
    seen = visible(paths)
    missed = rng.random(seen.shape) < MISS
    rate, lo, hi = BURSTS.get(scene, (0.0, 0, 0))
    for f in range(len(paths)):
        for start in np.flatnonzero(rng.random(N) < rate):
            missed[f, start:start + round(rng.uniform(lo, hi) * FPS)] = True
    frames = []
    for i in range(N):
        boxes = []
        for f, p in enumerate(paths):
            if not seen[f, i] or missed[f, i] or _covered(f, i, paths, seen):
                continue
            x, y, w, h = p[i]
            s = w * (1 + rng.normal(0, SIZE_JITTER))
            cx, cy = x + w / 2 + rng.normal(0, JITTER * w), y + h / 2 + rng.normal(0, JITTER * w)
            boxes.append(((round(cx - s / 2), round(cy - s / 2), round(s), round(s)), f))
        frames.append(boxes)
    return frames


def _covered(f: int, i: int, paths: list[np.ndarray], seen: np.ndarray) -> bool:
    """More than half of face f is behind the head (hair, ears, chin: HEAD around the face box) of a bigger,
    nearer face."""
    x, y, w, h = paths[f][i]
    left, top, right, bottom = HEAD
    for g, q in enumerate(paths):
        if g == f or not seen[g, i] or q[i][2] <= w:
            continue
        a, b, c, d = q[i]
        ix = max(0.0, min(x + w, a + c * (1 + right)) - max(x, a - c * left))
        iy = max(0.0, min(y + h, b + d * (1 + bottom)) - max(y, b - d * top))
        if ix * iy > 0.5 * w * h:
            return True
    return False


# --------------------------------------------------------------------------------------------------- trackers
class Ours:
    """emotion.video.FaceTracker as predict_video and the webcam use it (ids only; probabilities are not scored)."""

    def __init__(self, **options):
        self.tracker = FaceTracker(**options)

    def update(self, time_s: float, boxes: list) -> list[int]:
        return [t.id for t in self.tracker.update(time_s, boxes, np.zeros((len(boxes), 1)))]


class PlainIou:
    """The tracker predict_video shipped first: greedy IoU matching (> 0.3) with the track's last box, a track
    ending after 5 sampled frames without a match."""

    def __init__(self, threshold: float = 0.3, max_missed: int = 5):
        self.threshold, self.max_missed, self.open, self.next = threshold, max_missed, [], 1

    def update(self, time_s: float, boxes: list) -> list[int]:
        pairs = sorted(((iou(b, t["box"]), i, j) for i, b in enumerate(boxes) for j, t in enumerate(self.open)),
                       reverse=True)
        assigned, used = {}, set()
        for overlap, i, j in pairs:
            if overlap > self.threshold and i not in assigned and j not in used:
                assigned[i], _ = self.open[j], used.add(j)
        for i, box in enumerate(boxes):
            if i not in assigned:
                assigned[i] = {"id": self.next}
                self.next += 1
                self.open.append(assigned[i])
            assigned[i].update(box=box, missed=-1)
        for t in self.open:
            t["missed"] += 1
        self.open = [t for t in self.open if t["missed"] <= self.max_missed]
        return [assigned[i]["id"] for i in range(len(boxes))]


def centre_distance(detection, tracked) -> float:
    """Distance between the detection's centre and the track's predicted centre, in face sides (scale-free)."""
    est = tracked.estimate
    side = float(np.sqrt(max(1.0, (est[1, 0] - est[0, 0]) * (est[1, 1] - est[0, 1]))))
    return float(np.linalg.norm(detection.points.mean(0) - est.mean(0)) / side)


class Norfair:
    """norfair.Tracker with a box as its two corners (Kalman filter on each), every detection kept at once
    (initialization_delay=0: predict_video gives every face a row, from its first frame)."""

    def __init__(self, distance, threshold: float, hit_counter_max: int):
        from norfair import Tracker

        self.tracker = Tracker(distance_function=distance, distance_threshold=threshold,
                               hit_counter_max=hit_counter_max, initialization_delay=0)

    def update(self, time_s: float, boxes: list) -> list[int]:
        from norfair import Detection

        dets = [Detection(np.array([[x, y], [x + w, y + h]], float), data=i) for i, (x, y, w, h) in enumerate(boxes)]
        self.tracker.update(dets)
        ids = [-1] * len(boxes)
        for obj in self.tracker.tracked_objects:
            if any(obj.last_detection is d for d in dets):
                ids[obj.last_detection.data] = obj.id
        return ids


def trackers(every: int) -> dict[str, Callable[[], object]]:
    """The contenders; `every` is the sampling step (frames): norfair's hit_counter_max counts updates, so "1 s"
    is FPS / every of them, like FaceTracker's max_unseen_s."""
    second = round(FPS / every)
    out: dict[str, Callable[[], object]] = {
        "plain IoU > 0.3, 5 missed samples (shipped before)": PlainIou,
        "FaceTracker (shipped)": Ours,
        "FaceTracker, no motion prediction (velocity_gain 0)": lambda: Ours(velocity_gain=0.0),
        "FaceTracker, no tighter re-acquire gate (reacquire_shift 1.5)": lambda: Ours(reacquire_shift=1.5),
        "FaceTracker, max_shift 1.0": lambda: Ours(max_shift=1.0),
        "FaceTracker, max_unseen_s 0.2 (5 frames at 25 fps)": lambda: Ours(max_unseen_s=0.2),
    }
    try:
        import norfair  # noqa: F401
    except ImportError:
        print("norfair is not importable: its rows are left out (see the docstring for how to install it)\n")
        return out
    logging.getLogger().setLevel(logging.ERROR)  # norfair warns on every Tracker with a Python distance
    out.update({
        "norfair IoU > 0.3, hit_counter_max 15 (its defaults)": lambda: Norfair("iou", 0.7, 15),
        "norfair IoU > 0.1, 1 s": lambda: Norfair("iou", 0.9, second),
        "norfair centre < 1 side, 1 s": lambda: Norfair(centre_distance, 1.0, second),
        "norfair centre < 1.5 sides, 1 s": lambda: Norfair(centre_distance, 1.5, second),
    })
    return out


# ---------------------------------------------------------------------------------------------------- scoring
def run(tracker, frames, every: int) -> tuple[list[tuple[int, int]], list[float]]:
    """(true face, track id) per detection of the sampled frames (face -1: a false detection), and ms per update."""
    pairs, ms = [], []
    for i in range(0, len(frames), every):
        boxes = [b for b, _ in frames[i]]
        t = time.perf_counter()
        ids = tracker.update(i / FPS, boxes)
        ms.append((time.perf_counter() - t) * 1000)
        pairs += [(f, tid) for (_, f), tid in zip(frames[i], ids)]
    return pairs, ms


def score(pairs: list[tuple[int, int]], truth_count: int) -> dict[str, float]:
    """ID switches, tracks per true face, mixed tracks, and the counts IDF1 needs, for one run."""
    from scipy.optimize import linear_sum_assignment

    true = [(f, t) for f, t in pairs if f >= 0]
    faces, tracks = sorted({f for f, _ in true}), sorted({t for _, t in pairs})
    switches = sum(sum(a != b for a, b in itertools.pairwise(ids))
                   for ids in ([t for g, t in true if g == f] for f in faces))
    counts = np.zeros((len(faces), len(tracks)))
    for f, t in true:
        counts[faces.index(f), tracks.index(t)] += 1
    rows, cols = linear_sum_assignment(-counts)
    return {"switches": switches, "faces": len(faces), "tracks_of_faces": float((counts > 0).sum()),
            "mixed": int(((counts > 0).sum(0) > 1).sum()), "idtp": counts[rows, cols].sum(),
            "truth": truth_count, "predicted": len(pairs)}


def evaluate(scenes: dict[str, list], every: int) -> dict[str, dict[str, dict]]:
    """{tracker: {scene: summed scores}} for one sampling step; a scene is a list of (detections, visible)."""
    out: dict[str, dict[str, dict]] = {}
    for name, make in trackers(every).items():
        for scene, runs in scenes.items():
            total: dict[str, float] = {}
            ms: list[float] = []
            for frames, seen in runs:
                pairs, t = run(make(), frames, every)
                ms += t
                for k, v in score(pairs, int(seen[:, ::every].sum())).items():
                    total[k] = total.get(k, 0) + v
            total["ms"] = ms
            out.setdefault(name, {})[scene] = total
    return out


def report(results: dict[str, dict[str, dict]], label: str) -> None:
    print(f"\n**{label}**\n")
    scenes = list(next(iter(results.values())))
    scenes = scenes if len(scenes) > 1 else []  # one scene: its column would repeat the total
    print("| tracker | ID switches | tracks per face | mixed tracks | IDF1 | " +
          " | ".join(f"IDF1 {s}" for s in scenes) + " | ms/update p50 |")
    print("|---|" + "---|" * (5 + len(scenes)))
    for name, per_scene in results.items():
        s = {k: sum(v[k] for v in per_scene.values()) for k in ("switches", "faces", "tracks_of_faces", "mixed",
                                                                  "idtp", "truth", "predicted")}
        ms = np.concatenate([v["ms"] for v in per_scene.values()])
        cells = [f"{2 * v['idtp'] / (v['truth'] + v['predicted']):.3f}" for k, v in per_scene.items() if k in scenes]
        print(f"| {name} | {s['switches']:.0f} | {s['tracks_of_faces'] / s['faces']:.2f} | {s['mixed']} | "
              f"{2 * s['idtp'] / (s['truth'] + s['predicted']):.3f} | " + "".join(f"{c} | " for c in cells) +
              f"{np.median(ms):.3f} |")


# ------------------------------------------------------------------------------------------ the real detector
def head_and_face() -> tuple[Image.Image, tuple[float, float, float, float]]:
    """The astronaut's head (hair, chin, some suit) and her face box as fractions of it."""
    from skimage import data

    x, y, w, h = ASTRONAUT_FACE
    left, top, right, bottom = HEAD
    head = Image.fromarray(data.astronaut()).crop((round(x - left * w), round(y - top * h), round(x + w + right * w),
                                                   round(y + h + bottom * h)))
    return head, (round(left * w) / head.width, round(top * h) / head.height, w / head.width, h / head.height)


def render(paths: list[np.ndarray], path: Path) -> list[list[tuple[float, ...]]]:
    """The scene as an H.264 clip on scikit-image's coffee photo (the bigger face in front, every second head
    mirrored); returns the pasted face boxes per frame (None where the face is out of the frame)."""
    import av
    from skimage import data

    head, (fx, fy, fw, fh) = head_and_face()
    heads = [head, head.transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
    background = Image.fromarray(data.coffee()).resize((W, H))
    seen, order = visible(paths), np.argsort([p[0, 2] for p in paths])  # small (far) first
    truth = []
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        for i in range(N):
            frame, boxes = background.copy(), [None] * len(paths)
            for f in order:
                if not seen[f, i]:
                    continue
                x, y, side, _ = paths[f][i]
                hw, hh = round(side / fw), round(side / fw * head.height / head.width)
                frame.paste(heads[f % 2].resize((hw, hh)), (round(x - fx * hw), round(y - fy * hh)))
                boxes[f] = (x, y, side, fh * hh)
            truth.append(boxes)
            container.mux(stream.encode(av.VideoFrame.from_image(frame)))
        container.mux(stream.encode(None))
    return truth


class Recorder(FaceTracker):
    """predict_video's tracker, also keeping the boxes it is given (what the detector found) per time."""

    def __init__(self):
        super().__init__()
        self.seen: dict[float, list] = {}

    def update(self, time_s, boxes, probs):
        self.seen[round(time_s, 3)] = list(boxes)
        return super().update(time_s, boxes, probs)


def detected(predictor, clip: Path, truth: list, every: int) -> list[list[tuple[tuple[int, ...], int]]]:
    """Per frame: (box, true face or -1) for what predict_video's detection found in the clip's sampled frames
    (a box is a face's when it overlaps the pasted face box by IoU >= 0.3, best first)."""
    from emotion.video import iter_video

    recorder = Recorder()
    for _ in iter_video(predictor, clip, every=every, tracker=recorder):
        pass
    frames: list[list] = [[] for _ in range(N)]
    for i in range(0, N, every):
        boxes = recorder.seen.get(round(i / FPS, 3), [])
        pairs = sorted(((iou(b, t), k, f) for k, b in enumerate(boxes) for f, t in enumerate(truth[i]) if t),
                       reverse=True)
        owner, taken = {}, set()
        for overlap, k, f in pairs:
            if overlap >= 0.3 and k not in owner and f not in taken:
                owner[k] = f
                taken.add(f)
        frames[i] = [(b, owner.get(k, -1)) for k, b in enumerate(boxes)]
    return frames


def real_scene(model: str | None, seeds: int) -> dict[int, list]:
    """{every: [(detections, visible)]} for the walkers scene drawn and run through the real detector."""
    import tempfile

    from emotion.predict import Predictor

    predictor, out = Predictor.from_pretrained(model), {1: [], 5: []}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(seeds):
            paths = walkers(np.random.default_rng(9000 + seed))
            truth = render(paths, Path(tmp) / "walkers.mp4")
            for every in out:
                out[every].append((detected(predictor, Path(tmp) / "walkers.mp4", truth, every), visible(paths)))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, default=5, help="draws of each scene")
    p.add_argument("--detector", type=int, default=0, metavar="N",
                   help="also N draws of the walkers scene through the real detector (~2.5 min each here)")
    p.add_argument("--model", default=None, help="model for --detector (classification is not scored)")
    args = p.parse_args()
    from emotion.bench import cpu_name
    from emotion.threads import set_threads

    set_threads(1)
    print(f"machine: {cpu_name()}; scenes {SECONDS:g} s at {FPS} fps, {args.seeds} draws each, 1 thread")
    scenes = {}
    for k, (name, make) in enumerate(SCENES.items()):
        scenes[name] = []
        for seed in range(args.seeds):
            rng = np.random.default_rng(1000 * k + seed)
            paths = make(rng)
            scenes[name].append((detections(name, paths, rng), visible(paths)))
    real = real_scene(args.model, args.detector) if args.detector else {}
    for every, label in ((1, "every frame (25 fps)"), (5, "every 5th frame (5 fps)")):
        report(evaluate(scenes, every), f"{label}, simulated detections")
        if real:
            report(evaluate({"walkers, real detector": real[every]}, every), f"{label}, real detector")


if __name__ == "__main__":
    main()
