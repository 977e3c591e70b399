"""Is the local Mosquitto running with its default queue limit? One line with the fix if so.

`python -m pipeline.tools.broker_limits [--port 1883]` (scripts/run.sh calls it before starting the daemon)
prints a warning when a Mosquitto on this machine serves the port with `max_queued_messages` unset or at its
default of 1000: beyond that the broker drops messages for the pipeline's session while it is behind or
restarting. A broker's running limits cannot be asked over MQTT, so the configuration file the process was
started with (`-c`, from /proc/<pid>/cmdline) and the `include_dir` files it names are read. Silent when
nothing can be found out (no local Mosquitto, an unreadable file): this is advice, not a gate.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

DEFAULT_MAX_QUEUED = 1000
MQTT_PORT = 1883
FIX = ("mosquitto -c deploy/mosquitto.conf (it requires logins and TLS files: docs/operations.md, \"Securing the broker\"), or add "
       "`max_queued_messages 100000` to its config and restart it")


def parse_conf(text: str) -> list[tuple[str, list[str]]]:
    """Mosquitto config lines as (option, arguments), comments and blank lines left out."""
    out = []
    for line in text.splitlines():
        words = line.split()
        if words and not words[0].startswith("#"):
            out.append((words[0], words[1:]))
    return out


def expand(path: str, read=lambda p: Path(p).read_text(), list_dir=os.listdir) -> list[tuple[str, list[str]]]:
    """A config file's options in the order Mosquitto applies them, `include_dir` files (*.conf, sorted) in place."""
    out = []
    for option, args in parse_conf(read(path)):
        if option == "include_dir" and args:
            for name in sorted(n for n in list_dir(args[0]) if n.endswith(".conf")):
                out.extend(parse_conf(read(os.path.join(args[0], name))))
        else:
            out.append((option, args))
    return out


def max_queued(options: list[tuple[str, list[str]]]) -> int:
    """The effective max_queued_messages (the last one given wins; 0 means unlimited)."""
    value = DEFAULT_MAX_QUEUED
    for option, args in options:
        if option == "max_queued_messages" and args and args[0].isdigit():
            value = int(args[0])
    return value


def ports(options: list[tuple[str, list[str]]]) -> set[int]:
    """The ports the broker listens on; without any listener Mosquitto 2 serves 1883 on localhost only."""
    found = {int(args[0]) for option, args in options if option in ("listener", "port") and args and args[0].isdigit()}
    return found or {MQTT_PORT}


def config_arg(cmdline: list[str]) -> str | None:
    """The -c / --config-file argument of a mosquitto command line."""
    for flag, value in zip(cmdline, cmdline[1:]):
        if flag in ("-c", "--config-file"):
            return value
    return None


def warning(port: int, cmdlines: list[tuple[list[str], str]], read=lambda p: Path(p).read_text(),
            list_dir=os.listdir) -> str | None:
    """The one-line warning for the Mosquitto serving `port`, if its queue limit is the default. `cmdlines`:
    (argv, working directory) of each running mosquitto. Several claiming the port (network namespaces,
    containers): only when none of them has a raised limit, since which one answers is not known here."""
    low = []
    for argv, cwd in cmdlines:
        conf = config_arg(argv)
        try:
            options = expand(os.path.join(cwd, conf), read, list_dir) if conf else []
        except OSError:
            return None  # a config we cannot read: no advice rather than a wrong one
        if port not in ports(options):
            continue
        limit = max_queued(options)
        if not 0 < limit <= DEFAULT_MAX_QUEUED:
            return None
        low.append((conf or "no config file", limit))
    if not low:
        return None
    where, limit = low[0]
    return (f"warning: the Mosquitto on port {port} ({where}) queues at most {limit} messages per client and "
            f"drops the rest while the pipeline is behind or restarting; fix: {FIX}")


def running_mosquittos(proc: str = "/proc") -> list[tuple[list[str], str]]:
    """(argv, cwd) of every mosquitto process this user can see."""
    out = []
    for pid in filter(str.isdigit, os.listdir(proc)):
        try:
            argv = Path(proc, pid, "cmdline").read_bytes().decode(errors="replace").split("\0")
            if os.path.basename(argv[0]) != "mosquitto":
                continue
            cwd = os.readlink(os.path.join(proc, pid, "cwd"))
        except OSError:
            continue
        out.append(([a for a in argv if a], cwd))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=MQTT_PORT)
    line = warning(parser.parse_args().port, running_mosquittos())
    if line:
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
