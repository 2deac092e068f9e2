"""MediaPipe task objects (the Face Landmarker) are closed on the closer thread, never inside a caller's call."""
from __future__ import annotations

import threading
import time
import weakref

from emotion.mediapipe_tasks import close_later


def test_a_finalised_owner_closes_its_tasks_on_the_closer_thread_not_on_the_thread_that_drops_it():
    """MediaPipe's dispatcher keeps frames of its calls, so an owner of tasks may be finalised during a later
    MediaPipe call, on that caller's thread, inside the dispatcher's non-reentrant lock. Closing there deadlocked
    (a full test run hung for good). The finaliser hands the close to the closer thread."""
    closed_on: list[str] = []

    class Task:
        def close(self):
            closed_on.append(threading.current_thread().name)

    class Owner:  # as ActionUnitReader holds its landmarkers
        def __init__(self):
            self.tasks = [Task(), Task()]
            weakref.finalize(self, close_later, lambda tasks: [t.close() for t in tasks], self.tasks)

    owner = Owner()
    del owner  # finalised here, on this thread
    deadline = time.monotonic() + 30
    while len(closed_on) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert closed_on == ["mediapipe-closer"] * 2
