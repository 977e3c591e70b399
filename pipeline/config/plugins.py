"""Plug-in modules: named in the config's `plugins:` list, or installed by a package under the entry-point group
`realtime_pipeline.plugins`. Each is imported once, before the rest of the config is validated, so the formats,
detectors and sinks it registers are known by name to the sections that select them (`processing.formats`,
`detection`, `sinks.use`). A plug-in is thus one module plus config: no file of the pipeline changes."""
from __future__ import annotations

import importlib
import importlib.metadata
from typing import Any

from .errors import ConfigError

ENTRY_POINT_GROUP = "realtime_pipeline.plugins"
# The package's own formats and payload encodings register like a plug-in's, by import: before the sections that
# name them (`processing.formats`, `sources[].encoding`) are checked. Imported by name: they sit in a layer above.
BUILTIN_MODULES = ("pipeline.stages.formats",)


def load_plugins(names: Any) -> tuple[str, ...]:
    """Import the installed entry points and the modules `names` lists; an import that fails is refused naming
    `plugins[i]` (or the entry point). Returns the module names imported, in order."""
    if names is None:
        names = []
    if not isinstance(names, list) or not all(isinstance(n, str) and n.strip() for n in names):
        raise ConfigError("plugins: expected a list of module names (e.g. [mycompany.pipeline_formats])")
    loaded = []
    for name in BUILTIN_MODULES:
        importlib.import_module(name)
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            ep.load()
        except Exception as err:  # noqa: BLE001 - any failure of a plug-in's import is a config error, named
            raise ConfigError(f"plugins: entry point {ep.name!r} ({ep.value}) cannot be loaded: "
                              f"{type(err).__name__}: {err}") from None
        loaded.append(ep.value)
    for i, name in enumerate(names):
        try:
            importlib.import_module(name.strip())
        except Exception as err:  # noqa: BLE001 - as above
            raise ConfigError(f"plugins[{i}]: cannot import {name!r}: {type(err).__name__}: {err}") from None
        loaded.append(name.strip())
    return tuple(loaded)
