"""The probe `make run` uses to warn about a Mosquitto with its default queue limit: its config files read
through fakes."""
from __future__ import annotations

from pipeline.tools import broker_limits as bl


FILES = {
    "/etc/mosquitto/mosquitto.conf": "pid_file /run/m.pid\n# max_queued_messages 5\nlistener 1883 127.0.0.1\n"
                                     "include_dir /etc/mosquitto/conf.d\n",
    "/etc/mosquitto/conf.d/a.conf": "max_queued_messages 500\n",
    "/etc/mosquitto/conf.d/b.conf": "max_queued_messages 200000\n",
    "/etc/mosquitto/conf.d/notes.txt": "max_queued_messages 1\n",
    "/srv/pipeline/deploy/mosquitto.conf": "max_inflight_messages 1000\nmax_queued_messages 1000000\n",
    "/tmp/t/own.conf": "listener 18830 127.0.0.1\nmax_queued_messages 10\n",
}


def read(path):
    try:
        return FILES[path]
    except KeyError:
        raise FileNotFoundError(path) from None


def list_dir(path):
    return [p.rsplit("/", 1)[1] for p in FILES if p.rsplit("/", 1)[0] == path]


def test_config_parsing_follows_include_dir_and_the_last_value_wins():
    options = bl.expand("/etc/mosquitto/mosquitto.conf", read, list_dir)
    assert bl.max_queued(options) == 200000  # b.conf after a.conf; notes.txt is not a .conf file
    assert bl.ports(options) == {1883}
    assert bl.max_queued(bl.parse_conf("# max_queued_messages 5\n")) == 1000  # unset: the default
    assert bl.ports(bl.parse_conf("persistence true\n")) == {1883}  # no listener: local only, 1883
    assert bl.config_arg(["mosquitto", "-d", "-c", "x.conf"]) == "x.conf" and bl.config_arg(["mosquitto"]) is None


def test_probe_warns_in_one_line_for_a_default_limit_on_the_port():
    FILES["/etc/mosquitto/conf.d/b.conf"] = "max_queued_messages 1000\n"
    try:
        line = bl.warning(1883, [(["mosquitto", "-d", "-c", "/etc/mosquitto/mosquitto.conf"], "/")], read, list_dir)
    finally:
        FILES["/etc/mosquitto/conf.d/b.conf"] = "max_queued_messages 200000\n"
    assert line is not None and "\n" not in line
    assert "1000" in line and "mosquitto -c deploy/mosquitto.conf" in line and "max_queued_messages 100000" in line
    # No config file at all: the defaults.
    assert "no config file" in bl.warning(1883, [(["mosquitto"], "/")], read, list_dir)


def test_probe_is_silent_for_a_raised_limit_another_port_or_an_unreadable_config():
    ok = [(["mosquitto", "-c", "deploy/mosquitto.conf"], "/srv/pipeline")]  # relative to the process's directory
    assert bl.warning(1883, ok, read, list_dir) is None
    assert bl.warning(1883, [(["mosquitto", "-c", "/etc/mosquitto/mosquitto.conf"], "/")], read, list_dir) is None
    assert bl.warning(1883, [(["mosquitto", "-c", "/tmp/t/own.conf"], "/")], read, list_dir) is None  # a test's broker
    assert bl.warning(1883, [(["mosquitto", "-c", "/missing.conf"], "/")], read, list_dir) is None
    assert bl.warning(1883, [], read, list_dir) is None
