"""What the pipeline tells about itself: every metric (metrics.py), key=value logging (kvlog.py), live rates, recent errors,
and the status interface the dashboard reads."""
