#!/usr/bin/env python3
"""The pipeline daemon: MQTT -> Kafka -> processing -> PostgreSQL and Redis Streams.

    python realtime_pipeline.py [--config PATH [--config PATH ...]] [--check-config] [--version]

Exit codes: 0 clean stop, 1 a thread failed or shutdown could not drain, 2 invalid configuration.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading

from pipeline import __version__
from pipeline.config import load_for_cli, redacted
from pipeline.observability import kvlog


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", action="append",
                   help="config file (default: config.yaml beside this script, or $PIPELINE_CONFIG); may repeat: "
                        "files deep-merge in order (`sources` append by name, other lists are replaced, later scalars win)")
    p.add_argument("--check-config", action="store_true",
                   help="validate the configuration, print it with secrets masked, and exit")
    p.add_argument("--version", action="version", version=f"realtime-pipeline {__version__}")
    return p.parse_args(argv)


# The shutdown bounds every step by processing.shutdown_timeout_s; this much later a backstop ends the
# process anyway, inside the documented bound of shutdown_timeout_s + 5 s.
BACKSTOP_GRACE_S = 4.0


def arm_backstop(seconds: float) -> None:
    """Exit 1 after `seconds` if the shutdown is still running (some call blocked in a way no step foresaw).
    Nothing is marked committed by exiting: uncommitted batches are redelivered at the next start."""
    def overran() -> None:
        logging.getLogger("pipeline").error("event=shutdown_overran after_s=%.1f note=exiting_without_waiting", seconds)
        for handler in logging.getLogger().handlers:
            handler.flush()
        os._exit(1)

    timer = threading.Timer(seconds, overran)
    timer.daemon = True
    timer.start()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    settings = load_for_cli(args.config)
    if args.check_config:
        # The effective configuration (file + environment), secrets masked: safe to paste into a ticket.
        print(f"config ok: {', '.join(settings.files)}")
        print(json.dumps(redacted(settings), indent=2, sort_keys=True))
        return 0
    kvlog.setup(settings.config.log_level)
    from pipeline.app import Pipeline  # heavy imports only when we really run
    from pipeline.app.instance_lock import AlreadyConsumed

    stop = threading.Event()

    def on_signal(signum, _frame):
        logging.getLogger("pipeline").info("event=signal signal=%s", signal.Signals(signum).name)
        if not stop.is_set():
            arm_backstop(settings.config.processing.shutdown_timeout_s + BACKSTOP_GRACE_S)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    pipeline = Pipeline(settings)
    # SIGHUP: reload config.yaml (thresholds and detection apply live; the reload runs in its own thread).
    signal.signal(signal.SIGHUP, lambda _signum, _frame: pipeline.config.request_reload())
    try:
        pipeline.start()
    except AlreadyConsumed as err:  # a configuration problem, not a failure: exit 2 like an invalid config
        logging.getLogger("pipeline").error("event=start_refused error=%r", str(err))
        print(f"start refused: {err}", file=sys.stderr)
        pipeline.stop()
        return 2
    except Exception as err:  # noqa: BLE001 - a start-up failure is reported in one line, then exit 1
        logging.getLogger("pipeline").error("event=start_failed error=%r", str(err)[:500])
        pipeline.stop()
        return 1
    return pipeline.wait(stop)


if __name__ == "__main__":
    sys.exit(main())
