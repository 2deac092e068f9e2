"""Which server files a request may make us read: only what Gradio received for this server.

A Gradio event carries file references (`{"path": ...}`) that the client writes, so every path is checked here
before anything opens it: it must resolve (symlinks followed) inside Gradio's upload folder (GRADIO_TEMP_DIR, where
Gradio also keeps its copies of the shipped examples, which is how the UI sends them), be a
regular file (not a FIFO, a device or a directory, which would block or never end) and be at most
MAX_UPLOAD_BYTES. Checks use `stat` only, so they are safe on the event loop.
"""
from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any, Iterator

from gradio.utils import get_upload_folder

from emotion import EmotionError

from .service import MAX_UPLOAD_BYTES, check_upload_size

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
SEND_A_FILE = "upload the image (gradio_client: handle_file(\"photo.jpg\")); server paths are not accepted"


class ForbiddenFileError(EmotionError):
    """A file reference that this server did not receive: refused without opening it."""

    status = 400


def allowed_roots() -> list[Path]:
    """Gradio's upload/cache folder (GRADIO_TEMP_DIR, read per call as Gradio does)."""
    return [Path(os.path.realpath(get_upload_folder()))]


def check_file_ref(path: Any) -> Path:
    """The resolved path of an acceptable upload; ForbiddenFileError (or 413) for anything else. Never opens it."""
    if not isinstance(path, str) or not path or "\0" in path:
        raise ForbiddenFileError(f"a file reference must be the path Gradio returned for an upload: {SEND_A_FILE}")
    real = Path(os.path.realpath(path))
    if not any(real.is_relative_to(root) for root in allowed_roots()):
        raise ForbiddenFileError(f"this file was not uploaded to this server: {SEND_A_FILE}")
    try:
        info = os.stat(real)
    except OSError:
        raise ForbiddenFileError(f"the uploaded file is gone (uploads are deleted after a while): {SEND_A_FILE}") \
            from None
    if not stat.S_ISREG(info.st_mode):
        raise ForbiddenFileError(f"this is not an uploaded file: {SEND_A_FILE}")
    check_upload_size(info.st_size)
    return real


def read_upload(path: Any) -> bytes:
    """The bytes of an acceptable upload (see `check_file_ref`), re-checked on the open file itself."""
    real = check_file_ref(path)
    # O_NONBLOCK: if the file was swapped for a FIFO since the check, open() must not wait for a writer.
    fd = os.open(real, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0))
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(f.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise ForbiddenFileError(f"this is not an uploaded file: {SEND_A_FILE}")
        check_upload_size(info.st_size)
        return f.read(MAX_UPLOAD_BYTES + 1)


def file_refs(value: Any, depth: int = 0) -> Iterator[Any]:
    """Every `path` of a file-reference-like dict anywhere in a decoded JSON value (bounded depth)."""
    if depth > 32:
        raise ForbiddenFileError("the request is nested too deeply: send the event data Gradio's client sends")
    if isinstance(value, dict):
        if value.get("path") is not None:
            yield value["path"]
        for v in value.values():
            yield from file_refs(v, depth + 1)
    elif isinstance(value, list):
        for v in value:
            yield from file_refs(v, depth + 1)
