"""Data sources that publish to MQTT beside the devices: host system metrics (system.py)."""
