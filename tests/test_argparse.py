"""Every command line refuses abbreviations: `--epoch 3` must not quietly mean `--epochs 3`."""
from __future__ import annotations

import argparse

import pytest


def parsers(parser: argparse.ArgumentParser):
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from parsers(sub)


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


@pytest.mark.parametrize("module", ["emotion.__main__", "trainer.__main__"])
def test_no_parser_allows_abbreviations(module):
    import importlib

    for parser in parsers(importlib.import_module(module).build_parser()):
        assert parser.allow_abbrev is False, parser.prog
