"""The peer for bench_speed.py: fer 25.10.3 (Haar cascade + its TFLite classifier, as TensorFlow runs it), timed in
its own environment, one JSON line in and one out, so that bench_speed.py can alternate rounds with it.

Run by bench_speed.py as `FER_PYTHON bench/fer_worker.py`, where FER_PYTHON is a venv with
`pip install fer==25.10.3 tensorflow-cpu==2.21.0 "setuptools<80"` (fer imports pkg_resources).

In:  {"photos": {name: {"path": file, "from_bytes": bool}}}  then  {"time": name, "n": N}  ...
Out: {"ready": versions}                                        then  {"ms": [N times], "faces": count}
A photo "from_bytes" is decoded from its file's bytes in every timed call (cv2.imdecode, as cv2.imread does);
the others are decoded once, before timing (an array in memory, as in-process callers hold it).
"""
from __future__ import annotations

import json
import sys
import time


def main() -> None:
    import cv2
    import numpy as np
    import tensorflow as tf
    from fer import __version__ as fer_version
    from fer.fer import FER

    detector = FER()  # its defaults: Haar cascade, the quantized TFLite classifier
    photos = {}
    for line in sys.stdin:
        request = json.loads(line)
        if "photos" in request:
            for name, spec in request["photos"].items():
                data = open(spec["path"], "rb").read()
                photos[name] = (data, spec["from_bytes"], cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR))
            reply = {"ready": f"fer {fer_version}, TensorFlow {tf.__version__}, OpenCV {cv2.__version__}"}
        else:
            data, from_bytes, bgr = photos[request["time"]]
            times, faces = [], 0
            for _ in range(request["n"]):
                t = time.perf_counter()
                image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) if from_bytes else bgr
                faces = len(detector.detect_emotions(image))
                times.append((time.perf_counter() - t) * 1000)
            reply = {"ms": times, "faces": faces}
        print(json.dumps(reply), flush=True)


if __name__ == "__main__":
    main()
