"""A small cron matcher for maintenance windows: `minute hour day-of-month month day-of-week`, pure.

Each field takes `*`, a number, a range `a-b`, a step `*/n` or `a-b/n`, and lists of those (`1,15,30-35`).
Months and weekdays also take their English three-letter names (`jan`, `sun`); weekday 0 and 7 are Sunday.
As in cron, when both day fields are restricted a day matches if either does. Times are wall-clock times of
the given zone. `last_start(now, zone, horizon_s)` finds the latest matching minute at or before `now`, so a
window of `duration_s` is active when `now < last_start + duration_s`.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

MONTHS = {m: i for i, m in enumerate(("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov",
                                      "dec"), start=1)}
WEEKDAYS = {d: i for i, d in enumerate(("sun", "mon", "tue", "wed", "thu", "fri", "sat"))}
# (name, lowest, highest, names) per field, in order.
FIELDS = (("minute", 0, 59, {}), ("hour", 0, 23, {}), ("day of month", 1, 31, {}), ("month", 1, 12, MONTHS),
          ("day of week", 0, 7, WEEKDAYS))


class CronError(ValueError):
    """A cron expression that cannot be parsed; the message names the field."""


def _value(text: str, name: str, lo: int, hi: int, names: dict[str, int]) -> int:
    text = text.strip().lower()
    if text in names:
        return names[text]
    if not text.isdigit():
        raise CronError(f"{name}: {text!r} is not a number")
    value = int(text)
    if not lo <= value <= hi:
        raise CronError(f"{name}: {value} is outside {lo}-{hi}")
    return value


def _field(text: str, name: str, lo: int, hi: int, names: dict[str, int]) -> frozenset[int] | None:
    """The values a field allows, or None for `*` (any: it matters for the day-of-month/weekday rule)."""
    if text == "*":
        return None
    out: set[int] = set()
    for part in text.split(","):
        body, slash, step_text = part.partition("/")
        step = 1
        if slash:
            if not step_text.isdigit() or int(step_text) < 1:
                raise CronError(f"{name}: step {step_text!r} must be a positive number")
            step = int(step_text)
        if body == "*":
            first, last = lo, hi
        elif "-" in body:
            a, _, b = body.partition("-")
            first, last = _value(a, name, lo, hi, names), _value(b, name, lo, hi, names)
            if first > last:
                raise CronError(f"{name}: range {body!r} runs backwards")
        else:
            first = _value(body, name, lo, hi, names)
            last = hi if slash else first
        out.update(range(first, last + 1, step))
    return frozenset(out)


@dataclass(frozen=True)
class Cron:
    """A parsed cron expression; None in a field means any value."""

    minutes: frozenset[int] | None
    hours: frozenset[int] | None
    days: frozenset[int] | None
    months: frozenset[int] | None
    weekdays: frozenset[int] | None  # 0 = Sunday (7 folded into 0)

    @classmethod
    def parse(cls, text: str) -> "Cron":
        parts = text.split()
        if len(parts) != 5:
            raise CronError(f"expected 5 fields (minute hour day-of-month month day-of-week), got {len(parts)}")
        fields = [_field(p, *spec) for p, spec in zip(parts, FIELDS)]
        weekdays = fields[4]
        if weekdays is not None:
            weekdays = frozenset(d % 7 for d in weekdays)
        return cls(fields[0], fields[1], fields[2], fields[3], weekdays)

    def day_matches(self, day: date) -> bool:
        if self.months is not None and day.month not in self.months:
            return False
        dom = self.days is None or day.day in self.days
        dow = self.weekdays is None or (day.isoweekday() % 7) in self.weekdays
        if self.days is not None and self.weekdays is not None:
            return dom or dow  # cron: either restricted day field may match
        return dom and dow

    def matches(self, moment: datetime) -> bool:
        """True if the minute of `moment` (wall-clock) matches."""
        return (self.day_matches(moment.date()) and (self.hours is None or moment.hour in self.hours)
                and (self.minutes is None or moment.minute in self.minutes))

    def last_start(self, now: float, zone: ZoneInfo, horizon_s: float) -> float | None:
        """Epoch seconds of the latest matching minute at or before `now`, looking back at most `horizon_s`;
        None if there is none in that span."""
        local_now = datetime.fromtimestamp(now, zone)
        earliest = now - horizon_s
        hours = sorted(self.hours if self.hours is not None else range(24), reverse=True)
        minutes = sorted(self.minutes if self.minutes is not None else range(60), reverse=True)
        day = local_now.date()
        # A window starts at most horizon_s ago: one day more covers zone offsets and DST changes.
        for _ in range(int(horizon_s // 86400) + 2):
            if self.day_matches(day):
                for h in hours:
                    for m in minutes:
                        start = datetime(day.year, day.month, day.day, h, m, tzinfo=zone).timestamp()
                        if start <= now:
                            return start if start >= earliest else None
            day -= timedelta(days=1)
            if datetime(day.year, day.month, day.day, 23, 59, tzinfo=zone).timestamp() < earliest:
                return None
        return None
