"""Model sources (emotion/sources.py): the one parser behind every entry point, and shipped names that work in all."""
from pathlib import Path

import pytest
from PIL import Image

from conftest import needs_torch
from emotion.errors import EmotionError
from emotion.sources import DEFAULT_FILE, Source, model_id, parse, resolve, revision, shipped_models

SHIPPED = shipped_models()
needs_shipped = pytest.mark.skipif("small_cnn" not in SHIPPED or "resnet50" not in SHIPPED,
                                   reason="the shipped exports in models/ are not in this checkout")


@pytest.mark.parametrize("text, kind, location, rev, short", [
    ("hf-hub:org/name", "hf-hub:", "org/name", None, "org/name"),
    ("hf-hub:org/name@v1.2", "hf-hub:", "org/name", "v1.2", "org/name@v1.2"),
    ("  hf-hub:name  ", "hf-hub:", "name", None, "name"),
    ("local-dir:/a/b/", "local-dir:", "/a/b/", None, "b"),
    ("local-dir:relative/export", "local-dir:", "relative/export", None, "export"),
])
def test_parse_gives_kind_location_revision_and_short_id(text, kind, location, rev, short):
    src = parse(text)
    assert (src.kind, src.location, src.revision, src.id) == (kind, location, rev, short)
    assert parse(str(src)) == src and model_id(text) == short and revision(text) == rev


@pytest.mark.parametrize("text, words", [
    ("name", "ambiguous"), ("org/name", "ambiguous"), ("/path/to/export", "ambiguous"), ("", "ambiguous"),
    ("hf-hub:", "not a Hub repo"), ("hf-hub:org/name@", "not a Hub repo"), ("hf-hub:a/b/c", "not a Hub repo"),
    ("local-dir:", "names no folder"),
])
def test_malformed_or_ambiguous_sources_are_refused_naming_the_forms(text, words):
    with pytest.raises(EmotionError, match=words) as err:
        parse(text)
    if words == "ambiguous":
        assert "hf-hub:org/name" in str(err.value) and "local-dir:/path" in str(err.value)
        assert "shipped" in str(err.value)


@needs_shipped
@pytest.mark.parametrize("name", ["small_cnn", "resnet50"])
def test_a_shipped_name_is_its_local_dir_source(name):
    assert parse(name) == Source("local-dir:", str(Path(DEFAULT_FILE.parent / name)))
    assert resolve(name) == DEFAULT_FILE.parent / name and model_id(name) == name


@needs_shipped
def test_a_shipped_name_works_in_python_and_the_cli(astronaut, tmp_path, capsys):
    from emotion import Predictor
    from emotion.__main__ import main

    predictor = Predictor.from_pretrained("small_cnn")
    assert predictor.info.architecture == "small_cnn"
    photo = tmp_path / "astronaut.png"
    Image.fromarray(astronaut).save(photo)
    assert main(["predict", str(photo), "--model", "small_cnn"]) == 0
    assert capsys.readouterr().out.startswith(f"{photo}: face 1 at")


@needs_shipped
def test_a_shipped_name_in_emotion_model_is_the_servers_default(monkeypatch):
    from webapp.models import ModelRegistry

    monkeypatch.setenv("EMOTION_MODEL", "resnet50")
    monkeypatch.setenv("EMOTION_MODELS", "small_cnn")
    reg = ModelRegistry.from_env()
    assert reg.default == "resnet50" and list(reg.sources) == list(SHIPPED)  # no duplicates under other names
    monkeypatch.setenv("EMOTION_MODEL", "resnet5")  # a typo is still refused, naming the shipped names
    with pytest.raises(EmotionError, match="resnet50"):
        ModelRegistry.from_env()


@needs_shipped
@needs_torch
def test_the_trainer_accepts_a_shipped_name_as_starting_weights():
    from trainer.config import ConfigError, TrainConfig
    from trainer.modeling import _init_file

    assert _init_file(TrainConfig(init="small_cnn").init) == DEFAULT_FILE.parent / "small_cnn" / "model.safetensors"
    with pytest.raises(ConfigError, match="init"):
        TrainConfig(init="small_cnnn")
