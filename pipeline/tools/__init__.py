"""Command-line tools, each `python -m pipeline.tools.<name>`: dlq (list and replay dead letters), simulate (a
device fleet), bench (the benchmark and its measurements), broker_limits (is the local Mosquitto's queue limit
the default?). The daemon is `python realtime_pipeline.py`; retention is `python -m pipeline.retention`."""
