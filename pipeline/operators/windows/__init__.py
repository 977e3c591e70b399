"""Tumbling windows on event time: which windows are pending and due (tracker.py, pure) and the aggregator
that marks them pending with the readings and closes them into `aggregations` rows (aggregator.py)."""
