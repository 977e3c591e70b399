"""Log counts: application log records counted per app, level and window into readings of sensor `app:<app>`
(counting.py, pure; runner.py counts the stored records and hands the readings to the sinks)."""
