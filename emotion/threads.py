"""How many threads one classification may use: ONNX Runtime's intra-op threads for every session made after
`set_threads`, and torch's where torch runs (the server and the batch runner size it per worker, so concurrent
predictions never oversubscribe the cores). Torch is never imported here: a process that serves in ONNX Runtime
must not load it.

While no other prediction is in flight (`in_flight` counts them: the server's inference pool marks each one), a
prediction's ONNX Runtime steps (YuNet's passes, BlazeFace's views, the classifier's batch) run on `wide_threads()`,
the cores the process's predictions share (`set_threads(n, budget)`), and a large JPEG's finer decode starts on a
spare core while the search runs (emotion/faces.py). A lone request gets every core; two at once get a worker's
share each, as before.
"""
from __future__ import annotations

import contextlib
import os
import sys
import threading
from typing import Callable, Iterator

CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
_threads: int | None = None  # None: every core (ONNX Runtime's and torch's own default on a machine like ours)
_budget: int | None = None  # the cores all of this process's predictions share (None: one worker's share)
_flight = 0  # predictions in flight (`in_flight`)
_flight_lock = threading.Lock()
_depth = threading.local()


def set_threads(n: int, budget: int | None = None) -> int:
    """Classify with `n` threads (at least 1) from now on; torch too, if it is already loaded. Returns `n`.

    `budget`: the cores every prediction of this process shares (the server: all of them, split between its workers);
    a lone prediction's ONNX Runtime steps may use them all (`wide_threads`). None: `n` (a batch worker process, one
    of several, never widens)."""
    global _threads, _budget
    _threads = max(1, int(n))
    _budget = None if budget is None else max(_threads, int(budget))
    apply_to_torch()
    return _threads


def get_threads() -> int:
    """The thread count `set_threads` chose, else the number of cores this process may use."""
    return _threads or CORES


def wide_threads() -> int:
    """Threads for an ONNX Runtime step now: the process's budget while at most one prediction is in flight
    (this one), else one worker's share (`get_threads`)."""
    share = get_threads()
    return (_budget or share) if _flight <= 1 else share


@contextlib.contextmanager
def in_flight() -> Iterator[None]:
    """Marks a prediction running on this thread for `wide_threads` (nested marks count once)."""
    global _flight
    depth = getattr(_depth, "n", 0)
    _depth.n = depth + 1
    if depth == 0:
        with _flight_lock:
            _flight += 1
    try:
        yield
    finally:
        _depth.n = depth
        if depth == 0:
            with _flight_lock:
                _flight -= 1


def apply_to_torch() -> None:
    """Gives a loaded torch the chosen thread count (the torch backend calls this when it loads torch later)."""
    torch = sys.modules.get("torch")
    if torch is None or _threads is None:
        return
    torch.set_num_threads(_threads)
    with contextlib.suppress(RuntimeError):  # only settable before torch's first parallel work
        torch.set_num_interop_threads(1)


class Sessions:
    """ONNX Runtime sessions of one model by intra-op thread count, each made on first use (safe to share between
    threads): one on a worker's share, one on `wide_threads()` while a prediction runs alone.

    Args:
        model: returns the model's bytes (called once per thread count).
        quiet: log errors only (a model whose declared output sizes differ from the ones it runs at).
    """

    def __init__(self, model: Callable[[], bytes], quiet: bool = False):
        self.model, self.quiet = model, quiet
        self._sessions: dict[int, object] = {}
        self._lock = threading.Lock()

    def get(self, threads: int):
        """The session running on `threads` intra-op threads."""
        session = self._sessions.get(threads)
        return session if session is not None else self._load(threads)

    def _load(self, threads: int):
        with self._lock:
            if threads not in self._sessions:
                import onnxruntime as ort

                options = ort.SessionOptions()
                options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
                if threads > 1:  # its threads stop spinning when a run ends: a request that starts then has the core
                    options.add_session_config_entry("session.force_spinning_stop", "1")
                if self.quiet:
                    options.log_severity_level = 3
                self._sessions[threads] = ort.InferenceSession(self.model(), options,
                                                               providers=["CPUExecutionProvider"])
        return self._sessions[threads]
