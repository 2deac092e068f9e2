"""How many threads one classification may use: ONNX Runtime's intra-op threads for every session made after
`set_threads`, and torch's where torch runs (the server and the batch runner size it per worker, so concurrent
predictions never oversubscribe the cores). Torch is never imported here: a process that serves in ONNX Runtime
must not load it."""
from __future__ import annotations

import contextlib
import os
import sys

CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
_threads: int | None = None  # None: every core (ONNX Runtime's and torch's own default on a machine like ours)


def set_threads(n: int) -> int:
    """Classify with `n` threads (at least 1) from now on; torch too, if it is already loaded. Returns `n`."""
    global _threads
    _threads = max(1, int(n))
    apply_to_torch()
    return _threads


def get_threads() -> int:
    """The thread count `set_threads` chose, else the number of cores this process may use."""
    return _threads or CORES


def apply_to_torch() -> None:
    """Gives a loaded torch the chosen thread count (the torch backend calls this when it loads torch later)."""
    torch = sys.modules.get("torch")
    if torch is None or _threads is None:
        return
    torch.set_num_threads(_threads)
    with contextlib.suppress(RuntimeError):  # only settable before torch's first parallel work
        torch.set_num_interop_threads(1)
