"""Bounds on what publishers can make the daemon remember: distinct sensors and metrics per sensor."""
