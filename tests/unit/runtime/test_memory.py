"""Freed memory given back to the system: malloc_trim fenced in runtime/memory.py, rate-limited, debounced."""
from __future__ import annotations

import threading

import pytest

from pipeline.runtime import memory


def test_trim_runs_at_most_every_min_every_s_unless_forced(monkeypatch):
    calls = []
    monkeypatch.setattr(memory, "_malloc_trim", lambda pad: calls.append(pad) or 1)
    monkeypatch.setattr(memory, "_last", -float("inf"))
    clock = iter([100.0, 100.5, 101.5, 101.6]).__next__
    assert memory.trim(clock=clock) is True
    assert memory.trim(clock=clock) is False  # 0.5 s later
    assert memory.trim(clock=clock) is True  # 1.5 s later
    assert memory.trim(clock=clock, force=True) is True
    assert calls == [0, 0, 0]


def test_without_glibc_nothing_is_trimmed(monkeypatch):
    monkeypatch.setattr(memory, "_malloc_trim", None)
    assert memory.available() is False and memory.trim(force=True) is False
    memory.released(10 ** 6, "test")  # no timer, no error


def test_a_large_release_trims_once_after_the_last_of_several(monkeypatch):
    if memory._timer is not None:  # another test's large release (a window closing) asked for a trim: not ours
        memory._timer.cancel()
    monkeypatch.setattr(memory, "_timer", None)
    done = threading.Event()
    calls = []
    monkeypatch.setattr(memory, "_malloc_trim", lambda pad: calls.append(pad) or done.set() or 1)
    monkeypatch.setattr(memory, "SETTLE_S", 0.2)
    memory.released(memory.RELEASED_FROM - 1, "small")  # too few: nothing asked
    assert memory._timer is None or not memory._timer.is_alive()
    memory.released(memory.RELEASED_FROM, "limits")
    memory.released(memory.RELEASED_FROM * 10, "windows")  # within SETTLE_S: the first one's trim is put off
    assert done.wait(5)
    memory._timer.join(5)
    assert calls == [0]


@pytest.mark.skipif(not memory.available(), reason="glibc only")
def test_the_real_malloc_trim_is_callable():
    assert memory.trim(force=True) is True
