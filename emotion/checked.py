"""Model files are read only when their sha256 is the one the repo records (emotion/assets/README.md)."""
from __future__ import annotations

import hashlib
from pathlib import Path

from .errors import EmotionError


def read_checked(path: Path, sha256: str, restore: str) -> bytes:
    """`path`'s bytes, refused unless their sha256 is `sha256`; `restore` says how to put the right file back."""
    try:
        data = path.read_bytes()
    except OSError as e:
        why = "it is missing" if isinstance(e, FileNotFoundError) else e.strerror or str(e)
        raise EmotionError(f"cannot read the model file {path} ({why}): {restore}") from None
    digest = hashlib.sha256(data).hexdigest()
    if digest != sha256:
        raise EmotionError(f"{path} has sha256 {digest}, not {sha256} (sha256 differs): restore the file: {restore}")
    return data
