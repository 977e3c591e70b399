"""Stateful processing between the stages and the sinks: windows, detectors and the alert lifecycle, log counts.

Each operator is a pure core (readings in; rows, transitions or readings out; state owned by the core and
changed only through its methods), its store beside it, and a thin runner: `base.py`'s OperatorRunner owns
the thread, queue, retries and holds of a batch operator (alerts); the window operator listens to the
PostgreSQL sink's inserts (pipeline/sinks/postgres.py, InsertListener); the log counter runs its own timer.
"""
