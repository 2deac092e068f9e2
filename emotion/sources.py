"""Where a model comes from: the one owner of the source format.

A source is `hf-hub:org/name[@revision]`, `local-dir:/path`, or the name of a shipped model (`small_cnn`, `resnet50`,
...), which stands for `local-dir:<its folder>`: in a checkout (or an editable install) every export in the repo's
models/ folder; after `pip install .`, the default model alone, copied into the package at build time (setup.py). Anything else is ambiguous and
refused with a message naming the forms (timm's rule). Every entry point (Python, CLI, REST, UI, trainer) parses
through `parse`, so a name that works in one works in all.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path, PurePath

from .errors import EmotionError
from .info import CONFIG_NAME, INT8_NAME, ONNX_NAME, WEIGHTS_NAME

HUB, LOCAL = "hf-hub:", "local-dir:"
PREFIXES = (HUB, LOCAL)
REPO_MODELS = Path(__file__).resolve().parent.parent / "models"  # the exports shipped with the repo
PACKAGED_MODELS = Path(str(resources.files(__package__) / "models_data"))  # the default alone, in a built wheel
# A checkout's models/ (marked by its DEFAULT file: site-packages may hold some other "models" folder) wins.
MODELS_DIR = REPO_MODELS if (REPO_MODELS / "DEFAULT").is_file() else PACKAGED_MODELS
DEFAULT_FILE = MODELS_DIR / "DEFAULT"  # names the shipped model used when none is asked for
# What a Hub model's folder needs: model.onnx and model.int8.onnx too, so a Hub model is served as a shipped one is.
HUB_FILES = [CONFIG_NAME, WEIGHTS_NAME, ONNX_NAME, INT8_NAME, "*.json", "*.md", "*.png"]
_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")


@dataclass(frozen=True)
class Source:
    """A parsed source. `location` is the Hub repo id or the local path; `revision` only for the Hub."""

    kind: str  # HUB or LOCAL
    location: str
    revision: str | None = None

    def __str__(self) -> str:
        return f"{self.kind}{self.location}" + (f"@{self.revision}" if self.revision else "")

    @property
    def id(self) -> str:
        """A short name: hf-hub:org/name@rev -> 'org/name@rev', local-dir:/a/b -> 'b'."""
        if self.kind == HUB:
            return self.location + (f"@{self.revision}" if self.revision else "")
        return PurePath(self.location.rstrip("/")).name or self.location


def shipped_models() -> dict[str, str]:
    """The shipped exports (the repo's models/, or the package's copy of the default), by name -> `local-dir:` source."""
    if not MODELS_DIR.is_dir():
        return {}
    return {p.name: f"{LOCAL}{p}" for p in sorted(MODELS_DIR.iterdir()) if (p / CONFIG_NAME).is_file()}


def _ambiguous(text: str, what: str) -> EmotionError:
    names = ", ".join(shipped_models()) or "none in this checkout"
    return EmotionError(f"ambiguous {what} {text!r}: write hf-hub:org/name[@revision] for the Hub, "
                        f"local-dir:/path/to/folder for a local export, or a shipped model's name ({names})")


def parse(source: str | os.PathLike | Source, what: str = "model source") -> Source:
    """`hf-hub:org/name[@rev]`, `local-dir:/path` or a shipped model's name -> Source; EmotionError otherwise."""
    if isinstance(source, Source):
        return source
    text = str(source).strip()
    shipped = shipped_models()
    if text in shipped:
        text = shipped[text]
    if text.startswith(LOCAL):
        path = text[len(LOCAL):]
        if not path:
            raise EmotionError(f"{what} {text!r} names no folder: write local-dir:/path/to/folder")
        return Source(LOCAL, path)
    if text.startswith(HUB):
        repo_id, at, rev = text[len(HUB):].partition("@")
        if not _REPO_ID.fullmatch(repo_id) or (at and not rev):
            raise EmotionError(f"{what} {text!r} is not a Hub repo: write hf-hub:org/name or hf-hub:org/name@revision")
        return Source(HUB, repo_id, rev or None)
    raise _ambiguous(text, what)


def model_id(source: str | Source) -> str:
    """The short name of a source (see `Source.id`)."""
    return parse(source).id


def revision(source: str | Source) -> str | None:
    """The pinned revision of a Hub source (`@rev`), None when unpinned or local."""
    return parse(source).revision


def default_source() -> str:
    """EMOTION_MODEL if set (any form `parse` accepts), else the shipped model named in models/DEFAULT."""
    env = os.environ.get("EMOTION_MODEL", "").strip()
    return str(parse(env, "EMOTION_MODEL")) if env else shipped_default()


def shipped_default() -> str:
    """The shipped model named in models/DEFAULT (else the first shipped one); EmotionError when none is shipped."""
    shipped = shipped_models()
    name = DEFAULT_FILE.read_text().strip() if DEFAULT_FILE.is_file() else next(iter(shipped), None)
    if name not in shipped:
        raise EmotionError("no model given and none shipped with this install: pass a source such as "
                           "local-dir:/path or hf-hub:org/name, or set EMOTION_MODEL")
    return shipped[name]


def _hub_error(source: Source, e: Exception) -> EmotionError:
    return EmotionError(f"could not fetch {str(source)!r} from the Hugging Face Hub ({type(e).__name__}); check the "
                        "repo id and your network, or download it once and use local-dir:/path")


def resolve(source: str | os.PathLike | Source) -> Path:
    """The local folder holding the source's config.json (downloaded from the Hub, once, when it is a Hub source)."""
    src = parse(source)
    if src.kind == LOCAL:
        path = Path(src.location).expanduser()
        if not (path / CONFIG_NAME).is_file():
            raise EmotionError(f"{str(src)!r}: no {CONFIG_NAME} in {path}; "
                               "point local-dir: at an exported model folder")
        return path
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        return Path(snapshot_download(src.location, revision=src.revision, allow_patterns=HUB_FILES))
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError, ValueError) as e:
        raise _hub_error(src, e) from None


def resolve_weights(source: str | os.PathLike | Source) -> Path:
    """The safetensors file of a source: its folder's model.safetensors, or a `local-dir:` path to a .safetensors
    file itself (starting weights for training need no config.json)."""
    src = parse(source, "weights source")
    if src.kind == HUB:
        from huggingface_hub import hf_hub_download

        try:
            return Path(hf_hub_download(src.location, WEIGHTS_NAME, revision=src.revision))
        except Exception as e:  # offline, missing repo or file: one line naming the way out
            raise _hub_error(src, e) from None
    path = Path(src.location).expanduser()
    path = path / WEIGHTS_NAME if path.is_dir() else path
    if not path.is_file() or path.suffix != ".safetensors":
        raise EmotionError(f"{str(src)}: no safetensors file at {path}; give a folder holding {WEIGHTS_NAME} "
                           "or a .safetensors file")
    return path
