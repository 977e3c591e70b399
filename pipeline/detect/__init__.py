"""Anomaly detectors: small pure units, one per kind of problem (docs/processing.md, "Detectors")."""
