"""From config.yaml and the environment to a frozen Settings: read the file, overlay PIPELINE__SECTION__KEY
variables and the Kafka secrets, validate (per field, then checks.py), fill in what is derived."""
from __future__ import annotations

import os
import socket
import sys
from pathlib import Path
from typing import Any, Sequence

import msgspec
import yaml

from .alerting import channel_urls
from .base import Section
from .checks import check_across_fields, check_dashboard_token, check_mapping_sections
from .plugin_rules import lift_plugin_rules
from .plugins import load_plugins
from .errors import ConfigError, describe_validation_error
from .schema import Config, Settings
from .secret import KAFKA_SECRET_ENV, Secrets

ENV_PREFIX = "PIPELINE__"
# The repository's config.yaml: this file is pipeline/config/loading.py.
DEFAULT_PATH = Path(__file__).resolve().parents[2] / "config.yaml"


def _set_path(tree: dict, keys: list[str], value: str) -> None:
    node = tree
    for key in keys[:-1]:
        child = node.get(key)
        if not isinstance(child, dict):
            child = {}
            node[key] = child
        node = child
    # Environment values are text; YAML parsing gives lists, numbers and booleans their types.
    try:
        node[keys[-1]] = yaml.safe_load(value) if value != "" else ""
    except yaml.YAMLError:
        node[keys[-1]] = value


def apply_env(tree: dict, env: dict[str, str]) -> dict:
    """Overlay PIPELINE__A__B=value variables onto the parsed YAML tree."""
    for name, value in env.items():
        if name.startswith(ENV_PREFIX) and len(name) > len(ENV_PREFIX):
            keys = [k.lower() for k in name[len(ENV_PREFIX):].split("__")]
            if all(keys):
                _set_path(tree, keys, value)
    return tree


def _apply_kafka_secrets(tree: dict, env: dict[str, str]) -> None:
    """Copy KAFKA_* secret variables into kafka.client, where every Kafka client of the pipeline finds them."""
    for name, prop in KAFKA_SECRET_ENV.items():
        if env.get(name):
            kafka = tree.setdefault("kafka", {}) if isinstance(tree.get("kafka", {}), dict) else {}
            if isinstance(kafka.get("client", {}), dict):
                kafka.setdefault("client", {})[prop] = env[name]


def _with_derived_values(cfg: Config) -> Config:
    """Settings left to be worked out from others: the instance id and the Kafka assignment mode."""
    if not cfg.instance_id:
        cfg = msgspec.structs.replace(cfg, instance_id=socket.gethostname()[:64])
    if cfg.kafka.assignment == "auto":  # resolved once: scale-out (a shared MQTT subscription) needs the group
        mode = "group" if cfg.mqtt.shared_group else "single"
        cfg = msgspec.structs.replace(cfg, kafka=msgspec.structs.replace(cfg.kafka, assignment=mode))
    return cfg


def parse(tree: Any, env: dict[str, str] | None = None) -> Config:
    """Validate a parsed YAML tree (plus environment overrides) into a frozen Config."""
    if tree is None:
        tree = {}
    if not isinstance(tree, dict):
        raise ConfigError("(top level): expected a mapping of sections")
    env = env or {}
    tree = apply_env(tree, env)
    _apply_kafka_secrets(tree, env)
    load_plugins(tree.get("plugins"))  # before the sections that select what they register are checked
    tree = lift_plugin_rules(tree)
    check_mapping_sections(tree)
    try:
        cfg = msgspec.convert(tree, Config, strict=False)
    except msgspec.ValidationError as err:
        raise ConfigError(describe_validation_error(err)) from None
    cfg = _with_derived_values(cfg)
    check_across_fields(cfg)
    return cfg


def merge_trees(base: dict, over: dict, top: bool = True) -> dict:
    """`over` deep-merged onto `base` (neither changed): mappings merge key by key, `sources` (top level) append by
    name (a later entry of the same name replaces the earlier one in its place), any other list and every scalar
    of `over` replaces the one in `base`."""
    out = dict(base)
    for key, value in over.items():
        old = out.get(key)
        if top and key == "sources" and isinstance(old, list) and isinstance(value, list):
            merged = list(old)
            for entry in value:
                name = entry.get("name") if isinstance(entry, dict) else None
                at = next((i for i, e in enumerate(merged) if name is not None and isinstance(e, dict)
                           and e.get("name") == name), None)
                if at is None:
                    merged.append(entry)
                else:
                    merged[at] = entry
            out[key] = merged
        elif isinstance(old, dict) and isinstance(value, dict):
            out[key] = merge_trees(old, value, top=False)
        else:
            out[key] = value
    return out


def _read_tree(file: Path) -> dict:
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"{file}: cannot read config file ({err.strerror})") from None
    try:
        tree = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{file}:{where}: invalid YAML") from None
    if tree is None:
        return {}
    if not isinstance(tree, dict):
        raise ConfigError(f"{file}: (top level): expected a mapping of sections")
    return tree


ConfigPaths = str | os.PathLike | Sequence[str | os.PathLike] | None


def load(path: ConfigPaths = None, env: dict[str, str] | None = None) -> Settings:
    """Read config.yaml (or `path`; several files are deep-merged in order, `merge_trees`), apply environment
    overrides, validate and freeze."""
    if env is None:
        env = dict(os.environ)
    if path is None or isinstance(path, (str, os.PathLike)):
        paths = [path] if path else []
    else:
        paths = [p for p in path if p]
    files = [Path(p) for p in paths] or [Path(env.get("PIPELINE_CONFIG", DEFAULT_PATH))]
    tree: dict = {}
    for file in files:
        tree = merge_trees(tree, _read_tree(file))
    config, secrets = parse(tree, env), Secrets.from_env(env)
    check_dashboard_token(config.dashboard, secrets.dashboard_token.reveal())
    channel_urls(config.alerts, env)  # a channel whose URL variable is unset fails here, not at the first alert
    return Settings(config=config, secrets=secrets, path=str(files[0]), paths=tuple(str(f) for f in files))


def load_for_cli(path: ConfigPaths = None) -> Settings:
    """For command-line entry points: .env, then the config; an invalid config prints one line naming the
    key and exits with status 2."""
    load_dotenv_file()
    try:
        return load(path)
    except ConfigError as err:
        print(f"config error: {err}", file=sys.stderr)
        raise SystemExit(2) from None


def load_dotenv_file(path: str | os.PathLike = ".env") -> None:
    """Load .env into os.environ if present; real environment variables win."""
    from dotenv import load_dotenv

    load_dotenv(path, override=False)


def env_names(struct: type = Config, prefix: str = ENV_PREFIX) -> list[str]:
    """Every environment variable that can override a leaf setting (for .env.example and docs)."""
    names = []
    for field in msgspec.structs.fields(struct):
        typ = field.type
        if isinstance(typ, type) and issubclass(typ, Section):
            names.extend(env_names(typ, f"{prefix}{field.name.upper()}__"))
        else:
            names.append(f"{prefix}{field.name.upper()}")
    return names
