"""How many threads one classification may use: ONNX Runtime's intra-op threads for every session made after
`set_threads`, and torch's where torch runs (the server and the batch runner size it per worker, so concurrent
predictions never oversubscribe the cores). Torch is never imported here: a process that serves in ONNX Runtime
must not load it.

While no other prediction is in flight (`in_flight` counts them: the server's inference pool marks each one), a
prediction's ONNX Runtime steps (YuNet's passes, BlazeFace's views, the classifier's batch) run on `wide_threads()`,
the cores the process's predictions share (`set_threads(n, budget)`), and a large JPEG's finer decode starts on a
spare core while the search runs (emotion/faces.py). A lone request gets every core; two at once get a worker's
share each, as before.

"Every core" is `CORES`: the process's CPU affinity capped by its cgroup's CPU quota (`usable_cores`), so that a
container on a larger host (a Space's 2 vCPU) sizes its threads by what it may use, not by the host's cores.
"""
from __future__ import annotations

import contextlib
import math
import os
import sys
import threading
from pathlib import Path
from typing import Callable, Iterator

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_CGROUP = Path("/proc/self/cgroup")  # this process's cgroup in each hierarchy


def usable_cores(cgroup_root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP) -> int:
    """The cores this process may keep busy: its CPU affinity, capped by a cgroup CPU quota rounded down (at least
    1). A container limited by quota (a Hugging Face Space's 2 vCPU on a larger host, a Kubernetes CPU limit) sees
    every core of its host in its affinity and `os.cpu_count()`; threads sized by those would queue on the quota."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    quota = cgroup_cpu_quota(cgroup_root, proc_cgroup)
    return cores if quota is None else max(1, min(cores, math.floor(quota)))


def cgroup_cpu_quota(cgroup_root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP) -> float | None:
    """The CPU quota, in cores, of this process's cgroup and the cgroups above it (the smallest), from cgroup v2's
    cpu.max ("200000 100000": 2 cores; "max ...": none) or v1's cpu.cfs_quota_us / cpu.cfs_period_us (-1: none);
    None where no quota is set or none can be read."""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return None
    quotas = []
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if controllers == "":  # cgroup v2: one hierarchy, mounted at the root
            quotas += _quotas(cgroup_root, path, _v2_quota)
        elif "cpu" in controllers.split(","):  # cgroup v1: the cpu controller's own hierarchy
            names = (controllers, "cpu", "cpu,cpuacct")
            mounts = [cgroup_root / name for name in names if (cgroup_root / name).is_dir()]
            if mounts:
                quotas += _quotas(mounts[0], path, _v1_quota)
    return min(quotas) if quotas else None


def _quotas(mount: Path, path: str, read: Callable[[Path], float | None]) -> list[float]:
    """The quotas `read` finds in the cgroup folder `path` under `mount` and each folder above it."""
    out = []
    folder = mount / path.strip("/")
    while True:
        quota = read(folder)
        if quota is not None:
            out.append(quota)
        if folder == mount or mount not in folder.parents:
            return out
        folder = folder.parent


def _v2_quota(folder: Path) -> float | None:
    try:
        limit, period = (folder / "cpu.max").read_text().split()[:2]
        return None if limit == "max" else int(limit) / int(period)
    except (OSError, ValueError, ZeroDivisionError):
        return None


def _v1_quota(folder: Path) -> float | None:
    try:
        quota = int((folder / "cpu.cfs_quota_us").read_text())
        period = int((folder / "cpu.cfs_period_us").read_text())
        return None if quota <= 0 or period <= 0 else quota / period
    except (OSError, ValueError):
        return None


CORES = usable_cores()
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
