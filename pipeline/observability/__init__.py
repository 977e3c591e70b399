"""What the pipeline tells about itself: every metric (metrics.py), key=value logging, live rates, recent errors,
and the status interface the dashboard reads."""
