"""The package at a git ref against today's, in one process, call by call: `Predictor.predict` of each on
bench_speed.py's photos, interleaved (A B, then B A, ...), so that a shared machine's drift hits both alike.

For changes of a few percent, which runs in separate processes on this machine cannot see (its load moves times by
10-40% within minutes). Prints, per photo, the median wall and CPU time of a call (CPU: the whole process's, every
thread of it, over the call) for the ref ("base") and the working tree ("now"), and the faces each found.

    python bench/bench_ab.py [--base HEAD] [--calls 60] [--photos astronaut,group,1920x1080,4032x3024] [--model SOURCE]

The ref's emotion/ is unpacked (`git archive`) into a temporary folder and imported as the package `emotion_base`
(the package's modules import each other relatively); both run with serving's threads, one per worker and both
cores for a lone request (bench_speed._one_thread), and the same model (--model; default today's default, which
the ref is given by its path).
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import io
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import bench_speed  # noqa: E402
from emotion.predict import Predictor  # noqa: E402


def package_at(ref: str, folder: Path, name: str = "emotion_base"):
    """emotion/ as it is at the git ref `ref`, unpacked into `folder` and imported as the package `name`."""
    try:
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref, "emotion"], capture_output=True,
                                 check=True).stdout
    except (OSError, subprocess.CalledProcessError) as e:
        sys.exit(f"cannot read emotion/ at {ref!r} ({getattr(e, 'stderr', b'').decode().strip() or e}): "
                 "run from a git checkout and pass a commit, branch or tag as --base")
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:  # our own history; the data filter where Python has it
        tar.extractall(folder, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
    spec = importlib.util.spec_from_file_location(name, folder / "emotion" / "__init__.py",
                                                  submodule_search_locations=[str(folder / "emotion")])
    package = importlib.util.module_from_spec(spec)
    sys.modules[name] = package
    spec.loader.exec_module(package)
    return package


def interleaved(contenders: dict[str, object], source, calls: int, warmup: int = 3) -> dict[str, dict]:
    """`calls` timed `predict(source)` calls of each predictor in `contenders`, alternating the order every call,
    after `warmup` untimed ones each: per name the median wall and CPU ms and the faces found."""
    wall = {name: [] for name in contenders}
    cpu = {name: [] for name in contenders}
    faces = {}
    order = list(contenders)
    for i in range(warmup + calls):
        for name in order if i % 2 else order[::-1]:
            c, t = time.process_time(), time.perf_counter()
            faces[name] = len(contenders[name].predict(source).faces)
            if i >= warmup:
                wall[name].append((time.perf_counter() - t) * 1000)
                cpu[name].append((time.process_time() - c) * 1000)
    return {name: {"wall": statistics.median(wall[name]), "cpu": statistics.median(cpu[name]),
                   "faces": faces[name]} for name in contenders}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", default="HEAD", help="the git ref to compare the working tree with")
    p.add_argument("--calls", type=int, default=60, help="timed calls per photo, per side")
    p.add_argument("--photos", default="astronaut,group,1920x1080,4032x3024",
                   help="which of bench_speed.py's photos (the start of their names), comma-separated")
    p.add_argument("--model", default=None, help="model source for both (default: today's default)")
    args = p.parse_args()
    if args.calls < 1:
        p.error("--calls must be >= 1")
    from emotion.bench import cpu_name
    from emotion.threads import CORES

    with tempfile.TemporaryDirectory() as tmp:
        base = package_at(args.base, Path(tmp) / "base")
        # serving's threads in each package: one a worker, both cores for a lone request (bench_speed._one_thread)
        importlib.import_module(f"{base.__name__}.threads").set_threads(1, budget=CORES)
        bench_speed._one_thread()
        now = Predictor.from_pretrained(args.model)
        contenders = {"base": importlib.import_module(f"{base.__name__}.predict").Predictor.from_pretrained(now.source),
                      "now": now}
        shots = bench_speed.photos(Path(tmp))
        wanted = [w.strip() for w in args.photos.split(",") if w.strip()]
        chosen = [name for name in shots if any(name.startswith(w) for w in wanted)]
        if not chosen:
            p.error(f"--photos matches none of {list(shots)}")
        print(f"machine: {cpu_name()}; base = emotion/ at {args.base}, now = the working tree; model {now.source}; "
              f"median of {args.calls} calls each, interleaved\n")
        print("| photo | base wall ms | now wall ms | now - base | base CPU ms | now CPU ms | faces base / now |")
        print("|---|---|---|---|---|---|---|")
        for name in chosen:
            r = interleaved(contenders, shots[name][0], args.calls)
            b, n = r["base"], r["now"]
            print(f"| {name} | {b['wall']:.2f} | {n['wall']:.2f} | {n['wall'] - b['wall']:+.2f} | {b['cpu']:.2f} | "
                  f"{n['cpu']:.2f} | {b['faces']} / {n['faces']} |")


if __name__ == "__main__":
    main()
