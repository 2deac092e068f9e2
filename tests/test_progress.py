"""Progress off a terminal (CI logs, nohup files): whole lines every EMOTION_PROGRESS_SECONDS, no carriage returns."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from conftest import NEEDS_TORCH
from emotion.__main__ import main
from test_video import write_clip

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def every_update(monkeypatch):
    """A progress line on every update, so a few items show the lines a long run writes every minute."""
    monkeypatch.setenv("EMOTION_PROGRESS_SECONDS", "0")


def test_training_logged_to_a_file_has_plain_progress_lines(tmp_path):
    pytest.importorskip("torch", reason=f"training {NEEDS_TORCH}")
    from test_trainer import write_bars

    data = write_bars(tmp_path / "bars", train_per_class=4, val_per_class=1)  # 32 faces: 4 steps of 8
    log = tmp_path / "train.log"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_DATASETS_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1",
           "OMP_NUM_THREADS": "1", "EMOTION_PROGRESS_SECONDS": "0"}
    env.pop("HF_DATASETS_DISABLE_PROGRESS_BARS", None)
    with open(log, "w") as f:
        done = subprocess.run([sys.executable, "-m", "trainer", "--data", str(data), "--img-size", "16", "--epochs",
                               "1", "--batch-size", "8", "--workers", "0", "--output-dir", str(tmp_path / "run")],
                              cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT, timeout=300)
    text = log.read_bytes().decode()  # read_text() would turn carriage returns into newlines
    assert done.returncode == 0, text[-3000:]
    assert "\r" not in text
    lines = [s for s in text.splitlines() if "epoch 1/1: step " in s]
    assert len(lines) == 4, text  # one a step here (every 60 s by default), the last at the epoch's end
    assert re.search(r"epoch 1/1: step 4/4  [\d.]+ step/s  loss=\d\.\d{3}  lr=\S+  img_s=\d+$", lines[-1]), text


def test_predicting_a_folder_off_a_terminal_writes_lines_not_a_bar(tmp_path, tiny_model, capsys, every_update):
    for name in ("a.png", "b.png", "c.png"):
        Image.new("RGB", (64, 64), "gray").save(tmp_path / name)
    assert main(["predict", str(tmp_path), "--model", f"local-dir:{tiny_model}"]) == 0
    out, err = capsys.readouterr()
    assert "\r" not in err and "\r" not in out
    assert [s.split(" ", 1)[1].split("  ")[0] for s in err.splitlines()] == [f"predicting: img {i}/3" for i in (1, 2, 3)]
    assert out.count("no face") == 3  # the results still go to stdout, one line per image


def test_predict_dataset_off_a_terminal_writes_lines_not_a_bar(tmp_path, tiny_model, capsys, every_update):
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("a.png", "b.png"):
        Image.new("RGB", (64, 64), "gray").save(photos / name)
    assert main(["predict-dataset", str(photos), "--output", str(tmp_path / "out"), "--model",
                 f"local-dir:{tiny_model}", "--shard-size", "1"]) == 0
    err = capsys.readouterr().err
    assert "\r" not in err
    assert re.search(r"predicting: img 2/2  [\d.]+ img/s", err), err


def test_video_off_a_terminal_writes_lines_not_a_bar(tmp_path, tiny_model, capsys, every_update):
    clip = write_clip(tmp_path / "grey.mp4", [Image.new("RGB", (64, 48), (120, 120, 120))] * 5)
    assert main(["predict", str(clip), "--model", f"local-dir:{tiny_model}"]) == 0
    err = capsys.readouterr().err
    assert "\r" not in err
    assert re.search(r"analysing grey\.mp4: frame 5(/5)?  ", err), err
