"""MediaPipe task objects, closed safely: on a thread of their own, never inside another MediaPipe call, and with
what their C++ writes to stderr hidden unless this module logs at DEBUG (the Face Landmarker: emotion/action_units.py).
"""
from __future__ import annotations

import atexit
import contextlib
import logging
import os
import queue
import sys
import threading

logger = logging.getLogger(__name__)


_TO_CLOSE: queue.SimpleQueue = queue.SimpleQueue()  # (close function, its argument) for the closer thread


def close_later(close, tasks) -> None:
    """Close MediaPipe task objects on the closer thread, never on the caller's. For weakref finalizers: the garbage
    collector may run one in the middle of a MediaPipe call on this very thread, and closing there re-enters
    MediaPipe's dispatcher (a thread pool's non-reentrant lock) and deadlocks (seen: a test hung for good inside
    FaceDetector.detect). `SimpleQueue.put` is reentrant, made for finalizers; at exit, `_close_queued` closes
    what is still queued, on the main thread."""
    _TO_CLOSE.put((close, tasks))


def _closer() -> None:
    while True:
        close, tasks = _TO_CLOSE.get()
        with contextlib.suppress(Exception):  # a task already closed, or MediaPipe shutting down at exit
            close(tasks)


@atexit.register
def _close_queued() -> None:  # registered before any finalizer's own exit hook, so it runs after them (LIFO)
    while not _TO_CLOSE.empty():
        close, tasks = _TO_CLOSE.get_nowait()
        with contextlib.suppress(Exception):
            close(tasks)


threading.Thread(target=_closer, name="mediapipe-closer", daemon=True).start()


@contextlib.contextmanager
def native_stderr_quiet():
    """Hides what MediaPipe's C++ (LiteRT, XNNPACK, absl) writes straight to file descriptor 2 meanwhile.

    Those INFO lines and warnings bypass Python's logging and interleave with progress bars. They show when this
    module logs at DEBUG (`--verbose` on the command line). Only task creation, its first run and its closing
    are wrapped: fd 2 is process-wide, so other threads' stderr is hidden too for those few milliseconds.
    """
    if logger.isEnabledFor(logging.DEBUG):
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no fd 2 (some embedded interpreters): nothing to hide
        yield
        return
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.close(devnull)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
