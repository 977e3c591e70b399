"""Stateful processing between the stages and the sinks: windows, detectors and the alert lifecycle, log counts.

Each operator is a pure core (readings in; rows, transitions or readings out; state owned by the core and
changed only through its methods) and a thin runner that owns the thread, the lock and partition ownership,
and hands what the core produced to a sink (pipeline/sinks/) that only writes.
"""
