"""Video throughput on this CPU: decoding alone (PyAV vs OpenCV) and `Predictor.predict_video` on a 720p clip, at
every frame and at 5 frames per second.

The clip is generated: 1280x720 at 25 fps, two heads from scikit-image's astronaut (faces ~140 px) moving across
a gray background, H.264. "fps" is sampled frames analysed per wall-clock second; "x real time" is video seconds
per wall-clock second.

    python bench/bench_video.py [--seconds 4] [--model local-dir:...] [--threads 1]

Every sampled frame gets the photo's face search (YuNet's passes and a BlazeFace view per face: emotion/faces.py).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from emotion.predict import Predictor  # noqa: E402

ASTRONAUT_FACE = (178, 80, 94, 100)


def make_clip(path: Path, seconds: float, fps: int = 25) -> Path:
    import av
    from skimage import data

    x, y, w, h = ASTRONAUT_FACE
    head = Image.fromarray(data.astronaut()).crop((x - 40, y - 50, x + w + 40, y + h + 30)).resize((260, 260))
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 1280, 720, "yuv420p"
        for i in range(round(seconds * fps)):
            frame = Image.new("RGB", (1280, 720), (100, 110, 120))
            frame.paste(head, (100 + 3 * i, 150))
            frame.paste(head, (900 - 2 * i, 350))
            container.mux(stream.encode(av.VideoFrame.from_image(frame)))
        container.mux(stream.encode(None))
    return path


def decode_pyav(path: Path) -> int:
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        return sum(1 for frame in container.decode(stream) if frame.to_image())


def decode_opencv(path: Path) -> int:
    import cv2

    cap, n = cv2.VideoCapture(str(path)), 0
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        Image.fromarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        n += 1
    cap.release()
    return n


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=4.0)
    p.add_argument("--model", default=None)
    p.add_argument("--threads", type=int, default=1, help="classifier threads (serving runs 1 per worker)")
    args = p.parse_args()
    from emotion.bench import cpu_name
    from emotion.threads import set_threads

    set_threads(args.threads)

    print(f"machine: {cpu_name()}; clip 1280x720, 25 fps, {args.seconds:g} s, 2 faces\n")
    print("| step | frames | wall s | fps | x real time |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        clip = make_clip(Path(tmp) / "clip.mp4", args.seconds)
        for name, fn in (("decode only, PyAV (+ to PIL)", decode_pyav), ("decode only, OpenCV (+ to PIL)",
                                                                          decode_opencv)):
            t = time.perf_counter()
            n = fn(clip)
            s = time.perf_counter() - t
            print(f"| {name} | {n} | {s:.2f} | {n / s:.1f} | {args.seconds / s:.2f} |")
        predictor = Predictor.from_pretrained(args.model)
        runs = (("predict_video, every frame", {}), ("predict_video, 5 fps sampling", {"fps": 5}))
        for name, options in runs:
            t = time.perf_counter()
            result = predictor.predict_video(clip, progress=False, **options)
            s = time.perf_counter() - t
            print(f"| {name} ({len(result.tracks)} tracks) | {result.frames} | {s:.2f} | {result.frames / s:.2f} | "
                  f"{args.seconds / s:.2f} |")


if __name__ == "__main__":
    main()
