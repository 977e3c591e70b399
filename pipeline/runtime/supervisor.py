"""The supervisor: starts every thread of the daemon, keeps a named handle for each, surfaces their errors.

A crash in a supervised thread (or an exception a library callback hands to `report`) is stored, never
lost; the daemon's wait loop sees it and shuts down. Threads are joined through their handles, each
against what is left of the one shutdown deadline (runtime/deadline.py).
"""
from __future__ import annotations

import logging
import threading
from typing import Callable, Iterable, Protocol

from .deadline import Deadline
from .threadname import name_os_thread

log = logging.getLogger(__name__)


class Failures:
    """Where threads (and library callbacks) put exceptions they could not handle."""

    def __init__(self):
        self._lock = threading.Lock()
        self._errors: list[tuple[str, BaseException]] = []
        self._event = threading.Event()

    def report(self, where: str, err: BaseException) -> None:
        with self._lock:
            self._errors.append((where, err))
        self._event.set()

    def first(self) -> tuple[str, BaseException] | None:
        with self._lock:
            return self._errors[0] if self._errors else None

    def all(self) -> list[tuple[str, BaseException]]:
        """Every failure so far, oldest first (a copy)."""
        with self._lock:
            return list(self._errors)

    def wait(self, timeout: float) -> bool:
        """True as soon as a failure is reported, False after `timeout` seconds without one."""
        return self._event.wait(timeout)

    def any(self) -> bool:
        return self._event.is_set()


class Handle:
    """One supervised thread: its name, whether it runs, and joining it."""

    def __init__(self, name: str, target: Callable[[], None], failures: Failures,
                 on_exit: Callable[[str], None] | None = None):
        self.name = name
        self._target = target
        self._failures = failures
        self._on_exit = on_exit
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        name_os_thread(self.name)
        try:
            self._target()
        except BaseException as err:  # noqa: BLE001 - reported to the supervisor, which exits non-zero
            log.exception("event=thread_crashed thread=%s", self.name)
            self._failures.report(self.name, err)
        finally:
            if self._on_exit is not None:
                self._on_exit(self.name)

    @property
    def ident(self) -> int | None:
        return self._thread.ident

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not threading.current_thread() and self._thread.ident is not None:
            self._thread.join(timeout)


class Spawn(Protocol):
    """What a component that runs a thread is given: start `target` as a thread named `name`."""

    def __call__(self, name: str, target: Callable[[], None]) -> "Handle | threading.Thread": ...


def plain_thread(name: str, target: Callable[[], None]) -> threading.Thread:
    """The spawn function outside a supervisor (a library user, a test): a started daemon thread."""
    thread = threading.Thread(target=target, name=name, daemon=True)
    thread.start()
    return thread


class Supervisor:
    """Starts threads (`spawn`), holds their handles, reports their failures and liveness."""

    def __init__(self, alive_gauge=None):
        self._failures = Failures()
        self._alive = alive_gauge  # pipeline_thread_alive{thread}, if given
        self._handles: list[Handle] = []
        self._lock = threading.Lock()

    def spawn(self, name: str, target: Callable[[], None]) -> Handle:
        """Start `target()` in a thread named `name`; its exception is reported, never lost."""
        handle = Handle(name, target, self._failures, on_exit=self._exited)
        with self._lock:
            self._handles.append(handle)
        if self._alive is not None:
            self._alive.labels(name).set(1)
        handle.start()
        return handle

    def _exited(self, name: str) -> None:
        if self._alive is not None:
            self._alive.labels(name).set(0)

    def report(self, where: str, err: BaseException) -> None:
        """For library callback threads: store an error they could not handle."""
        self._failures.report(where, err)

    def join(self, handles: Iterable[Handle | threading.Thread | None], deadline: Deadline, reserve: float = 0.0) -> None:
        """Join `handles` in order, each until the deadline less `reserve`."""
        for handle in handles:
            if handle is not None:
                handle.join(deadline.left(reserve))

    # -- status -------------------------------------------------------------------------------
    def handles(self) -> list[Handle]:
        with self._lock:
            return list(self._handles)

    def names(self) -> list[str]:
        return [h.name for h in self.handles()]

    def liveness(self) -> dict[str, bool]:
        """Thread name -> alive, for every thread started."""
        return {h.name: h.is_alive() for h in self.handles()}

    def dead(self) -> list[str]:
        return [h.name for h in self.handles() if not h.is_alive()]

    def failures(self) -> list[tuple[str, BaseException]]:
        return self._failures.all()

    def first_failure(self) -> tuple[str, BaseException] | None:
        return self._failures.first()

    def wait_failure(self, timeout: float) -> bool:
        return self._failures.wait(timeout)

    def healthy(self) -> bool:
        return not self._failures.any() and not self.dead()
