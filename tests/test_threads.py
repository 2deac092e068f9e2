"""A lone prediction may use every core for its large steps; concurrent ones keep to a worker's share."""
from __future__ import annotations

import io
import os
import threading

import numpy as np
import pytest
from PIL import Image

from emotion import faces, threads
from emotion.threads import in_flight, set_threads, wide_threads


@pytest.fixture
def budget():
    """Serving's setting on a 2-core machine (two workers of one thread each), restored afterwards."""
    saved = threads._threads, threads._budget
    set_threads(1, budget=2)
    yield
    threads._threads, threads._budget = saved


def test_a_lone_prediction_widens_two_at_once_keep_their_share(budget):
    assert wide_threads() == 2  # nothing in flight (a library call)
    with in_flight():
        assert wide_threads() == 2
        with in_flight():  # nested: still one prediction
            assert wide_threads() == 2
        other_started, release = threading.Event(), threading.Event()

        def other():
            with in_flight():
                other_started.set()
                release.wait(5)

        worker = threading.Thread(target=other)
        worker.start()
        other_started.wait(5)
        assert wide_threads() == 1  # two predictions: each its own core
        release.set()
        worker.join()
        assert wide_threads() == 2
    assert threads._flight == 0


def test_a_batch_worker_process_never_widens(budget):
    set_threads(1)  # emotion/batch.py's N processes: one thread each, no budget
    assert wide_threads() == 1


def test_the_pool_marks_each_prediction_and_gives_the_server_every_core(budget):
    from webapp.pool import InferencePool, configure_threads

    assert configure_threads(2) == max(1, threads.CORES // 2) and threads._budget == threads.CORES
    pool = InferencePool(2, 0)
    try:
        assert pool.call(lambda: threads._flight) == 1
    finally:
        pool.shutdown()
    assert threads._flight == 0


def test_a_lone_predictions_steps_run_wide_and_answer_as_narrow_ones(budget, astronaut, tiny_model):
    """YuNet, BlazeFace's views and the classifier run on the 2-thread sessions while alone, on the 1-thread ones
    beside another prediction, with the same answers."""
    from emotion import Predictor

    predictor = Predictor.from_pretrained(f"local-dir:{tiny_model}", backend="onnxruntime")
    wide = predictor.predict(Image.fromarray(astronaut))
    sessions = [predictor.detector.yunet._sessions, predictor.detector.blazeface._sessions, predictor._backend._wide]
    assert [sorted(s._sessions) for s in sessions] == [[2], [2], [2]]
    with in_flight():
        with threads._flight_lock:
            threads._flight += 1  # another worker's prediction
        try:
            narrow = predictor.predict(Image.fromarray(astronaut))
        finally:
            with threads._flight_lock:
                threads._flight -= 1
    assert [sorted(s._sessions) for s in sessions[:2]] == [[1, 2], [1, 2]]  # the classifier's narrow one: .session
    assert [f.box for f in wide.faces] == [f.box for f in narrow.faces]
    np.testing.assert_allclose([list(f.probabilities.values()) for f in wide.faces],
                               [list(f.probabilities.values()) for f in narrow.faces],
                               atol=1e-5)


def _small_face_jpeg(astronaut) -> bytes:
    canvas = Image.new("RGB", (1920, 1080), (128, 128, 128))
    canvas.paste(Image.fromarray(astronaut).resize((300, 300)), (1300, 500))  # her face ~55 px
    buf = io.BytesIO()
    canvas.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def test_a_large_jpegs_finer_decode_starts_beside_the_first_and_changes_nothing(budget, astronaut, monkeypatch):
    """A 1920x1080 JPEG is searched at half scale; its whole decode, which the ~55 px face's view and crop need,
    starts on a spare core before the half-scale one (from the header's sizes: the two decodes run at once) and is
    the one they use (no third decode)."""
    data = _small_face_jpeg(astronaut)
    detector = faces.FaceDetector()
    where, load = [], faces.load_image

    def counted(src, min_side=None):
        ahead_taken = not faces._ahead_free.acquire(blocking=False) or faces._ahead_free.release()
        where.append((threading.current_thread().name, ahead_taken))
        return load(src, min_side=min_side)

    monkeypatch.setattr(faces, "load_image", counted)
    img, found = faces.decode_and_find(data, detector)
    assert sorted(name.split("_")[0] for name, _ in where) == ["MainThread", "decode-ahead"]
    assert [taken for name, taken in where if name == "MainThread"] == [True]  # the finer decode already started
    assert img.size == (1920, 1080) and len(found.faces) == 1
    set_threads(1)  # no spare core: decoded in turn, the same faces
    where.clear()
    img2, found2 = faces.decode_and_find(data, detector)
    assert [name for name, _ in where] == ["MainThread", "MainThread"]
    assert img2.size == img.size and found2.faces == found.faces


def test_no_decode_ahead_while_another_prediction_runs_or_for_a_photo_that_is_too_large(budget, astronaut):
    img = faces.load_image(_small_face_jpeg(astronaut), min_side=960)
    assert img.size == (960, 540)
    with in_flight():
        with threads._flight_lock:
            threads._flight += 1  # another worker's prediction
        try:
            assert faces._decode_ahead(b"", (1920, 1080), img.size) is None
        finally:
            with threads._flight_lock:
                threads._flight -= 1
    assert faces._decode_ahead(b"", (4032, 3024), (1008, 756)) is None  # 12 MP at 1/4: its half-scale decode is 3 MP
    assert faces._decode_ahead(b"", (1920, 1080), (1920, 1080)) is None  # decoded whole: nothing finer


def test_a_large_classifier_keeps_one_session(budget, tiny_model, monkeypatch):
    """A second session holds its own copy of the weights: a model file above WIDE_MAX_BYTES (resnet50's) gets none."""
    from emotion import Predictor, backends

    assert Predictor.from_pretrained(f"local-dir:{tiny_model}", backend="onnxruntime")._backend._wide is not None
    monkeypatch.setattr(backends, "WIDE_MAX_BYTES", 1000)
    predictor = Predictor.from_pretrained(f"local-dir:{tiny_model}", backend="onnxruntime")
    assert predictor._backend._wide is None
    assert len(predictor.predict_crop(Image.new("RGB", (48, 48))).probabilities) == len(predictor.labels)


def _cgroup(tmp_path, proc: str, files: dict[str, str]):
    """A fake cgroup mount under tmp_path: `files` (path under the mount -> content) and /proc/self/cgroup's text."""
    root = tmp_path / "cgroup"
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    root.mkdir(exist_ok=True)
    (tmp_path / "proc_cgroup").write_text(proc)
    return root, tmp_path / "proc_cgroup"


@pytest.mark.parametrize("proc,files,quota", [
    ("0::/\n", {"cpu.max": "200000 100000\n"}, 2.0),  # a container on cgroup v2 (a Space: 2 vCPU)
    ("0::/\n", {"cpu.max": "max 100000\n"}, None),  # no limit
    ("0::/app/worker\n", {"cpu.max": "max 100000\n", "app/cpu.max": "150000 100000\n",
                          "app/worker/cpu.max": "max 100000\n"}, 1.5),  # a parent's limit holds
    ("0::/kubepods/pod1/c1\n", {"cpu.max": "400000 100000\n"}, 4.0),  # the host's path, the container's mount
    ("4:cpu,cpuacct:/docker/abc\n3:memory:/docker/abc\n0::/\n",
     {"cpu,cpuacct/docker/abc/cpu.cfs_quota_us": "50000\n", "cpu,cpuacct/docker/abc/cpu.cfs_period_us": "100000\n"},
     0.5),  # cgroup v1
    ("4:cpu,cpuacct:/\n", {"cpu,cpuacct/cpu.cfs_quota_us": "-1\n", "cpu,cpuacct/cpu.cfs_period_us": "100000\n"}, None),
    ("0::/\n", {"cpu.max": "garbage\n"}, None),
    ("", {}, None),
])
def test_a_cgroup_cpu_quota_caps_the_cores_threads_are_sized_by(tmp_path, proc, files, quota):
    """A container limited by a CPU quota sees every core of its host (affinity, os.cpu_count); its threads are
    sized by the quota, rounded down, at least 1."""
    root, proc_cgroup = _cgroup(tmp_path, proc, files)
    assert threads.cgroup_cpu_quota(root, proc_cgroup) == quota
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    expected = cores if quota is None else max(1, min(cores, int(quota)))
    assert threads.usable_cores(root, proc_cgroup) == expected


def test_no_proc_cgroup_means_no_quota(tmp_path):
    assert threads.cgroup_cpu_quota(tmp_path, tmp_path / "missing") is None
