"""The payload formats this package brings, registered on import, and the selection config makes of them:
the configured mappings (`sources:`, pipeline/stages/mapping.py) first, then `processing.formats`."""
from __future__ import annotations

from ..config import Config, ConfigError
from ..registry.formats import Router, select
from .decode import JSON, NUMBER  # noqa: F401  (registers "json" and "number")
from .logs import LOG  # noqa: F401  (registers "log")
from .mapping import compile_sources, source_formats
from .mapping_stats import MappingStats
from .telegraf import TELEGRAF  # noqa: F401  (registers "telegraf", "telegraf_json"; encodings influx, telegraf_json)


def router(cfg: Config, stats: MappingStats | None = None) -> Router:
    """The mappings of `sources` (counting into `stats`), then the formats `processing.formats` names, in order,
    with the config values their patterns refer to."""
    try:
        return select(cfg.processing.formats, {"logs_root": cfg.logs.topic_root,
                                                 "telegraf_root": cfg.processing.telegraf_topic_root},
                      before=source_formats(compile_sources(cfg.sources, stats)))
    except LookupError as err:
        raise ConfigError(str(err).strip("'\"")) from None
