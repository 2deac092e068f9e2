"""Bounded inference: a few worker threads shared by REST and the UI, and the classifier's threads sized to match.

On a small shared CPU, one intra-op thread per core (torch's and ONNX Runtime's default) plus concurrent requests
oversubscribes the cores: with a second busy process on a 2-core machine a ~10 ms prediction took 200-400 ms. So
`workers` threads run predictions (EMOTION_WORKERS), each with cores // workers classifier threads, and at most
workers + queue requests (EMOTION_QUEUE) are admitted at once; the next one is answered 503 with Retry-After instead
of waiting. A request is admitted only once its body is complete and decoded (bodies still arriving are bounded by
`bodies.BodyReaders`), so slow uploads cannot hold these places.
"""
from __future__ import annotations

import asyncio
import contextlib
import contextvars
import ctypes
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Iterator

from emotion import EmotionError
from emotion.threads import CORES, in_flight, set_threads

log = logging.getLogger(__name__)

RETRY_AFTER_S = 2


class ServerBusyError(EmotionError):
    """Every inference slot and queue place is taken: the caller should retry after `retry_after` seconds."""

    status = 503
    retry_after = RETRY_AFTER_S


def configure_threads(workers: int) -> int:
    """One share of the cores per worker (at least 1 thread) for every classifier loaded after this (ONNX Runtime,
    and torch where it serves), so concurrent predictions never oversubscribe; a lone prediction's ONNX Runtime
    steps may use every core (`emotion.threads.wide_threads`: the pool marks each prediction in flight)."""
    return set_threads(max(1, CORES // workers), budget=CORES)


def _marked(fn: Callable[..., Any], *args: Any) -> Any:
    """`fn(*args)`, counted as a prediction in flight while it runs."""
    with in_flight():
        return fn(*args)


def _release_free_memory() -> None:
    """Hands freed heap back to the OS (glibc keeps big freed blocks of a decoded photo otherwise)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


class InferencePool:
    """`workers` threads for predictions; `admit()` reserves one of workers + queue places or raises
    ServerBusyError (503)."""

    def __init__(self, workers: int, queue: int):
        self.workers, self.capacity = workers, workers + queue
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix="inference")
        self._lock = threading.Lock()
        self._admitted = 0

    @contextlib.contextmanager
    def admit(self) -> Iterator[None]:
        """Holds one of workers + queue places while a complete request is decoded and predicted."""
        with self._lock:
            if self._admitted >= self.capacity:
                raise ServerBusyError(f"the server is busy ({self.capacity} requests in progress): retry in "
                                      f"{RETRY_AFTER_S} s")
            self._admitted += 1
        try:
            yield
        finally:
            with self._lock:
                self._admitted -= 1
                idle = self._admitted == 0
            if idle:
                _release_free_memory()

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """`fn(*args)` on a worker thread, awaited from the event loop."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, _marked, fn, *args)

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """`fn(*args)` on a worker thread, waited for from another thread (a Gradio handler).

        It runs in a copy of the caller's context, where Gradio keeps the event (so gr.Progress works there)."""
        return self._executor.submit(contextvars.copy_context().run, _marked, fn, *args).result()

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
