"""Running the pipeline: the daemon (composition root), the supervisor of every thread, the stage chain, batches
and the commit tracker, retries with backoff, the shutdown deadline, live config reload, the single-instance lock."""
