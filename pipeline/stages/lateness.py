"""Lateness stage: readings too late for their window are dead-lettered before they are stored."""
from __future__ import annotations

from ..records import Invalid, Reading
from ..runtime.stage import RecordStage, Refused


class LateFilter(RecordStage):
    """Stage: a reading older than its partition's watermark minus `max_lateness_s` is refused as `late`.

    The watermark here is the highest event time this stage has seen on the partition minus the grace;
    it starts unknown (nothing is late until the partition has shown a reading).
    """

    name = "lateness"
    accepts = Reading  # log records share the chain but have no windows

    def __init__(self, grace_s: float, max_lateness_s: float):
        self.grace_s = grace_s
        self.max_lateness_s = max_lateness_s
        self.high: dict[int, float] = {}

    def process_batch(self, items: list, refused: Refused) -> list:
        """`process` over the batch, inline: one partition's readings mostly come in order, so nearly every
        reading costs a dict look-up and a comparison. A message's readings share one event time (the same
        object): after the first, the partition's highest time is at least that time (grace and lateness are
        not negative), so the others get the first's verdict without asking (passed, or late again)."""
        out: list = []
        append = out.append
        high = self.high
        last_source = last_ts = None
        late = False  # the verdict of the last reading
        for r in items:
            source, ts = r.source, r.ts
            if source is last_source and ts is last_ts and source is not None:
                if late:
                    refused.add(r, self._late(ts, high[source.partition]))
                else:
                    append(r)
                continue
            last_source, last_ts = source, ts
            partition = source.partition if source is not None else -1
            top = high.get(partition)
            late = False
            if top is None or ts > top:
                high[partition] = ts
            elif ts < top - self.grace_s - self.max_lateness_s:
                late = True
                refused.add(r, self._late(ts, top))
                continue
            append(r)
        return out

    def _late(self, ts: float, high: float) -> Invalid:
        watermark = high - self.grace_s
        return Invalid("late", f"event time {ts:.3f} is {watermark - ts:.0f} s behind the partition watermark "
                               f"{watermark:.3f} (limit {self.max_lateness_s:g} s)")

    def process(self, r: Reading) -> list[Reading]:
        partition = r.source.partition if r.source is not None else -1
        high = self.high.get(partition)
        if high is None or r.ts > high:
            self.high[partition] = r.ts
            return [r]
        watermark = high - self.grace_s
        if r.ts < watermark - self.max_lateness_s:
            raise self._late(r.ts, high)
        return [r]
