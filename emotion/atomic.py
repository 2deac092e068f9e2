"""Files replaced whole: written beside their final name, then renamed over it, so whoever reads the file (a server
loading model.onnx, a resumed run reading its manifest or its sweep) never sees half of one."""
from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Callable


def atomic_write(path: str | os.PathLike, write: Callable[[Path], object]) -> None:
    """`write(tmp)` fills `<path>.<random>.tmp`, which then replaces `path`. If `write` raises, the temporary file is
    removed and `path` is left as it was. Each call has its own temporary name, so two writers of one file (the
    processes of a multi-process training run sharing a face cache, two tools given the same --cache) never write
    into or rename away each other's: the last complete file wins."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        write(tmp)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)  # a file under the final name is always complete
