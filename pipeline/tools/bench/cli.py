"""The benchmark's command line (python -m pipeline.tools.bench --help)."""
from __future__ import annotations

import argparse

from . import dialects

FLEET = {"sensors": 20_000, "rate": 2000.0, "readings_per_message": 3, "duration": 90.0}  # 60,000 series, 6,000 readings/s


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pipeline.tools.bench", description=description)
    p.add_argument("--rate", type=float, default=10000, help="offered messages per second (default 10000)")
    p.add_argument("--duration", type=float, default=60, help="seconds of load per level (default 60)")
    p.add_argument("--readings-per-message", type=int, choices=(1, 3), default=1)
    p.add_argument("--sensors", type=int, default=1000, help="simulated devices (default 1000)")
    p.add_argument("--publishers", type=int, default=1, help="load generator processes (default 1)")
    p.add_argument("--partitions", type=int, default=4)
    p.add_argument("--instances", type=int, default=1,
                   help="daemons in one consumer group on one MQTT shared subscription (the scale-out path)")
    p.add_argument("--mqtt-protocol", choices=("3.1.1", "5"), default="3.1.1")
    p.add_argument("--mqtt-port", type=int, default=0, help="use a running broker on this port instead of our own")
    p.add_argument("--find-max", action="store_true", help="step the rate up until loss or unbounded lag")
    p.add_argument("--max-rate", type=float, default=100000, help="upper bound for --find-max")
    p.add_argument("--step", type=float, default=1.25, help="rate multiplier between --find-max levels")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a daemon setting, e.g. kafka.linger_ms=2")
    p.add_argument("--floor", action="store_true",
                   help="also drive the bare path (floor.py) at the first rate: overhead_ratio = daemon / bare CPU per message")
    p.add_argument("--peer", choices=("quix",), help="also run a peer (Quix Streams) over the first level's topic, beside "
                                                      "the daemon's consuming half on the same data")
    p.add_argument("--dialect", action="append", choices=sorted(set(dialects.DIALECTS) - {"native"}),
                   help="after the native JSON level, one level of this dialect's payloads through its recipe at the "
                        "same rate: cost per reading against native JSON (repeatable)")
    p.add_argument("--suite", action="store_true", help="every ratio target in one run (what `make bench` runs; "
                                                         "see pipeline/tools/bench/suite.py)")
    p.add_argument("--max-duration", type=float, default=30, help="seconds per level while --suite steps the rate up")
    p.add_argument("--fleet", action="store_true", help="a large fleet at a modest rate: " + " ".join(
        f"--{k.replace('_', '-')} {v:g}" for k, v in FLEET.items()) + " (a minute's windows of 60,000 series closing)")
    p.add_argument("--flood-series", type=int, metavar="N",
                   help="instead: a flood of N new series (N/50 sensors x 50 metrics) into a fresh daemon, its RSS "
                        "before, at the peak, per series and after limits.state_idle_s (pipeline/tools/bench/flood.py)")
    p.add_argument("--fresh-broker", action="store_true",
                   help="start a Kafka-protocol broker (tansu) of our own and start it again, empty, before each level: "
                        "the development broker slows as it holds more (pipeline/tools/bench/broker.py)")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.add_argument("--keep", action="store_true", help="keep the database, topics and workdir afterwards")
    return p
