"""What per-field validation cannot see: mapping sections entry by entry (so an error names the entry) before
the whole tree is converted, and rules that span fields or sections after it."""
from __future__ import annotations

from typing import Any

import msgspec

from .alerting import check_notifications
from .errors import ConfigError, describe_validation_error
from .metric_rules import MetricDetection, MetricOverride, MetricUnits, SensorOverride, ThresholdRule
from .schema import Config
from .serving import DashboardConfig, is_loopback_host
from .sources import check_sources

# What an MQTT PUBLISH carries besides its payload, at most, for the topics this pipeline takes (fixed header,
# topic, packet id, MQTT 5 properties): mqtt.max_packet_bytes must leave this room above the largest valid payload.
PUBLISH_OVERHEAD_BYTES = 1024


def check_mapping_sections(tree: dict) -> None:
    """Validate dict-of-struct sections entry by entry so the error names the entry."""
    for section, kind in (("units", MetricUnits), ("thresholds", ThresholdRule)):
        _check_entries(section, tree.get(section) or {}, kind)
    _check_detection_entries(tree.get("detection"))


def _check_entries(where: str, entries: Any, kind: type) -> None:
    if entries is None:
        return
    if not isinstance(entries, dict):
        raise ConfigError(f"{where}: expected a mapping of name to settings")
    for name, value in entries.items():
        try:
            msgspec.convert(value, kind, strict=False)
        except msgspec.ValidationError as err:
            raise ConfigError(f"{where}.{name}.{describe_validation_error(err)}".replace(".: ", ": ")) from None


def _check_detection_entries(detection: Any) -> None:
    """detection.metrics.<metric> and detection.sensors.<id>.metrics.<metric>, named in errors."""
    if not isinstance(detection, dict):
        return  # missing, or the wrong type: the whole-tree conversion names it
    _check_entries("detection.metrics", detection.get("metrics"), MetricDetection)
    sensors = detection.get("sensors")
    _check_entries("detection.sensors", {k: {kk: vv for kk, vv in v.items() if kk != "metrics"}
                                         for k, v in sensors.items() if isinstance(v, dict)}
                   if isinstance(sensors, dict) else sensors, SensorOverride)
    for sensor, override in (sensors or {}).items():
        if isinstance(override, dict):
            _check_entries(f"detection.sensors.{sensor}.metrics", override.get("metrics"), MetricOverride)


def check_bounds(where: str, rule: ThresholdRule) -> None:
    """Each level's min must lie below its max: the one threshold check, for `thresholds` and sensor overrides."""
    for level in ("warning", "critical"):
        b = getattr(rule, level)
        if b.min is not None and b.max is not None and b.min >= b.max:
            raise ConfigError(f"{where}.{level}: min must be below max")


def check_levels(where: str, warning: float | None, critical: float | None) -> None:
    """For limits that grow with severity (rate, outlier z-score): warning must not exceed critical."""
    if warning is not None and critical is not None and warning > critical:
        raise ConfigError(f"{where}: the warning limit must not exceed the critical limit")


# sslmode values that fall back to plain text without saying so (the password and every reading readable on the
# way). An explicit `disable` is the operator's own decision (a private link, a TLS sidecar) and stays allowed.
PLAINTEXT_SSLMODES = ("allow", "prefer")


def check_postgres_tls(host: str, sslmode: str) -> None:
    """A PostgreSQL server beyond this machine is not reached by a mode that silently falls back to plain text."""
    local = host.startswith(("/", "@")) or is_loopback_host(host)  # a Unix socket directory, or loopback
    if not local and sslmode in PLAINTEXT_SSLMODES:
        raise ConfigError(f"postgres.sslmode: {sslmode!r} may send the password and readings in plain text to "
                          f"{host!r}, beyond this machine: use verify-full with postgres.sslrootcert (the server's CA), "
                          "require (encrypted, server not checked), or disable to say plain text is meant")


def check_across_fields(cfg: Config) -> None:
    """Rules between fields and sections of the converted config; the first one broken raises ConfigError."""
    if cfg.postgres.pool_min > cfg.postgres.pool_max:
        raise ConfigError("postgres.pool_min: must not exceed postgres.pool_max")
    check_postgres_tls(cfg.postgres.host, cfg.postgres.sslmode)
    if cfg.kafka.heartbeat_interval_ms >= cfg.kafka.session_timeout_ms:
        raise ConfigError("kafka.heartbeat_interval_ms: must be below kafka.session_timeout_ms")
    if cfg.retry.initial_interval_s > cfg.retry.max_interval_s:
        raise ConfigError("retry.initial_interval_s: must not exceed retry.max_interval_s")
    if cfg.mqtt.reconnect_min_delay_s > cfg.mqtt.reconnect_max_delay_s:
        raise ConfigError("mqtt.reconnect_min_delay_s: must not exceed mqtt.reconnect_max_delay_s")
    if cfg.mqtt.max_packet_bytes < cfg.validation.max_payload_bytes + PUBLISH_OVERHEAD_BYTES:
        raise ConfigError(f"mqtt.max_packet_bytes: must be at least validation.max_payload_bytes + "
                          f"{PUBLISH_OVERHEAD_BYTES} (a valid payload plus its topic and header)")
    if not cfg.mqtt.topics:
        raise ConfigError("mqtt.topics: expected at least one topic filter")
    for metric, rule in cfg.thresholds.items():
        check_bounds(f"thresholds.{metric}", rule)
    for section in ("mqtt", "redis"):
        tls = getattr(cfg, section).tls
        if bool(tls.cert_file) != bool(tls.key_file):
            raise ConfigError(f"{section}.tls.cert_file: a client certificate needs both cert_file and key_file")
    if bool(cfg.postgres.sslcert) != bool(cfg.postgres.sslkey):
        raise ConfigError("postgres.sslcert: a client certificate needs both sslcert and sslkey")
    r = cfg.retention
    if r.measurements_days and r.measurements_days * 86400 <= cfg.aggregation.max_lateness_s + cfg.aggregation.grace_s:
        # A late reading recomputes its window from the raw rows: they must still be there.
        raise ConfigError("retention.measurements_days: must exceed aggregation.max_lateness_s + grace_s")
    _check_aggregation(cfg)
    _check_detection(cfg)
    check_sources(cfg.sources)
    check_notifications(cfg.alerts)
    if cfg.validation.metrics == "configured" and not configured_metrics(cfg):
        raise ConfigError("validation.metrics: `configured`, but no metric has a threshold, detection or unit rule")
    if cfg.agents.system.topic_root == cfg.logs.topic_root:
        raise ConfigError("agents.system.topic_root: must differ from logs.topic_root (that root carries log records)")
    # A source the daemon feeds itself must reach it: refuse a topic root nothing subscribes to.
    roots = {t.split("/", 1)[0] for t in cfg.mqtt.topics}
    if cfg.agents.system.enabled and not roots & {cfg.agents.system.topic_root, "#", "+"}:
        raise ConfigError(f"agents.system.topic_root: {cfg.agents.system.topic_root!r} is not covered by mqtt.topics")
    if cfg.logs.ship_own and not roots & {cfg.logs.topic_root, "#", "+"}:
        raise ConfigError(f"logs.ship_own: logs.topic_root {cfg.logs.topic_root!r} is not covered by mqtt.topics")


# A random token this long (hex: 64 bits) is out of reach of guessing at the throttled rate (dashboard/throttle.py).
MIN_TOKEN_CHARS = 16


def check_dashboard_token(cfg: DashboardConfig, token: str) -> None:
    """A dashboard whose reads need DASHBOARD_TOKEN (asked for, or listening beyond loopback) must have one, and
    a token set must be long enough not to be guessed."""
    if not cfg.enabled:
        return
    if token:
        if len(token) < MIN_TOKEN_CHARS:
            raise ConfigError(f"DASHBOARD_TOKEN: {len(token)} characters, at least {MIN_TOKEN_CHARS} needed "
                              "(make one with `openssl rand -hex 16`)")
        return
    if cfg.require_token_for_reads:
        raise ConfigError("dashboard.require_token_for_reads: needs DASHBOARD_TOKEN in the environment")
    if not is_loopback_host(cfg.host):
        raise ConfigError(f"dashboard.host: {cfg.host!r} is reachable beyond this machine, so reads need "
                          "DASHBOARD_TOKEN in the environment (set it, or listen on 127.0.0.1)")


def configured_metrics(cfg: Config) -> frozenset[str]:
    """Metrics some rule names: thresholds, detection (for all sensors or one) and units."""
    names = set(cfg.thresholds) | set(cfg.detection.metrics) | set(cfg.units)
    for override in cfg.detection.sensors.values():
        names.update(override.metrics)
    return frozenset(names)


def allowed_metrics(cfg: Config) -> frozenset[str] | None:
    """validation.metrics as a set of names; None accepts any valid name."""
    choice = cfg.validation.metrics
    if choice == "any":
        return None
    return configured_metrics(cfg) if choice == "configured" else frozenset(choice)


def _check_aggregation(cfg: Config) -> None:
    agg = cfg.aggregation
    if len(set(agg.periods)) != len(agg.periods):
        raise ConfigError("aggregation.periods: a period is listed twice")
    if agg.enabled and not agg.periods:
        raise ConfigError("aggregation.periods: expected at least one period while aggregation is enabled")
    if agg.max_lateness_s < agg.grace_s:
        raise ConfigError("aggregation.max_lateness_s: must not be below aggregation.grace_s")


def _check_detection(cfg: Config) -> None:
    rules = [(f"detection.metrics.{m}", r) for m, r in cfg.detection.metrics.items()]
    for sensor, override in cfg.detection.sensors.items():
        for metric, r in override.metrics.items():
            where = f"detection.sensors.{sensor}.metrics.{metric}"
            rules.append((where, r))
            if r.threshold is not None:
                check_bounds(f"{where}.threshold", r.threshold)
    for where, r in rules:
        if r.rate is not None:
            check_levels(f"{where}.rate", r.rate.warning, r.rate.critical)
            if r.rate.min_span_s > r.rate.window_s:
                raise ConfigError(f"{where}.rate: min_span_s must not exceed window_s (the window would never be judged)")
        if r.outlier is not None:
            check_levels(f"{where}.outlier", r.outlier.z_warning, r.outlier.z_critical)
