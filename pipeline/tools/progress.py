"""Progress of a long command (import, rebuild, retention, dead-letter replay, bench): a bar with the rate and
the time left on a terminal (tqdm), plain `key=value` lines when the output is a file or a pipe.

A log file gets no carriage return and no redrawn line: one `event=progress` line every `every_s` seconds and
one `event=progress_done` line at the end, so `grep` and log shippers see whole records.
"""
from __future__ import annotations

import sys
import threading
import time
from typing import Callable, TextIO

from tqdm import tqdm


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.1f}"
    text = str(value)
    return repr(text) if (" " in text or "=" in text or not text) else text


class Progress:
    """Counts work done toward an optional total; `update(n, **fields)` adds `n` and shows the extra fields."""

    def __init__(self, task: str, total: int | None = None, unit: str = "items", out: TextIO | None = None,
                 every_s: float = 5.0, tty: bool | None = None, clock=time.monotonic):
        self.task, self.total, self.unit = task, total, unit
        self.out = out if out is not None else sys.stderr
        self.tty = tty if tty is not None else bool(getattr(self.out, "isatty", lambda: False)())
        self.every_s, self.clock = every_s, clock
        self.done = 0
        self.fields: dict = {}
        self.started = self.logged = clock()
        self._closed = False
        self._bar = tqdm(total=total, unit=unit, desc=task, file=self.out, dynamic_ncols=True, mininterval=0.2,
                         unit_scale=True) if self.tty else None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def set_total(self, total: int | None) -> None:
        self.total = total
        if self._bar is not None:
            self._bar.total = total
            self._bar.refresh()

    def update(self, n: int = 0, **fields) -> None:
        """`n` more units done; `fields` (rows stored, bad lines ...) are shown beside the rate."""
        self.done += n
        self.fields.update(fields)
        if self._bar is not None:
            if fields:
                self._bar.set_postfix({k: v for k, v in self.fields.items()}, refresh=False)
            self._bar.update(n)
            return
        now = self.clock()
        if now - self.logged >= self.every_s:
            self.logged = now
            self._line("progress", now)

    def rate(self, now: float | None = None) -> float:
        elapsed = (now if now is not None else self.clock()) - self.started
        return self.done / elapsed if elapsed > 0 else 0.0

    def _line(self, event: str, now: float) -> None:
        rate = self.rate(now)
        parts = [f"event={event}", f"task={_fmt(self.task)}", f"done={self.done}"]
        if self.total is not None:
            parts.append(f"total={self.total}")
        parts += [f"unit={_fmt(self.unit)}", f"rate={rate:.1f}", f"elapsed_s={now - self.started:.1f}"]
        if event == "progress" and self.total is not None and rate > 0:
            parts.append(f"eta_s={max(0.0, (self.total - self.done) / rate):.1f}")
        parts += [f"{k}={_fmt(v)}" for k, v in self.fields.items()]
        self.out.write(" ".join(parts) + "\n")
        self.out.flush()

    def close(self) -> None:
        """The final figures: the bar completes, or one `event=progress_done` line."""
        if self._closed:
            return
        self._closed = True
        if self._bar is not None:
            self._bar.close()
        else:
            self._line("progress_done", self.clock())


class Ticking:
    """For work counted from outside (rows a benchmark sees stored): a thread sets `progress` from `poll()` ->
    (done so far, extra fields) every `interval` seconds until the block ends."""

    def __init__(self, progress: Progress, poll: Callable[[], tuple[int, dict]], interval: float = 1.0):
        self.progress, self.poll, self.interval = progress, poll, interval
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="progress", daemon=True)

    def __enter__(self) -> Ticking:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join(5)
        self._tick()

    def _tick(self) -> None:
        try:
            done, fields = self.poll()
        except Exception:  # noqa: BLE001 - a progress display never fails the work it shows
            return
        self.progress.update(max(0, done - self.progress.done), **fields)

    def _run(self) -> None:
        while not self.stop.wait(self.interval):
            self._tick()
