"""Every command line refuses abbreviations: `--epoch 3` must not quietly mean `--epochs 3`."""
from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from conftest import needs_torch


def parsers(parser: argparse.ArgumentParser):
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from parsers(sub)


@needs_torch
def test_trainer_refuses_an_abbreviated_option(capsys):
    from trainer.__main__ import main

    with pytest.raises(SystemExit) as e:
        main(["train", "--config", "trainer/configs/small_cnn.yaml", "--epoch", "3"])
    assert e.value.code == 2 and "--epoch" in capsys.readouterr().err


def test_emotion_refuses_an_abbreviated_option(capsys):
    from emotion.__main__ import main

    with pytest.raises(SystemExit) as e:
        main(["predict", "photo.jpg", "--max-face", "3"])
    assert e.value.code == 2 and "--max-face" in capsys.readouterr().err


@pytest.mark.parametrize("module", ["emotion.__main__", pytest.param("trainer.__main__", marks=needs_torch)])
def test_no_parser_allows_abbreviations(module):
    import importlib

    for parser in parsers(importlib.import_module(module).build_parser()):
        assert parser.allow_abbrev is False, parser.prog


@needs_torch
def test_every_trainer_option_has_a_description():
    """`python -m trainer train --help` describes every option (generated from TrainConfig's field comments)."""
    from trainer.__main__ import build_parser

    for parser in parsers(build_parser()):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                continue
            assert action.help and action.help.strip() and not action.help.startswith("[default"), \
                f"{parser.prog} {'/'.join(action.option_strings) or action.dest} has no description"


@needs_torch
def test_train_help_shows_the_config_comment_and_default(capsys):
    from trainer.__main__ import main

    with pytest.raises(SystemExit) as e:
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    assert e.value.code == 0
    assert "--epochs EPOCHS passes over the training data [default: 30]" in text
    assert "--ema-decay EMA_DECAY keep an exponential moving average of the weights" in text


@needs_torch
def test_a_list_option_takes_comma_separated_values_of_its_type():
    from trainer.__main__ import build_parser
    from trainer.config import ConfigError, resolve_config

    cfg = resolve_config(build_parser().parse_args(["train", "--interpolate-grid", "0.5,0.75,1"]))
    assert cfg.interpolate_grid == [0.5, 0.75, 1.0]
    with pytest.raises(ConfigError, match="interpolate_grid"):
        resolve_config(build_parser().parse_args(["train", "--interpolate-grid", "0.5,x"]))


@pytest.mark.parametrize("path", sorted((Path(__file__).parents[1] / "trainer" / "configs").glob("*.yaml")),
                         ids=lambda p: p.name)
def test_every_shipped_config_parses(path):
    """A config in trainer/configs names only known fields with valid values (the README points users at them)."""
    from trainer.config import resolve_config

    cfg = resolve_config(argparse.Namespace(config=str(path)))
    assert cfg.output_dir.startswith("runs/")
