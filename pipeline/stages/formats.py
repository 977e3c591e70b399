"""The payload formats this package brings, registered on import, and the selection config makes of them."""
from __future__ import annotations

from ..config import Config, ConfigError
from ..registry.formats import Router, select
from .decode import JSON, NUMBER  # noqa: F401  (registers "json" and "number")
from .logs import LOG  # noqa: F401  (registers "log")
from .telegraf import TELEGRAF  # noqa: F401  (registers "telegraf", "telegraf_json"; encodings influx, telegraf_json)


def router(cfg: Config) -> Router:
    """The formats `processing.formats` names, in order, with the config values their patterns refer to."""
    try:
        return select(cfg.processing.formats, {"logs_root": cfg.logs.topic_root,
                                                 "telegraf_root": cfg.processing.telegraf_topic_root})
    except LookupError as err:
        raise ConfigError(str(err).strip("'\"")) from None
