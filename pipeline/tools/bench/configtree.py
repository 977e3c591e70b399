"""Config trees of the processes the benchmark starts: the repository's config.yaml with overrides."""
from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]  # the repository: config.yaml, realtime_pipeline.py


def deep_merge(base: dict, extra: dict) -> dict:
    """`base` with `extra` laid over it, nested sections merged key by key."""
    out = dict(base)
    for k, v in extra.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out
