"""Action units as auxiliary training targets (trainer/aux_targets.py): mirror-free targets, a loss that skips faces
the landmarker missed, a head that trains the network and stays out of the export."""
import numpy as np
import pytest

from conftest import NEEDS_TORCH

torch = pytest.importorskip("torch", reason=f"the trainer {NEEDS_TORCH}")

from safetensors.torch import load_file  # noqa: E402

from emotion.action_units import AU_TABLE
from emotion.blendshape_head import BLENDSHAPES
from trainer import checkpoint
from trainer.__main__ import main
from trainer.aux_targets import au_matrix, aux_loss
from trainer.config import TrainConfig
from trainer.data import FaceDataset, load_splits
from trainer.train import Trainer

from test_trainer import hermetic_and_quick, write_bars  # noqa: F401  (the fixture: one thread, temp caches)


def mirrored(names) -> list[str]:
    swap = {"Left": "Right", "Right": "Left"}
    return [next((n[: -len(a)] + b for a, b in swap.items() if n.endswith(a)), n) for n in names]


def test_a_mirrored_face_has_the_same_action_units_and_a_missed_face_none():
    rng = np.random.default_rng(0)
    shapes = rng.uniform(0, 1, (3, len(BLENDSHAPES))).astype(np.float32)
    shapes[2] = np.nan  # no face found
    index = {n: i for i, n in enumerate(BLENDSHAPES)}
    flipped = shapes[:, [index[n] for n in mirrored(BLENDSHAPES)]]  # the person's left is the mirror's right
    assert not np.allclose(flipped[:2], shapes[:2])
    aus, aus_flipped = au_matrix(shapes), au_matrix(flipped)
    assert aus.shape == (3, len(AU_TABLE))
    np.testing.assert_array_equal(aus[:2], aus_flipped[:2])
    assert np.isnan(aus[2]).all()


def test_auxiliary_loss_counts_only_the_faces_read_and_nothing_when_none_was():
    pred = torch.randn(4, 3, requires_grad=True)
    target = torch.rand(4, 3)
    both = aux_loss(pred[:2], target[:2])
    target[2:] = float("nan")
    half = aux_loss(pred, target)
    assert half.item() == pytest.approx(both.item() / 2, rel=1e-6)  # per row of the batch: missed faces add 0
    half.backward()
    assert pred.grad[2:].abs().sum() == 0 and pred.grad[:2].abs().sum() > 0
    none = aux_loss(pred, torch.full((4, 3), float("nan")))
    assert none.item() == 0 and none.requires_grad


def bar_run(tmp_path, aux_weight: float, epochs: int = 1) -> tuple[Trainer, np.ndarray]:
    data = write_bars(tmp_path / "bars", train_per_class=4, val_per_class=1)
    cfg = TrainConfig(data=str(data), img_size=16, batch_size=8, workers=0, drop_rate=0.0, precision="fp32",
                      epochs=epochs, aux_targets="action_units", aux_weight=aux_weight,
                      output_dir=str(tmp_path / f"run{aux_weight}"))
    train, val, _ = load_splits(cfg)
    targets = np.zeros((len(train), len(AU_TABLE)), np.float32)
    targets[np.arange(len(train)), train.labels] = 1.0  # an "action unit" per class, so the head can learn it
    targets[::5] = np.nan  # and some faces the landmarker missed
    train.aux = targets
    torch.manual_seed(0)
    return Trainer(cfg, train, val), targets


def test_the_auxiliary_loss_reaches_the_network_not_only_its_head(tmp_path):
    grads = []
    for weight in (0.0, 1.0):
        trainer, _ = bar_run(tmp_path, weight)
        x, y, _, mask, aux = next(iter(trainer._loader(0)))
        assert aux.shape == (8, len(AU_TABLE))
        trainer.opt.zero_grad()
        trainer._backward(x, y, mask, aux)
        grads.append(trainer.model.features[0].weight.grad.clone())
    assert not torch.allclose(grads[0], grads[1])


def test_the_head_trains_is_checkpointed_and_is_not_exported(tmp_path):
    trainer, targets = bar_run(tmp_path, 1.0, epochs=3)
    found = ~np.isnan(targets[:, 0])

    def head_loss() -> float:  # on the un-augmented faces the landmarker read
        faces = FaceDataset(trainer.train_split, trainer.info)
        x = torch.stack([faces[int(i)][0] for i in np.flatnonzero(found)])
        with torch.no_grad():
            trainer.model.eval()
            return aux_loss(trainer.aux(x)[1], torch.from_numpy(targets[found])).item()

    before = head_loss()
    trainer.fit()
    assert head_loss() < before * 0.8
    saved = checkpoint.load(trainer.ckpt_dir / "last.safetensors")
    torch.testing.assert_close(saved["aux_head"]["weight"], trainer.aux.head.weight)
    # a resumed run gets the head back as it was
    again, _ = bar_run(tmp_path, 1.0, epochs=3)
    assert again.maybe_resume()
    torch.testing.assert_close(again.aux.head.weight, trainer.aux.head.weight)


def test_a_run_with_action_units_exports_the_classifier_alone_and_caches_the_faces(ferplus_dir, tmp_path):
    common = ["--workers", "0", "--data", str(ferplus_dir), "--epochs", "1", "--max-train-samples", "48",
              "--max-val-samples", "16", "--batch-size", "16", "--img-size", "24"]
    assert main([*common, "--output-dir", str(tmp_path / "plain")]) == 0
    assert main([*common, "--aux-targets", "action_units", "--output-dir", str(tmp_path / "au")]) == 0
    plain = load_file(tmp_path / "plain" / "export" / "model.safetensors")
    au = load_file(tmp_path / "au" / "export" / "model.safetensors")
    assert au.keys() == plain.keys()
    with np.load(tmp_path / "au" / "faces.npz") as cache:
        assert len(cache["keys"]) == 48  # what the landmarker read, for the next run


@pytest.mark.parametrize("architecture", ["small_cnn", "resnet50", "tf_efficientnet_lite0"])
def test_with_the_head_the_classifier_gets_what_the_model_alone_gives_it(architecture):
    from emotion.models import create_model
    from trainer.aux_targets import WithAux

    model = create_model(architecture, in_chans=1).eval()
    both = WithAux(model, len(AU_TABLE)).eval()
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        logits, aux = both(x)
        torch.testing.assert_close(logits, model(x))
    assert aux.shape == (2, len(AU_TABLE))
