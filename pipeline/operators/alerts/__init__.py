"""Alerts: detectors judge readings, rules say which apply, the lifecycle turns signals into transitions
(evaluator.py, pure); runner.py runs it as a batch consumer whose offsets commit once transitions are stored."""
