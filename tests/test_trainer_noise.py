"""What a failed or unattended training run leaves behind: no empty runs/* folders."""
from __future__ import annotations

import pytest

from conftest import NEEDS_TORCH

pytest.importorskip("torch", reason=f"the trainer {NEEDS_TORCH}")

from trainer.__main__ import main  # noqa: E402


def test_a_run_that_fails_on_its_data_leaves_no_folder(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = main(["train", "--config", str(__import__("trainer").__path__[0] + "/configs/small_cnn.yaml"),
                 "--data", str(tmp_path / "no-such-data"), "--output-dir", "runs/attempt"])
    assert code == 2 and capsys.readouterr().err.startswith("error: ")
    assert not (tmp_path / "runs").exists()


def test_a_failed_run_keeps_a_folder_that_was_already_there(tmp_path, capsys):
    out = tmp_path / "runs" / "mine"
    out.mkdir(parents=True)
    (out / "notes.txt").write_text("mine")
    config = __import__("trainer").__path__[0] + "/configs/small_cnn.yaml"
    assert main(["train", "--config", config, "--data", str(tmp_path / "nope"), "--output-dir", str(out)]) == 2
    assert (out / "notes.txt").read_text() == "mine"
