"""Keeping the stored history in shape: partitions made ahead and on demand (partitions.py), retention by whole
partitions and in short batches (retention.py), the `sensors` insert shared by its writers (sensor_rows.py).
Rebuilding `aggregations` from `measurements` lives beside the window operator (operators/windows/rebuild.py).
The daemon runs the first two on timers; their command-line tools are in pipeline/tools/."""
