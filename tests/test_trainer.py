"""`python -m trainer`: exports that every loader reads, learning on separable data, resume, refusals, checkpoints.

Runs are tiny (a few hundred 48 px faces, 16-24 px inputs, 1-3 epochs): they check the plumbing, not the accuracy
on FER+.
"""
import functools
import json
import logging
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import NEEDS_TORCH

torch = pytest.importorskip("torch", reason=f"the trainer {NEEDS_TORCH}")

from PIL import Image  # noqa: E402

from emotion.labels import LABELS, canonical
from emotion.models import ModelInfo
from emotion.predict import Predictor
from emotion.preprocess import batch
from trainer import checkpoint, run
from trainer.__main__ import main
from trainer.train import rng_state, set_rng_state, use_bf16

ROOT = Path(__file__).resolve().parents[1]
FER2013_NAMES = ("Angry", "Disgust", "Fear", "Happy", "Sad", "Surprise", "Neutral")
NO_GEOMETRY = ["--scale-min", "1", "--rotate", "0"]  # the bars' height is the class: keep it where it is


def bar_image(k: int, rng: np.random.Generator, size: int = 48) -> Image.Image:
    """Class k: a bright horizontal bar at height 3 + 5k on noise (mirror-invariant, like the trainer's flip TTA)."""
    img = rng.normal(60, 20, (size, size))
    img[3 + 5 * k: 6 + 5 * k, 6:42] = 220
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "L")


def write_bars(root: Path, names=LABELS, train_per_class: int = 24, val_per_class=8, seed: int = 0) -> Path:
    """An image folder (train/<emotion>/*.png, validation/<emotion>/*.png) that a small CNN separates easily."""
    rng = np.random.default_rng(seed)
    for k, name in enumerate(names):
        n_val = val_per_class(k) if callable(val_per_class) else val_per_class
        for split, n in (("train", train_per_class), ("validation", n_val)):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                bar_image(k, rng).save(folder / f"{i}.png")
    return root


@pytest.fixture(scope="module", autouse=True)
def hermetic_and_quick(tmp_path_factory):
    """Datasets' arrow cache in a temp folder; the timing of one face measured 1 time, not 30 (it is a report);
    one torch thread (on a busy 2-core machine, two threads waiting on each other make these runs ~2x slower)."""
    import datasets

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path_factory.mktemp("datasets_cache"))
        mp.setattr(run, "ms_per_face", functools.partial(run.ms_per_face, repeats=1))
        yield
    torch.set_num_threads(threads)


def train(*args: str) -> int:
    return main(["--workers", "0", *args])


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


# ---------------------------------------------------------------------------------------- exports load everywhere
@pytest.fixture(scope="module")
def small_cnn_export(ferplus_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("small_cnn")
    assert train("--model", "small_cnn", "--data", str(ferplus_dir), "--epochs", "2", "--max-train-samples", "256",
                 "--max-val-samples", "128", "--batch-size", "32", "--output-dir", str(out)) == 0
    return out / "export"


@pytest.fixture(scope="module")
def resnet50_export(ferplus_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("resnet50")  # trained the way resnet50.yaml trains: bf16 autocast, channels_last
    assert train("--model", "resnet50", "--no-pretrained", "--precision", "bf16", "--img-size", "32",
                 "--data", str(ferplus_dir),
                 "--epochs", "1", "--max-train-samples", "64", "--max-val-samples", "32", "--batch-size", "32",
                 "--output-dir", str(out)) == 0
    return out / "export"


@pytest.mark.parametrize("export_fixture", ["small_cnn_export", "resnet50_export"])
def test_export_gives_equal_logits_in_predictor_timm_and_transformers(export_fixture, request, astronaut):
    import timm
    from transformers import AutoModelForImageClassification

    export = request.getfixturevalue(export_fixture)
    predictor = Predictor.from_pretrained(f"local-dir:{export}", backend="torch")
    face = Image.fromarray(astronaut).crop((170, 70, 280, 190))
    x = torch.from_numpy(batch([face, face.transpose(Image.Transpose.FLIP_LEFT_RIGHT)], predictor.info))
    by_timm = timm.create_model(f"local-dir:{export}", pretrained=True).eval()
    # transformers 5 would keep the float16 export in float16; compare like with like
    by_transformers = AutoModelForImageClassification.from_pretrained(export, dtype=torch.float32).eval()
    with torch.inference_mode():
        ours = predictor.model(x)
        torch.testing.assert_close(by_timm(x), ours, rtol=0, atol=1e-5)
        torch.testing.assert_close(by_transformers(pixel_values=x).logits, ours, rtol=0, atol=1e-5)
    assert by_transformers.config.id2label == dict(enumerate(LABELS))
    probs = predictor.probabilities([face])
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)


# ------------------------------------------------------------------------------------------- the exported facts
def test_exported_config_carries_the_models_facts(small_cnn_export):
    config = read_json(small_cnn_export / "config.json")
    assert "num_classes" not in config.get("model_args", {})  # TimmWrapper refuses it there
    assert config["architecture"] == "small_cnn"
    assert config["num_classes"] == 8
    assert config["label_names"] == list(LABELS)
    pcfg = config["pretrained_cfg"]
    assert pcfg["input_size"] == [1, 48, 48] and pcfg["mean"] == [0.5] and pcfg["std"] == [0.5]
    facts = config["emotion"]
    for key in ("temperature", "crop_margin", "native_size", "uncertain_threshold", "tta_flip", "align_eyes"):
        assert key in facts
    assert facts["temperature"] > 0
    assert ModelInfo.from_config(config).temperature == facts["temperature"]
    results = read_json(small_cnn_export / "eval_results.json")
    assert results["splits"]["validation"]["n"] == 128
    assert results["dataset"]["train_rows"] == 256
    assert [h["epoch"] for h in results["history"]] == [1, 2]
    assert results["precision"] == ("bf16" if use_bf16("auto", torch.device("cpu")) else "fp32")  # auto, resolved
    assert (small_cnn_export / "model.safetensors").is_file()


def test_weights_trained_on_fer2013_declare_no_open_licence(small_cnn_export):
    """FER2013's images have no open licence (research use): the export and its card must not call the weights MIT."""
    from huggingface_hub import ModelCard

    assert read_json(small_cnn_export / "config.json")["pretrained_cfg"].get("license", "other") == "other"
    card = ModelCard.load(small_cnn_export / "README.md")
    assert card.data.license == "other"
    assert "research use" in card.text.split("**Licence of these weights**")[1].split("\n")[0]


def test_evaluating_and_benchmarking_do_not_import_the_training_loop():
    code = "import sys, trainer.compare, emotion.bench; print(sorted(m for m in sys.modules if m in ('trainer.run', 'trainer.train')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# -------------------------------------------------------------------------------------------- it really learns
def test_small_cnn_learns_separable_bars_well_above_chance(tmp_path):
    data = write_bars(tmp_path / "bars")
    out = tmp_path / "run"
    assert train("--data", str(data), "--img-size", "24", "--epochs", "3", "--batch-size", "8", *NO_GEOMETRY,
                 "--precision", "fp32", "--output-dir", str(out)) == 0
    results = read_json(out / "export" / "eval_results.json")
    assert results["splits"]["validation"]["accuracy"] > 0.6  # chance is 1/8; 1.0 measured (fp32, bf16, AMD EPYC)
    # and serving, through the same preprocessing, reads fresh bars the same way
    predictor = Predictor.from_pretrained(f"local-dir:{out / 'export'}")
    rng = np.random.default_rng(99)
    predicted = [predictor.predict_crop(bar_image(k, rng)).emotion for k in range(8)]
    assert sum(p == name for p, name in zip(predicted, LABELS)) >= 6, predicted


def test_seven_fer2013_classes_train_the_eight_way_head(tmp_path):
    # class k gets k + 1 validation images, so the supports show which folder became which canonical emotion
    data = write_bars(tmp_path / "fer7", names=FER2013_NAMES, train_per_class=4, val_per_class=lambda k: k + 1)
    out = tmp_path / "run"
    assert train("--data", str(data), "--img-size", "16", "--epochs", "1", "--batch-size", "8",
                 "--output-dir", str(out)) == 0
    config = read_json(out / "export" / "config.json")
    assert config["label_names"] == list(LABELS) and config["num_classes"] == 8
    support = {k: v["support"] for k, v in read_json(out / "export" / "eval_results.json")["splits"]["validation"]
               ["per_class"].items()}
    assert support == {"contempt": 0, **{canonical(name): k + 1 for k, name in enumerate(FER2013_NAMES)}}
    predictor = Predictor.from_pretrained(f"local-dir:{out / 'export'}")
    assert predictor.probabilities([bar_image(0, np.random.default_rng(0))]).shape == (1, 8)


# ------------------------------------------------------------------------------ weight average, micro-batches
def test_weight_average_is_what_validation_scores_and_the_export_ships(tmp_path):
    data = write_bars(tmp_path / "bars", train_per_class=8, val_per_class=2)
    out = tmp_path / "run"
    assert train("--data", str(data), "--img-size", "16", "--epochs", "2", "--batch-size", "8", "--ema-decay", "0.9",
                 "--export-dtype", "float32", "--output-dir", str(out)) == 0
    last = checkpoint.load(out / "checkpoints" / "last.safetensors")
    best = checkpoint.load(out / "checkpoints" / "best.safetensors")
    from safetensors.torch import load_file

    shipped = load_file(out / "export" / "model.safetensors")
    moved = 0
    for name, raw in last["model"].items():
        if not raw.is_floating_point():
            continue
        moved += not torch.allclose(last["ema"][name], raw)
        if best["epoch"] == 2:  # the best epoch's weights are the average, not the raw weights
            torch.testing.assert_close(best["model"][name], last["ema"][name])
    assert moved > 0  # the average trails the raw weights
    weights = {k: v for k, v in best["model"].items() if k in shipped}
    assert len(weights) == len(shipped)
    for k, v in weights.items():
        torch.testing.assert_close(shipped[k].float(), v.float(), msg=k)
    history = read_json(out / "export" / "eval_results.json")["history"]
    assert all(set(h["raw_accuracy"]) == {"validation"} for h in history)  # the log shows what averaging buys


def test_weight_average_update_and_swap_restore_the_training_weights():
    from trainer.ema import WeightEMA

    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    ema = WeightEMA(model, decay=0.5)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        model[0].weight.add_(1.0)
    ema.update(model, step=100)  # decay 0.5: halfway between start and now
    torch.testing.assert_close(ema.shadow["0.weight"], start["0.weight"] + 0.5)
    trained = model[0].weight.detach().clone()
    with ema.applied(model):
        torch.testing.assert_close(model[0].weight, start["0.weight"] + 0.5)
    torch.testing.assert_close(model[0].weight, trained)


def test_micro_batches_give_the_full_batch_gradient(tmp_path):
    from trainer.config import TrainConfig
    from trainer.data import load_splits
    from trainer.train import Trainer

    data = write_bars(tmp_path / "bars", train_per_class=2, val_per_class=1)
    grads = []
    for accum in (1, 4):
        # fp32: on a CPU with native bf16 (AMX) `auto` means bf16 autocast, whose rounding differs per micro-batch
        cfg = TrainConfig(data=str(data), img_size=16, batch_size=8, grad_accum=accum, workers=0, drop_rate=0.0,
                          precision="fp32", output_dir=str(tmp_path / f"run{accum}"))
        tr, val, _ = load_splits(cfg)
        trainer = Trainer(cfg, tr, val)
        trainer.model.eval()  # BatchNorm from running statistics: then micro-batches must sum to the batch exactly
        x, y, _, mask, aux = next(iter(trainer._loader(0)))
        trainer.opt.zero_grad()
        loss = trainer._backward(x, y, mask, aux)
        grads.append((loss.item(), [p.grad.clone() for p in trainer.model.parameters() if p.grad is not None]))
    (loss1, g1), (loss4, g4) = grads
    assert loss4 == pytest.approx(loss1, rel=1e-5)
    for a, b in zip(g1, g4, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-6)


def test_micro_batches_that_do_not_divide_the_batch_are_refused_in_one_line(tmp_path, capsys):
    data = write_bars(tmp_path / "bars", train_per_class=2, val_per_class=1)
    assert train("--data", str(data), "--img-size", "16", "--batch-size", "8", "--grad-accum", "3",
                 "--output-dir", str(tmp_path / "run")) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert any("grad_accum=3" in line and "8 images a step" in line for line in err), err


# ------------------------------------------------------------------------------------------ kill, resume, SIGTERM
def trainer_command(data: Path, out: Path, epochs: int, workers: int = 0) -> list[str]:
    # fp32: `auto` is bf16 autocast wherever oneDNN offers it (emulated on AVX2, native on AMX), and its rounding
    # differs with the CPU's kernels
    return [sys.executable, "-m", "trainer", "--data", str(data), "--img-size", "16", "--epochs", str(epochs),
            "--batch-size", "8", "--ckpt-every", "2", "--workers", str(workers), "--precision", "fp32", *NO_GEOMETRY,
            "--output-dir", str(out)]


def start(command: list[str], log: Path, cache: Path) -> subprocess.Popen:
    """The run in its own process group, as a shell starts a job (so Ctrl-C / killpg reach its loader workers too)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_DATASETS_CACHE": str(cache), "HF_HUB_OFFLINE": "1",
           "OMP_NUM_THREADS": "1"}
    with open(log, "w") as f:
        return subprocess.Popen(command, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)


def wait_for(path: Path, proc: subprocess.Popen, log: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            pytest.fail(f"the run ended (code {proc.returncode}) before writing {path}:\n{log.read_text()[-2000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"no {path} after {timeout} s:\n{log.read_text()[-2000:]}")
        time.sleep(0.05)


def test_killed_run_resumes_from_its_last_checkpoint_and_exports(tmp_path):
    # 48 steps an epoch, a checkpoint every 2: enough that a loaded machine cannot finish the run before the kill
    data = write_bars(tmp_path / "bars", train_per_class=48, val_per_class=2)
    out, last = tmp_path / "run", tmp_path / "run" / "checkpoints" / "last.safetensors"
    command = trainer_command(data, out, epochs=2)
    proc = start(command, tmp_path / "first.log", tmp_path / "cache")
    wait_for(last, proc, tmp_path / "first.log")
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    saved = checkpoint.load(last)
    assert 2 <= saved["step"] < 96
    assert not (out / "export").exists()

    rerun = start(command, tmp_path / "second.log", tmp_path / "cache")
    assert rerun.wait(timeout=600) == 0, (tmp_path / "second.log").read_text()[-3000:]
    log = (tmp_path / "second.log").read_text()
    assert f"resumed from {last} at epoch {saved['epoch']}, step {saved['step']}" in log
    assert (out / "export" / "model.safetensors").is_file()
    results = read_json(out / "export" / "eval_results.json")
    assert [h["step"] for h in results["history"]] == [48, 96]


def test_run_killed_mid_epoch_and_resumed_equals_an_uninterrupted_run(tmp_path):
    """Same weights and history, though the interrupted run also used a loader worker (augmentation is seeded per
    sample, not by process history) and was SIGKILLed after its first mid-epoch checkpoint."""
    data = write_bars(tmp_path / "bars", train_per_class=16, val_per_class=4)
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    ema = ["--ema-decay", "0.9"]  # the weight average resumes exactly too
    ref = start(trainer_command(data, whole, epochs=2) + ema, tmp_path / "whole.log", tmp_path / "cache")
    assert ref.wait(timeout=600) == 0, (tmp_path / "whole.log").read_text()[-3000:]
    command = trainer_command(data, cut, epochs=2, workers=1) + ema
    proc = start(command, tmp_path / "first.log", tmp_path / "cache")
    wait_for(cut / "checkpoints" / "last.safetensors", proc, tmp_path / "first.log")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert checkpoint.load(cut / "checkpoints" / "last.safetensors")["step"] < 16  # killed inside epoch 1
    rerun = start(command, tmp_path / "second.log", tmp_path / "cache")
    assert rerun.wait(timeout=600) == 0, (tmp_path / "second.log").read_text()[-3000:]
    assert "resumed from" in (tmp_path / "second.log").read_text()

    a = checkpoint.load(whole / "checkpoints" / "last.safetensors")
    b = checkpoint.load(cut / "checkpoints" / "last.safetensors")
    for part in ("model", "ema"):
        for name, tensor in a[part].items():
            torch.testing.assert_close(b[part][name], tensor, rtol=1e-5, atol=1e-6, msg=f"{part} {name}")
    for h_whole, h_cut in zip(a["history"], b["history"], strict=True):
        assert h_cut.pop("raw_accuracy") == pytest.approx(h_whole.pop("raw_accuracy"), rel=1e-5)
        reports_whole, reports_cut = h_whole.pop("reports"), h_cut.pop("reports")
        assert h_cut == pytest.approx(h_whole, rel=1e-5)
        assert reports_cut.keys() == reports_whole.keys()
        for name, metrics in reports_whole.items():
            assert reports_cut[name] == pytest.approx(metrics, rel=1e-5)


def test_sigterm_to_the_job_checkpoints_and_exits_143_with_one_line(tmp_path):
    data = write_bars(tmp_path / "bars", train_per_class=8, val_per_class=2)
    out, last = tmp_path / "run", tmp_path / "run" / "checkpoints" / "last.safetensors"
    log = tmp_path / "run.log"
    proc = start(trainer_command(data, out, epochs=50, workers=1), log, tmp_path / "cache")
    wait_for(last, proc, log)
    os.killpg(proc.pid, signal.SIGTERM)  # the main process and its loader worker, as `kill -TERM -PGID` does
    assert proc.wait(timeout=60) == 143, log.read_text()[-2000:]
    text = log.read_text()
    assert "Traceback" not in text
    lines = [line for line in re.split(r"[\r\n]+", text) if "SIGTERM" in line]
    assert len(lines) == 1, lines
    step = checkpoint.load(last)["step"]
    assert lines[0] == f"SIGTERM: checkpoint saved at step {step}; rerun the same command to resume"


# ------------------------------------------------------------------------------------------------ clear refusals
@pytest.mark.parametrize("option,value,field", [
    ("--balance", "foo", "balance"),
    ("--channels", "2", "channels"),
    ("--init", "/no/prefix", "init"),
    ("--precision", "fp8", "precision"),
    ("--data", "/no/such/folder", "data"),
])
def test_bad_value_exits_nonzero_with_one_line_naming_the_field(option, value, field, tmp_path, capsys):
    assert train(option, value, "--output-dir", str(tmp_path / "run")) != 0
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert re.search(rf"\b{field}\b", lines[0])
    assert value in lines[0]


@pytest.mark.parametrize("line,field,expected", [
    ("epochs: three", "epochs", "an integer"),
    ("seed: abc", "seed", "an integer"),
    ("epochs: 1.5", "epochs", "an integer"),  # not silently rounded to 2
    ("hflip: maybe", "hflip", "true or false"),
    ("lr: fast", "lr", "a finite number"),
    ("lr: .nan", "lr", "a finite number"),
    ("batch_size: [32]", "batch_size", "an integer"),
])
@pytest.mark.parametrize("where", ["yaml", "cli"])
def test_mistyped_value_in_yaml_or_on_the_cli_is_one_line_naming_field_and_type(line, field, expected, where,
                                                                                tmp_path, capsys):
    name, value = (part.strip() for part in line.split(":", 1))
    if where == "yaml":
        (tmp_path / "c.yaml").write_text(line + "\n")
        args = ["--config", str(tmp_path / "c.yaml")]
    elif field == "hflip":
        pytest.skip("booleans are --flag/--no-flag on the CLI: a value cannot be given")
    else:
        args = ["--" + name.replace("_", "-"), value]
    # no data there: before the fix a wrong value that slipped through must not start a real training run
    assert train(*args, "--data", str(tmp_path / "no_data"), "--output-dir", str(tmp_path / "run")) == 2
    lines = [x for x in capsys.readouterr().err.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"error: invalid {field}="), lines
    assert lines[0].endswith(f"expected {expected}")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("line,field,value", [
    ("lr: 1e-3", "lr", 0.001),  # PyYAML (YAML 1.1) leaves this a string
    ("weight_decay: 5E-2", "weight_decay", 0.05),
    ("epochs: 2.0", "epochs", 2),
    ("max_train_samples: 1e3", "max_train_samples", 1000),
    ("hflip: 'no'", "hflip", False),  # quoted: a string, which used to be truthy
    ("hflip: 'off'", "hflip", False),
    ("tta_flip: 'Yes'", "tta_flip", True),
    ("init: null", "init", None),
    ("output_dir: 2024", "output_dir", "2024"),
])
def test_yaml_spellings_are_read_as_the_fields_type(line, field, value, tmp_path):
    from trainer.__main__ import build_parser
    from trainer.config import resolve_config

    (tmp_path / "c.yaml").write_text(line + "\n")
    cfg = resolve_config(build_parser().parse_args(["train", "--config", str(tmp_path / "c.yaml")]))
    got = getattr(cfg, field)
    assert got == value and type(got) is type(value)
    if field not in ("hflip", "tta_flip", "init"):  # booleans are --flag/--no-flag on the CLI
        cli = resolve_config(build_parser().parse_args(["train", f"--{field.replace('_', '-')}", line.split(": ")[1]]))
        assert getattr(cli, field) == value


def test_bad_value_as_a_subprocess_prints_no_traceback(tmp_path):
    done = subprocess.run([sys.executable, "-m", "trainer", "--balance", "foo", "--output-dir", str(tmp_path)],
                          cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [
        "error: invalid balance='foo': expected one of none, sampler, weights"]


def test_incompatible_resume_is_refused_before_anything_is_overwritten(tmp_path, capsys):
    data = write_bars(tmp_path / "bars", train_per_class=4, val_per_class=1)
    out = tmp_path / "run"
    args = ["--data", str(data), "--img-size", "16", "--epochs", "1", "--batch-size", "8", "--output-dir", str(out)]
    assert train(*args) == 0
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    capsys.readouterr()
    assert train(*args, "--channels", "3") == 2
    lines = [x for x in capsys.readouterr().err.splitlines() if x.strip()]
    assert lines == [f"error: cannot resume {out}: its checkpoint has channels=1 but this run has channels=3; use a "
                     "new --output-dir, or the old values to continue it"]
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before  # config.yaml included


def test_truncated_or_empty_checkpoints_fall_back_to_the_previous_one(tmp_path, caplog, capsys):
    data = write_bars(tmp_path / "bars", train_per_class=8, val_per_class=1)
    out, ckpts = tmp_path / "run", tmp_path / "run" / "checkpoints"
    args = ["--data", str(data), "--img-size", "16", "--batch-size", "8", "--ckpt-every", "2", "--output-dir", str(out)]
    assert train(*args, "--epochs", "1") == 0
    prev = checkpoint.load(ckpts / "last.prev.safetensors")
    assert (prev["epoch"], prev["step"]) == (0, 8)  # the in-epoch checkpoint before the epoch-end one
    full = (ckpts / "last.safetensors").read_bytes()
    (ckpts / "last.safetensors").write_bytes(full[: len(full) // 2])  # truncated (a full disk, a bad copy)
    caplog.set_level(logging.INFO)
    caplog.clear()
    assert train(*args, "--epochs", "2") == 0
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and warnings[0].startswith(f"{ckpts / 'last.safetensors'} is unreadable (")
    assert warnings[0].endswith(f"); using {ckpts / 'last.prev.safetensors'} instead")
    assert f"resumed from {ckpts / 'last.prev.safetensors'} at epoch 0, step 8" in caplog.text
    assert [h["epoch"] for h in checkpoint.load(ckpts / "last.safetensors")["history"]] == [1, 2]

    # best.safetensors empty: a finished run re-exports from the previous best
    best = checkpoint.load(ckpts / "best.safetensors")
    checkpoint.save(ckpts / "best.safetensors", best, keep_previous=True)
    (ckpts / "best.safetensors").write_bytes(b"")
    caplog.clear()
    assert train(*args, "--epochs", "2") == 0
    assert any("best.safetensors is unreadable" in r.getMessage() for r in caplog.records)
    assert read_json(out / "export" / "eval_results.json")["best_epoch"] == best["epoch"]

    # nothing readable left: one line that says how to start over, no traceback
    (ckpts / "best.prev.safetensors").write_bytes(b"\0" * 10)
    capsys.readouterr()
    assert train(*args, "--epochs", "2") == 2
    err = [x for x in capsys.readouterr().err.splitlines() if x.strip()]
    assert len(err) == 1 and err[0].startswith(f"error: no readable checkpoint in {ckpts}: best.safetensors"), err
    assert err[0].endswith("delete that folder to start the run over")


# ------------------------------------------------------------------------------------------------- checkpoints
def adamw_state() -> dict:
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2))
    opt = torch.optim.AdamW([{"params": [model[0].weight], "weight_decay": 0.05},
                             {"params": [model[0].bias, *model[1].parameters()], "weight_decay": 0.0}], lr=1e-3)
    model(torch.randn(2, 1, 5, 5)).sum().backward()
    opt.step()
    return opt.state_dict()


def assert_same(a, b):
    assert type(a) is type(b), (a, b)
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and torch.equal(a, b)
    elif isinstance(a, dict):
        assert list(a) == list(b)
        for k in a:
            assert_same(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert_same(x, y)
    else:
        assert a == b


def test_flatten_unflatten_round_trips_nested_optimizer_state():
    state = adamw_state()
    tensors: dict = {}
    flat = checkpoint.flatten(state, "optimizer", tensors)
    json.dumps(flat)  # everything but the tensors is plain JSON
    assert tensors and all(isinstance(t, torch.Tensor) for t in tensors.values())
    assert_same(checkpoint.unflatten(json.loads(json.dumps(flat)), tensors), state)  # int keys, tuples survive


def test_checkpoint_file_round_trips_and_leaves_no_temp_file(tmp_path):
    shared = torch.arange(4.0)
    state = {"optimizer": adamw_state(), "step": 7, "history": [{"epoch": 1, "f1": 0.5}], "best_f1": -1.0,
             "a": shared, "b": shared, "betas": (0.9, 0.999), "rng": rng_state()}
    path = tmp_path / "last.safetensors"
    checkpoint.save(path, state)
    checkpoint.save(path, state)  # overwriting is fine too
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.safetensors"]
    assert_same(checkpoint.load(path), state)


def test_interrupted_checkpoint_write_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "last.safetensors"
    checkpoint.save(path, {"step": 1, "w": torch.ones(3)})

    def crash(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint, "save_file", crash)
    with pytest.raises(OSError):
        checkpoint.save(path, {"step": 2, "w": torch.zeros(3)})
    assert checkpoint.load(path)["step"] == 1


def test_rng_state_through_a_checkpoint_replays_the_same_random_numbers(tmp_path):
    checkpoint.save(tmp_path / "c.safetensors", {"rng": rng_state()})
    expected = (np.random.rand(3), torch.rand(3), random.random())
    set_rng_state(checkpoint.load(tmp_path / "c.safetensors")["rng"])
    got = (np.random.rand(3), torch.rand(3), random.random())
    np.testing.assert_array_equal(got[0], expected[0])
    assert torch.equal(got[1], expected[1]) and got[2] == expected[2]


# ------------------------------------------------------------------------------------------- evaluate and compare
def test_quick_metrics_equal_the_evaluate_metric_also_with_absent_and_never_predicted_classes():
    """The post-hoc fits score thousands of candidates with `quick_metrics` (numpy); the reports go through the
    `evaluate` metric (scikit-learn). They must be the same numbers, also where a class is absent or never predicted."""
    from trainer.evaluation import _metric, quick_metrics

    rng = np.random.default_rng(0)
    for n, classes in ((1, 1), (2, 8), (7, 3), (40, 8), (500, 5)):
        logits = rng.normal(size=(n, len(LABELS)))
        labels = rng.integers(0, classes, n)
        ref = _metric("classification").compute(predictions=logits.argmax(1).tolist(), references=labels.tolist(),
                                                labels=list(range(len(LABELS))), per_class=False)
        got = quick_metrics(logits, labels)
        assert got["accuracy"] == pytest.approx(ref["accuracy"], abs=1e-12)
        assert got["macro_f1"] == pytest.approx(ref["macro_f1"], abs=1e-12)
    with pytest.raises(ValueError, match="no faces"):
        quick_metrics(np.zeros((0, len(LABELS))), np.zeros(0, np.int64))


def test_evaluate_reports_metrics_and_with_detect_faces_crops_photos(tmp_path, tiny_model, astronaut, capsys):
    """`evaluate --detect-faces` treats the images as photos: the astronaut's face is found and cropped first."""
    root = tmp_path / "photos"
    for name in ("happy", "neutral"):
        (root / "test" / name).mkdir(parents=True)
        Image.fromarray(astronaut).save(root / "test" / name / "astronaut.png")
        Image.new("RGB", (200, 200), (90, 90, 90)).save(root / "test" / name / "blank.png")
    out_json = tmp_path / "metrics.json"
    assert main(["evaluate", "--model", f"local-dir:{tiny_model}", "--data", str(root), "--split", "test",
                 "--json", str(out_json), "--detect-faces"]) == 0
    text = capsys.readouterr().out
    assert "a face was detected in 2 of 4 images" in text
    metrics = read_json(out_json)
    assert metrics["faces_detected"] == 2
    assert metrics["splits"]["whole"]["n"] == 4
    assert sum(map(sum, metrics["splits"]["whole"]["confusion_matrix"])) == 4


def test_compare_writes_one_row_per_model_and_scores_photos_through_the_detector(tmp_path, tiny_model, ferplus_dir,
                                                                                   astronaut):
    import datasets

    photos = tmp_path / "photos"
    photos.mkdir()
    feats = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=list(LABELS)),
                               "observer_agrees": datasets.Value("bool")})
    rows = {"image": [Image.fromarray(astronaut)] * 3, "label": [4, 0, 5], "observer_agrees": [True, False, None]}
    datasets.Dataset.from_dict(rows, features=feats).to_parquet(str(photos / "validation-0000-of-0001.parquet"))
    table_path = tmp_path / "table.md"
    assert main(["compare", "--models", f"local-dir:{tiny_model}", f"local-dir:{tiny_model}", "--data",
                 str(ferplus_dir), "--max-samples", "64", "--photos", str(photos), "--out", str(table_path)]) == 0
    main_table, fer_recall, posed_recall = table_path.read_text().split("Recall per class")
    assert len([line for line in main_table.splitlines() if line.startswith("| tiny_model")]) == 2
    assert "macro-F1" in main_table and "posed, raters agree" in main_table
    # the photos' faces are also scored as other tools cut them: a tight 48 px crop and a loose unaligned one
    head = next(line for line in main_table.splitlines() if line.startswith("| model")).split(" | ")
    first = next(line for line in main_table.splitlines() if line.startswith("| tiny_model")).split(" | ")
    for name in ("posed, tight crops", "posed, loose crops"):
        assert first[head.index(name)].endswith("%")
    assert "posed photos whose raters agree" in posed_recall
    # the rater-disagreeing anger row is left out of the clean view: anger has no support there
    row = next(line for line in posed_recall.splitlines() if line.startswith("| tiny_model")).split(" | ")
    assert row[1 + LABELS.index("anger")] == "–" and row[1 + LABELS.index("happy")] != "–"
