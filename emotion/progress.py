"""Progress for long loops: a tqdm bar on a terminal, one plain line every minute or so anywhere else.

A tqdm bar redraws itself with carriage returns; in a CI log or a `nohup` file those become "0/31"-style fragments
glued together on one line. When stderr is not a terminal, `progress()` returns `LineProgress` instead: the same
`update` / `set_postfix` / `write` / `close` calls, printing a whole line at most every `EMOTION_PROGRESS_SECONDS`
(default 60) and one when the loop ends.
"""
from __future__ import annotations

import os
import sys
import time
from typing import IO, Any, Iterable, Iterator

ENV_INTERVAL = "EMOTION_PROGRESS_SECONDS"
DEFAULT_INTERVAL = 60.0


def interval_s() -> float:
    """Seconds between the plain progress lines: EMOTION_PROGRESS_SECONDS, else 60."""
    try:
        return max(0.0, float(os.environ.get(ENV_INTERVAL, DEFAULT_INTERVAL)))
    except ValueError:
        return DEFAULT_INTERVAL


class LineProgress:
    """tqdm's interface for the calls this project makes, writing one complete line per report."""

    def __init__(self, iterable: Iterable | None = None, total: int | None = None, initial: int = 0, desc: str = "",
                 unit: str = "it", file: IO[str] | None = None, disable: bool = False, every: float | None = None):
        if total is None and hasattr(iterable, "__len__"):
            total = len(iterable)  # as tqdm does
        self.iterable, self.total, self.n, self.desc, self.unit = iterable, total, initial, desc, unit
        self.file, self.disable = file or sys.stderr, disable
        self.every = interval_s() if every is None else every
        self.postfix: dict[str, Any] = {}
        self._start_n, self._t0 = initial, time.perf_counter()
        self._last_t, self._last_n = self._t0, initial

    def __iter__(self) -> Iterator:
        for item in self.iterable:
            yield item
            self.update(1)

    def __len__(self) -> int:
        return self.total if self.total is not None else len(self.iterable)

    def due(self) -> bool:
        """True when the next `update(1)` writes a line (the interval is up, or it completes the total)."""
        last = self.total is not None and self.n + 1 >= self.total
        return last or time.perf_counter() - self._last_t >= self.every

    def update(self, n: int = 1) -> None:
        self.n += n
        if time.perf_counter() - self._last_t >= self.every:
            self._report()

    def set_postfix(self, **values: Any) -> None:
        self.postfix = values

    @staticmethod
    def write(text: str, file: IO[str] | None = None) -> None:
        """Like `tqdm.write`: a line to `file`, stdout by default (results, not progress)."""
        print(text, file=file or sys.stdout, flush=True)

    def close(self) -> None:
        if self.n != self._last_n:  # the end of the loop gets its line, unless one was just written
            self._report()

    def _report(self) -> None:
        now = time.perf_counter()
        self._last_t, self._last_n = now, self.n
        if self.disable:
            return
        of = f"/{self.total}" if self.total is not None else ""
        rate = (self.n - self._start_n) / max(now - self._t0, 1e-9)
        extra = "".join(f"  {k}={v}" for k, v in self.postfix.items())
        desc = f"{self.desc}: " if self.desc else ""
        self.write(f"{time.strftime('%H:%M:%S')} {desc}{self.unit} {self.n}{of}  {rate:.1f} {self.unit}/s{extra}",
                   self.file)


def line_due(bar) -> bool:
    """True when `bar` is a `LineProgress` about to write a line: compute a costly postfix (a loss that waits for the
    GPU) then, not on every step."""
    return isinstance(bar, LineProgress) and bar.due()


def progress(iterable: Iterable | None = None, *, total: int | None = None, initial: int = 0, desc: str = "",
             unit: str = "it", disable: bool = False, leave: bool = True, file: IO[str] | None = None):
    """A tqdm bar when `file` (stderr by default) is a terminal, else a `LineProgress` with the same calls."""
    file = file or sys.stderr
    if getattr(file, "isatty", lambda: False)():
        from tqdm import tqdm

        return tqdm(iterable, total=total, initial=initial, desc=desc, unit=unit, file=file, disable=disable,
                    leave=leave, mininterval=1.0)
    return LineProgress(iterable, total=total, initial=initial, desc=desc, unit=unit, file=file, disable=disable)
