"""Sinks only write: PostgreSQL (measurements), Redis (streams, latest values), logs, dead letters, window rows,
alert transitions and their notifications (notify/). base.py is the batching runner every sink shares (thread, bounded queue,
flush by size or interval, retries with backoff, isolation of a refused record)."""
