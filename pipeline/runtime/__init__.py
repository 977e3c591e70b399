"""The toolkit the pipeline runs on: the supervisor of every thread, the stage chain, batches and the commit tracker,
retries with backoff, the shutdown deadline, live config reload, busy marks, idle state release, thread names."""
