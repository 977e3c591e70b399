"""The evaluation's result as plain text tables (Markdown, so they paste into docs/processing.md)."""
from __future__ import annotations

from typing import Sequence

from .scoring import ANY, Target


def _pct(v: float | None) -> str:
    return "—" if v is None else f"{100 * v:.1f} %"


def _s(v: float | None) -> str:
    return "—" if v is None else f"{v:g} s"


def render(meta: dict, result: dict, checks: Sequence[Target]) -> str:
    """Header, recall and delay per anomaly kind and detector, alerts per detector, the targets."""
    lines = [f"command: {meta['command']}", f"date: {meta['date']}  machine: {meta['machine']}",
             f"sensor-hours: {result['sensor_hours']:g} (normal data: {result['normal_sensor_hours']:g}); "
             f"anomalies: {result['anomalies']}; alerts: {result['alerts']}; tolerance: {result['tolerance_s']:g} s; "
             f"reporting interval: {meta['interval_s']:g} s; readings lost on the way: {meta.get('readings_lost', 0)}",
             "", "| anomaly | n | detector | caught | recall | delay median | delay p95 |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for kind, k in result["kinds"].items():
        for det, row in k["by"].items():
            if det != ANY and row["caught"] == 0:
                continue
            name = "**any**" if det == ANY else det
            lines.append(f"| {kind} | {k['count']} | {name} | {row['caught']} | {_pct(row['recall'])} | "
                         f"{_s(row['delay_median_s'])} | {_s(row['delay_p95_s'])} |")
    lines += ["", "| detector | alerts | matched | precision | false | false per 100 sensor-h |",
              "| --- | --- | --- | --- | --- | --- |"]
    for det, row in result["detectors"].items():
        lines.append(f"| {det} | {row['alerts']} | {row['matched']} | {_pct(row['precision'])} | {row['false']} | "
                     f"{'—' if row['false_per_100h'] is None else row['false_per_100h']} |")
    lines.append(f"| **all** | {result['alerts']} | {result['alerts'] - result['false_alerts']} | "
                 f"{_pct(result['precision'])} | {result['false_alerts']} | "
                 f"{'—' if result['false_per_100h'] is None else result['false_per_100h']} |")
    lines += ["", "| target | limit | measured | met |", "| --- | --- | --- | --- |"]
    lines += [f"| {c.name} | {c.limit} | {c.measured} | {'yes' if c.met else '**no**'} |" for c in checks]
    return "\n".join(lines)
