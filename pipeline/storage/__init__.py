"""Keeping the stored history in shape: partitions made ahead and on demand (partitions.py), retention by whole
partitions and in short batches (retention.py), and rebuilding `aggregations` from `measurements` (rebuild.py).
The daemon runs the first two on timers; their command-line tools are in pipeline/tools/."""
