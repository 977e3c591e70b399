"""key=value log lines, one per event, greppable."""
from __future__ import annotations

import logging
import sys
import time


class KeyValueFormatter(logging.Formatter):
    """ts=... level=... logger=... <message, itself key=value>."""

    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"
        line = f"ts={ts} level={record.levelname.lower()} logger={record.name} thread={record.threadName} {record.getMessage()}"
        if record.exc_info:
            exc = self.formatException(record.exc_info).replace("\n", "\\n")
            line += f" exc={exc!r}"
        return line


def setup(level: str = "INFO") -> None:
    """Configure the root logger once for the daemon and the command-line tools."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(KeyValueFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # librdkafka and paho are chatty at DEBUG; our own lines say what matters.
    for noisy in ("kafka", "urllib3", "waitress"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    # waitress warns once per request queued behind a busy pool: a burst of requests would flood the log.
    # Its warning when connection_limit is reached (once per episode) stays.
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)
