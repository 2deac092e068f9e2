"""Build hook: the default model ships inside the package, so `pip install .` predicts with no model argument.

pyproject.toml holds everything else. The repo keeps one copy of each export, in models/; at build time the one
models/DEFAULT names (~5 MB) is copied to emotion/models_data/<name>/ with DEFAULT beside it, where
emotion/sources.py looks when there is no models/ folder next to the package (the other exports load by --model).
An editable install skips the copy: it finds models/ itself.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.command.sdist import sdist

ROOT = Path(__file__).resolve().parent
MODELS = ROOT / "models"
PACKAGED = Path("emotion") / "models_data"  # inside the built package; emotion/sources.py's PACKAGED_MODELS


def default_model_files() -> list[Path]:
    """models/DEFAULT and every file of the export it names, relative to the repo root."""
    name = (MODELS / "DEFAULT").read_text().strip()
    folder = MODELS / name
    if not (folder / "config.json").is_file():
        raise SystemExit(f"models/DEFAULT names {name!r}, but models/{name}/config.json is missing: "
                         "name an exported model folder")
    files = [MODELS / "DEFAULT"] + sorted(p for p in folder.rglob("*") if p.is_file())
    return [p.relative_to(ROOT) for p in files]


class BuildPyWithDefaultModel(build_py):
    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return
        # build/ is reused between builds: a model that was the default before must not stay in the package
        shutil.rmtree(Path(self.build_lib) / PACKAGED, ignore_errors=True)
        for rel in default_model_files():
            target = Path(self.build_lib) / PACKAGED / rel.relative_to("models")
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, target)


class SdistWithDefaultModel(sdist):
    """The source archive carries the default model too, so a wheel built from it (`python -m build`) has it."""

    def make_release_tree(self, base_dir, files):
        super().make_release_tree(base_dir, files)
        for rel in default_model_files():
            target = Path(base_dir) / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, target)


setup(cmdclass={"build_py": BuildPyWithDefaultModel, "sdist": SdistWithDefaultModel})
