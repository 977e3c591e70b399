"""Stages: each takes a batch, `process_batch(items, refused) -> list` (base.py; written per record, `process(item)
-> list`, it is looped), turning each record into zero, one or many or refusing it with a reason (dead-lettered
by the chain): decode, validate, transform (units), logs (log records), lateness."""
