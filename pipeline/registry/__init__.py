"""Plug-in registries: each kind of plug-in registers itself by name, config selects by name.

Low in the layer order (imports nothing of the pipeline but `records`), so ingest, stages, operators and config
can all ask it: formats.py (payload formats: topic pattern, decoder, partition key), detectors.py (alert
detectors: rule schema, per-series history slots, message).
"""
