"""Command-line tools, each `python -m pipeline.tools.<name>`: dlq (list and replay dead letters), retention (a
retention pass, or --dry-run), rebuild (aggregations from measurements), simulate (a device fleet), bench (the
benchmark and its measurements), broker_limits (is the local Mosquitto's queue limit the default?), try_mapping (one
message through the configured mappings and stages: what would be stored, or why not). The daemon
is `python realtime_pipeline.py`, migrations `python migrations.py`, the host agent `python -m pipeline.agents.system`."""
