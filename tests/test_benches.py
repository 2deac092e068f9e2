"""The benchmarks are documented entry points: every name they import (also inside functions) must exist."""
import ast
import importlib
from pathlib import Path

import pytest

from conftest import NEEDS_TORCH, TORCH

ROOT = Path(__file__).resolve().parents[1]
# extras a bench uses only when installed (not in requirements); fer and ai_edge_litert live in a folder of their own
OPTIONAL = {"ray", "cv2", "onnxruntime", "norfair", "fer", "ai_edge_litert"}
SIBLINGS = {p.stem for p in (ROOT / "bench").glob("*.py")}  # a bench may import another (bench_video.make_clip)


@pytest.mark.parametrize("script", sorted(p.name for p in (ROOT / "bench").glob("*.py")))
def test_every_name_a_bench_imports_exists(script):
    tree = ast.parse((ROOT / "bench" / script).read_text())
    missing = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] in OPTIONAL:
                continue
            try:
                module = importlib.import_module(f"bench.{node.module}" if node.module in SIBLINGS else node.module)
            except (ModuleNotFoundError, SystemExit) as e:  # trainer.__main__ exits naming the training set
                torch_missing = "needs torch" in str(e) if isinstance(e, SystemExit) else e.name in (
                    "torch", "timm", "torchvision")
                if torch_missing and not TORCH:  # a torch bench, in the serving set
                    pytest.skip(f"{script} {NEEDS_TORCH}")
                raise
            missing += [f"{node.module}.{a.name}" for a in node.names
                        if not hasattr(module, a.name) and not _is_submodule(node.module, a.name)]
    assert not missing, f"{script} imports names that do not exist: {missing}"


def _is_submodule(module: str, name: str) -> bool:
    try:
        importlib.import_module(f"{module}.{name}")
    except ImportError:
        return False
    return True


@pytest.fixture
def bench_speed():
    """bench/bench_speed.py as a module, where the project's history holds its "before" commit (`BASE`)."""
    import subprocess
    import sys

    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import bench_speed

        if subprocess.run(["git", "-C", str(ROOT), "cat-file", "-e", bench_speed.BASE], capture_output=True).returncode:
            pytest.skip("not a git checkout with the project's history")
        yield bench_speed
    finally:
        sys.path.remove(str(ROOT / "bench"))


def test_bench_speeds_search_before_yunet_still_finds_its_models(bench_speed):
    """bench_speed.py's "before" column runs emotion/faces.py at its base commit, which loads both BlazeFace files;
    the full-range one is no longer shipped, so it is read from that commit."""
    legacy = bench_speed.legacy_faces(bench_speed.BASE)
    assert all((legacy.ASSETS / name).stat().st_size > 100_000 for name in legacy.MODEL_FILES.values())


def test_bench_speeds_before_worker_times_a_photo_in_its_own_process(bench_speed, tmp_path):
    """bench_speed.py times the search before YuNet in a worker process (`--before-worker`): it answers the fer
    worker's protocol with one time per call and the faces it found (the astronaut's one)."""
    import sys

    shots = bench_speed.photos(tmp_path)
    worker = bench_speed.Worker([sys.executable, str(ROOT / "bench" / "bench_speed.py"), "--before-worker",
                                 bench_speed.BASE], shots)
    try:
        times, faces = worker.time(next(name for name in shots if name.startswith("astronaut")), 2)
    finally:
        worker.close()
    assert worker.version == f"emotion/faces.py at {bench_speed.BASE}"
    assert len(times) == 2 and all(t > 0 for t in times) and faces == 1


def test_bench_ab_times_a_ref_and_the_working_tree_call_by_call(tmp_path):
    """bench_ab.py imports emotion/ at a git ref as a package of its own beside today's and times both on the same
    photo, interleaved: each side finds the astronaut's one face, and its code is the ref's own."""
    import subprocess
    import sys

    from PIL import Image
    from skimage import data

    if subprocess.run(["git", "-C", str(ROOT), "cat-file", "-e", "HEAD"], capture_output=True).returncode:
        pytest.skip("not a git checkout")
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import bench_ab
        from emotion import Predictor

        base = bench_ab.package_at("HEAD", tmp_path)
        assert base.__name__ == "emotion_base" and Path(base.__file__).is_relative_to(tmp_path)
        now = Predictor.from_pretrained()
        old = importlib.import_module("emotion_base.predict").Predictor.from_pretrained(now.source)
        result = bench_ab.interleaved({"base": old, "now": now}, Image.fromarray(data.astronaut()), calls=2, warmup=1)
    finally:
        sys.path.remove(str(ROOT / "bench"))
        for name in [m for m in sys.modules if m == "emotion_base" or m.startswith("emotion_base.")]:
            del sys.modules[name]
    assert {name: r["faces"] for name, r in result.items()} == {"base": 1, "now": 1}
    assert all(r["wall"] > 0 and r["cpu"] >= 0 for r in result.values())
