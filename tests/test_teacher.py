"""Targets that keep what a model already does (trainer/teacher.py, issue #35): the teacher's raw answers blend into
the targets of the sources given a teacher_weight, only those, and only over the classes each source speaks for."""
import numpy as np
import pytest
from PIL import Image

from conftest import NEEDS_TORCH, write_export

pytest.importorskip("torch", reason=f"the trainer {NEEDS_TORCH}")

from emotion.labels import LABELS  # noqa: E402
from trainer.config import ConfigError, TrainConfig  # noqa: E402
from trainer.rows import FaceSplit  # noqa: E402
from trainer.teacher import blend_targets, teacher_probs  # noqa: E402

from test_loso import config, sources  # noqa: F401, E402  (two tiny parquet sources)


def faces(n: int, seed: int) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (48, 48), dtype=np.uint8), "L") for _ in range(n)]


def two_sources(masks=None) -> FaceSplit:
    labels = np.array([0, 4, 5, 6, 4, 5])
    a = FaceSplit(faces(3, 0), np.eye(8, dtype=np.float32)[labels[:3]], labels[:3])
    b = FaceSplit(faces(3, 1), np.eye(8, dtype=np.float32)[labels[3:]], labels[3:])
    return FaceSplit.concat([a, b], masks or [np.ones(8, bool), np.ones(8, bool)])


def test_the_teacher_blends_into_its_sources_targets_only(tmp_path):
    teacher = write_export(tmp_path / "teacher", temperature=0.5, logit_bias={"neutral": 3.0}, seed=3)
    train = two_sources()
    before = train.targets.copy()
    done = blend_targets(train, [{"name": "old", "data": "x", "teacher_weight": 0.25}, {"name": "new", "data": "y"}],
                         f"local-dir:{teacher}")
    assert done == {"old": 0.25}
    probs = teacher_probs(f"local-dir:{teacher}", train.subset(np.arange(3)))
    np.testing.assert_allclose(train.targets[:3], 0.75 * before[:3] + 0.25 * probs, atol=1e-6)
    np.testing.assert_array_equal(train.targets[3:], before[3:])  # the new source keeps its labels
    np.testing.assert_allclose(train.targets.sum(1), 1.0, atol=1e-5)


def test_the_teachers_answers_are_raw_not_served(tmp_path):
    # its served neutral bias and temperature are fitted after training: the student's are fitted again after its own
    plain = write_export(tmp_path / "plain", seed=3)
    served = write_export(tmp_path / "served", temperature=0.3, logit_bias={"neutral": 4.0}, seed=3)
    split = two_sources()
    np.testing.assert_allclose(teacher_probs(f"local-dir:{plain}", split), teacher_probs(f"local-dir:{served}", split),
                               atol=1e-6)


def test_the_teacher_speaks_only_for_the_classes_its_source_has(tmp_path):
    teacher = write_export(tmp_path / "teacher", seed=4)
    posed = np.isin(np.arange(8), [LABELS.index(c) for c in ("anger", "happy", "neutral", "sad")])
    train = two_sources([np.ones(8, bool), posed])
    blend_targets(train, [{"name": "a", "data": "x"}, {"name": "posed", "data": "y", "teacher_weight": 0.5}],
                  f"local-dir:{teacher}")
    assert (train.targets[3:, ~posed] == 0).all()
    np.testing.assert_allclose(train.targets[3:].sum(1), 1.0, atol=1e-5)


def test_a_teacher_weight_needs_a_teacher_and_a_number_in_range(sources, tmp_path):  # noqa: F811
    cfg = config(*sources, tmp_path / "run")
    cfg["sources"][0]["teacher_weight"] = 0.5
    with pytest.raises(ConfigError, match="teacher"):
        TrainConfig(**cfg)
    cfg["sources"][0]["teacher_weight"] = 1.5
    with pytest.raises(ConfigError, match="teacher_weight"):
        TrainConfig(**{**cfg, "teacher": "local-dir:models/small_cnn"})


def test_a_run_with_a_teacher_records_it(sources, tmp_path):  # noqa: F811
    import json

    from trainer.run import train_and_export

    teacher = write_export(tmp_path / "teacher", seed=5, input_size=(1, 24, 24))
    cfg = config(*sources, tmp_path / "run")
    cfg["sources"][0]["teacher_weight"] = 0.5
    export = train_and_export(TrainConfig(**cfg, teacher=f"local-dir:{teacher}"))
    results = json.loads((export / "eval_results.json").read_text())
    assert results["teacher"] == {"model": f"local-dir:{teacher}", "weights": {"fer": 0.5}}
