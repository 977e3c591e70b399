"""In-memory building blocks for unit tests: raw messages, a pinned clock, the default stage chain."""
from __future__ import annotations

import json

from prometheus_client import CollectorRegistry

from pipeline.config import Settings, Secrets, parse
from pipeline.observability.metrics import Metrics
from pipeline.records import RawMessage
from pipeline.runtime.chain import StageChain
from pipeline.app.build import build_stages

NOW = 1_760_000_000.0  # a fixed 'now' (2025-10-09T08:53:20Z)


def raw(topic: str, payload, received_at: float = NOW, offset: int = 0) -> RawMessage:
    if isinstance(payload, (dict, list)):
        payload = json.dumps(payload).encode()
    elif isinstance(payload, str):
        payload = payload.encode()
    return RawMessage(topic, payload, received_at, b"k", "raw", 0, offset)


def chain(tree: dict | None = None, clock=lambda: NOW) -> tuple[StageChain, Metrics]:
    cfg = parse(tree or {}, {})
    settings = Settings(config=cfg, secrets=Secrets.from_env({}), path="test")
    stages = build_stages(settings)
    for s in stages:
        if hasattr(s, "clock"):
            s.clock = clock
    metrics = Metrics(CollectorRegistry())
    return StageChain(stages, metrics), metrics


def run(ch: StageChain, msg: RawMessage):
    out, dead = [], []
    ch.run(msg, out, dead)
    ch.flush_counts()
    return out, dead
