"""Try a message against the configuration before deploying it: what would be stored, or why it is refused.

    python -m pipeline.tools.try_mapping --config config.yaml [--config deploy/formats/tasmota.yaml] \\
        TOPIC PAYLOAD_OR_@FILE [--json]

Runs the daemon's own pure stages (decode with every mapping of `sources:` and `processing.formats`, validate,
unit conversion) on one message and prints the readings that would be stored (sensor, metric, value and unit
after `units:`, event time), or each refusal with its reason (a mapping's refusal names the mapping). Touches
neither Kafka nor the stores. Exit status: 0 readings (or an ignored topic, or only skipped text), 1 refused,
2 invalid configuration or arguments.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from prometheus_client import CollectorRegistry

from ..app.build import build_pure_stages
from ..config import load_for_cli
from ..observability.metrics import Metrics
from ..records import RawMessage, Reading
from ..runtime.chain import StageChain
from ..stages.mapping_stats import MappingStats


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m pipeline.tools.try_mapping", description=__doc__.splitlines()[0])
    p.add_argument("--config", action="append", help="config file; may repeat (deep-merged in order, as the daemon does)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    p.add_argument("topic", help="the MQTT topic the message arrives on")
    p.add_argument("payload", help="the payload as text, or @FILE to read its bytes from a file")
    return p.parse_args(argv)


def _payload(arg: str) -> bytes:
    if arg.startswith("@"):
        try:
            return Path(arg[1:]).read_bytes()
        except OSError as err:
            print(f"cannot read {arg[1:]}: {err.strerror}", file=sys.stderr)
            raise SystemExit(2) from None
    return arg.encode("utf-8", "surrogateescape")


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


def run(settings, topic: str, payload: bytes) -> dict:
    """One message through the pure stages: {"readings", "refused", "mappings"} (the counts it moved)."""
    stats = MappingStats()
    chain = StageChain(build_pure_stages(settings, stats), Metrics(CollectorRegistry()))
    msg = RawMessage(topic, payload, time.time(), topic="try_mapping", partition=0, offset=0)
    records, letters = chain.run_batch([msg])
    readings = [{"sensor_id": r.sensor_id, "metric": r.metric, "value": r.value, "unit": r.unit,
                 "timestamp": _iso(r.ts), "type": r.sensor_type, "location": r.location}
                for r in records if isinstance(r, Reading)]
    others = [type(r).__name__ for r in records if not isinstance(r, Reading)]
    refused = [{"reason": d.reason, "stage": d.stage, "error": d.error, "refused": dict(d.refused)} for d in letters]
    touched = [m for m in stats.snapshot() if m["messages"] or m["ignored"]]
    return {"topic": topic, "readings": readings, "other_records": others, "refused": refused, "mappings": touched}


def _print_text(result: dict) -> None:
    for m in result["mappings"]:
        if m["ignored"]:
            what = "ignored (an `ignore` topic)"
        elif m["refused"]:
            what = "refused the payload"
        else:
            what = f"{m['readings']} reading(s), {m['text_skipped']} text value(s) skipped"
        print(f"mapping {m['name']}: {what}")
    if not result["mappings"] and (result["readings"] or result["refused"]):
        print("no mapping took the topic: built-in formats (processing.formats)")
    for r in result["readings"]:
        unit = f" {r['unit']}" if r["unit"] else ""
        print(f"reading sensor={r['sensor_id']} metric={r['metric']} value={r['value']:g}{unit} "
              f"timestamp={r['timestamp']} type={r['type']} location={r['location'] or '-'}")
    for kind in result["other_records"]:
        print(f"record {kind} (not a reading)")
    for d in result["refused"]:
        print(f"refused reason={d['reason']} stage={d['stage']}: {d['error']}")
    if not (result["readings"] or result["refused"] or result["other_records"]):
        print("nothing would be stored (and nothing is refused)")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    settings = load_for_cli(args.config)
    result = run(settings, args.topic, _payload(args.payload))
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        _print_text(result)
    return 1 if result["refused"] else 0


if __name__ == "__main__":
    sys.exit(main())
