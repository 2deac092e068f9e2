"""Which server files a request may make us read: only what Gradio received for this server.

A Gradio event carries file references (`{"path": ...}`) that the client writes, so every path is checked here
before anything opens it: it must resolve (symlinks followed) inside Gradio's upload folder (GRADIO_TEMP_DIR, where
Gradio also keeps its copies of the shipped examples, which is how the UI sends them), be a
regular file (not a FIFO, a device or a directory, which would block or never end) and be no larger than its kind
takes (a photo EMOTION_MAX_UPLOAD_BYTES; any file the page's limit, `Settings.max_file_bytes`). Checks use `stat`
only, so they are safe on the event loop.
"""
from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any, BinaryIO, Iterator

from gradio.utils import get_upload_folder

from emotion import EmotionError, ImageTooLargeError

from .service import check_upload_size, megabytes
from .settings import current

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
SEND_A_FILE = "upload the image (gradio_client: handle_file(\"photo.jpg\")); server paths are not accepted"
COPY_CHUNK = 1 << 20  # bytes per read when an upload is copied (a video is never held in memory whole)


class ForbiddenFileError(EmotionError):
    """A file reference that this server did not receive: refused without opening it."""

    status = 400


def allowed_roots() -> list[Path]:
    """Gradio's upload/cache folder (GRADIO_TEMP_DIR, read per call as Gradio does)."""
    return [Path(os.path.realpath(get_upload_folder()))]


def check_file_ref(path: Any, limit: int | None = None) -> Path:
    """The resolved path of an acceptable upload of at most `limit` bytes (default: a photo's limit);
    ForbiddenFileError (or 413) for anything else. Never opens it."""
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
    _check_size(info.st_size, limit)
    return real


def read_upload(path: Any) -> bytes:
    """The bytes of an acceptable photo upload (see `check_file_ref`), re-checked on the open file itself."""
    with _open_upload(path, None) as f:
        return f.read(current().max_upload_bytes + 1)


def copy_upload(path: Any, dest: BinaryIO, limit: int) -> int:
    """Copies an acceptable upload of at most `limit` bytes (see `check_file_ref`) into `dest`, a chunk at a time
    (memory stays flat for a large video); returns its size. ImageTooLargeError if it grows past `limit`."""
    size = 0
    with _open_upload(path, limit) as f:
        while chunk := f.read(COPY_CHUNK):
            size += len(chunk)
            _check_size(size, limit)
            dest.write(chunk)
    return size


def _open_upload(path: Any, limit: int | None) -> BinaryIO:
    """The open file of an acceptable upload, re-checked on the file itself (a regular file within `limit`)."""
    real = check_file_ref(path, limit)
    # O_NONBLOCK: if the file was swapped for a FIFO since the check, open() must not wait for a writer.
    fd = os.open(real, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0))
    f = os.fdopen(fd, "rb")
    try:
        info = os.fstat(f.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise ForbiddenFileError(f"this is not an uploaded file: {SEND_A_FILE}")
        _check_size(info.st_size, limit)
    except BaseException:
        f.close()
        raise
    return f


def _check_size(size: int, limit: int | None) -> None:
    """A photo's limit (with its advice) when `limit` is None, else `limit`."""
    if limit is None:
        check_upload_size(size)
    elif size > limit:
        raise ImageTooLargeError(f"the upload is {megabytes(size)}, above the limit of {megabytes(limit)}: send a "
                                 "smaller file")


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
