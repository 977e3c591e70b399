"""Progress of long commands: plain key=value lines (no carriage return) when not on a terminal, a tqdm bar with
rate and time left on one, and the commands use it."""
import io

from pipeline.tools.progress import Progress, Ticking


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


class Tty(io.StringIO):
    def isatty(self):
        return True


def test_off_a_terminal_lines_every_interval_and_one_at_the_end_without_carriage_returns():
    out, clock = io.StringIO(), Clock()
    with Progress("import", 1000, "rows", out=out, every_s=5, clock=clock) as p:
        for _ in range(10):
            clock.t += 1
            p.update(100, stored=p.done + 100, file="a b.csv")
    text = out.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    assert lines[0] == "event=progress task=import done=500 total=1000 unit=rows rate=100.0 elapsed_s=5.0 eta_s=5.0 " \
                       "stored=500 file='a b.csv'"
    assert lines[-1].startswith("event=progress_done task=import done=1000 total=1000 unit=rows rate=100.0")
    assert len(lines) == 3  # at 5 s, at 10 s, and the end


def test_on_a_terminal_a_bar_with_rate_and_time_left():
    out = Tty()
    p = Progress("rebuild", 200, "windows", out=out)
    p.update(50, rows=7)
    p.close()
    text = out.getvalue()
    assert "rebuild:  25%" in text and "50.0/200" in text and "rows=7" in text
    assert "windows/s" in text or "s/windows" in text
    assert "event=" not in text


def test_ticking_sets_progress_from_a_count_kept_elsewhere():
    out = io.StringIO()
    seen = [0]
    p = Progress("bench", 100, "readings", out=out)
    with Ticking(p, lambda: (seen[0], {"lag": 3}), interval=0.01):
        seen[0] = 40
    assert p.done == 40 and p.fields == {"lag": 3}


def test_the_long_commands_report_through_it():
    import importlib
    import inspect

    for name in ("pipeline.tools.import", "pipeline.tools.rebuild", "pipeline.tools.retention", "pipeline.tools.dlq",
                 "pipeline.tools.bench.__main__"):
        source = inspect.getsource(importlib.import_module(name))
        assert "Progress(" in source, name
