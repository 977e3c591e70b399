"""Refusals that name the key: per-field validation (schema.py, metric_rules.py) and the rules across fields
(checks.py), section by section."""
import pytest

from pipeline import config as c


@pytest.mark.parametrize("tree, expected", [
    ({"mqtt": {"port": 0}}, "mqtt.port: Expected `int` >= 1"),
    ({"mqtt": {"port": "many"}}, "mqtt.port: Expected `int`, got `str`"),
    ({"mqtt": {"prot": 1883}}, "mqtt.prot: unknown key"),
    ({"surprise": 1}, "surprise: unknown key"),
    ({"kafka": {"topics": {"raw": ""}}}, "kafka.topics.raw: Expected `str` of length >= 1"),
    ({"processing": {"batch_size": -5}}, "processing.batch_size: Expected `int` >= 1"),
    ({"mqtt": {"protocol": "4"}}, "mqtt.protocol: Invalid enum value '4'"),
    ({"thresholds": {"temperature": {"warning": {"max": "hot"}}}}, "thresholds.temperature.warning.max: Expected `float | null`, got `str`"),
    ({"thresholds": {"temperature": {"warning": {"min": 50, "max": 10}}}}, "thresholds.temperature.warning: min must be below max"),
    ({"units": {"temperature": {"convert": []}}}, "units.temperature: Object missing required field `canonical`"),
    ({"postgres": {"pool_min": 5, "pool_max": 2}}, "postgres.pool_min: must not exceed postgres.pool_max"),
    ({"kafka": {"heartbeat_interval_ms": 20000, "session_timeout_ms": 10000}}, "kafka.heartbeat_interval_ms: must be below"),
    ({"kafka": {"offset_gaps": "ignore"}}, "kafka.offset_gaps: Invalid enum value 'ignore'"),
    ({"kafka": {"gap_refetch_attempts": 0}}, "kafka.gap_refetch_attempts: Expected `int` >= 1"),
    ({"kafka": {"gap_report_interval_s": 0}}, "kafka.gap_report_interval_s: Expected `float` > 0"),
    ([1, 2], "(top level): expected a mapping"),
])
def test_invalid_config_names_the_key(tree, expected):
    with pytest.raises(c.ConfigError) as err:
        c.parse(tree, {})
    assert str(err.value).startswith(expected)


@pytest.mark.parametrize("tree, expected", [
    ({"aggregation": {"periods": ["10x"]}}, "aggregation.periods[0]: Expected `str` matching regex"),
    ({"aggregation": {"periods": ["1m", "1m"]}}, "aggregation.periods: a period is listed twice"),
    ({"aggregation": {"periods": []}}, "aggregation.periods: expected at least one period"),
    ({"aggregation": {"grace_s": 60, "max_lateness_s": 30}}, "aggregation.max_lateness_s: must not be below aggregation.grace_s"),
    ({"aggregation": {"grace": 5}}, "aggregation.grace: unknown key"),
    ({"thresholds": {"temperature": {"deadband": -1}}}, "thresholds.temperature.deadband: Expected `float` >= 0.0"),
    ({"detection": {"metrics": {"humidity": {"rate": {"warning": "fast"}}}}},
     "detection.metrics.humidity.rate.warning: Expected `float | null`, got `str`"),
    ({"detection": {"metrics": {"humidity": {"stuck": {"severity": "meh"}}}}},
     "detection.metrics.humidity.stuck.severity: Invalid enum value 'meh'"),
    ({"detection": {"metrics": {"humidity": {"outlier": {"alpha": 2}}}}}, "detection.metrics.humidity.outlier.alpha: Expected `float` <= 1.0"),
    ({"detection": {"metrics": {"humidity": {"rate": {"warning": 5, "critical": 1}}}}},
     "detection.metrics.humidity.rate: the warning limit must not exceed the critical limit"),
    ({"detection": {"metrics": {"humidity": {"threshold": {}}}}}, "detection.metrics.humidity.threshold: unknown key"),
    ({"detection": {"metrics": {"humidity": {"rate": {"warning": 1, "window_s": 20, "min_span_s": 30}}}}},
     "detection.metrics.humidity.rate: min_span_s must not exceed window_s"),
    ({"detection": {"metrics": {"humidity": {"rate": {"warning": 1, "min_samples": 1}}}}},
     "detection.metrics.humidity.rate.min_samples: Expected `int` >= 2"),
    ({"detection": {"metrics": {"humidity": {"rate": {"warning": 1, "min_interval_s": 1}}}}},
     "detection.metrics.humidity.rate.min_interval_s: unknown key"),
    ({"alerts": {"flap": {"count": -1}}}, "alerts.flap.count: Expected `int` >= 0"),
    ({"detection": {"sensors": {"oven-1": {"offline_after_s": "soon"}}}}, "detection.sensors.oven-1.offline_after_s: Expected"),
    ({"detection": {"sensors": {"oven-1": {"metrics": {"temperature": {"threshold": {"warning": {"max": "hot"}}}}}}}},
     "detection.sensors.oven-1.metrics.temperature.threshold.warning.max: Expected `float | null`, got `str`"),
    ({"detection": {"sensors": {"oven-1": {"metrics": {"temperature": {"threshold": {"warning": {"min": 9, "max": 1}}}}}}}},
     "detection.sensors.oven-1.metrics.temperature.threshold.warning: min must be below max"),
    ({"alerts": {"clear_readings": -1}}, "alerts.clear_readings: Expected `int` >= 0"),
    ({"alerts": {"webhook": {"url": "ftp://example.com"}}}, "alerts.webhook.url: Expected `str` matching regex"),
    ({"reload": {"watch_interval_s": -1}}, "reload.watch_interval_s: Expected `float` >= 0.0"),
])
def test_invalid_processing_config_names_the_key(tree, expected):
    with pytest.raises(c.ConfigError) as err:
        c.parse(tree, {})
    assert str(err.value).startswith(expected)


@pytest.mark.parametrize("tree, expected", [
    ({"logs": {"ship_app": "bad app"}}, "logs.ship_app: Expected `str` matching regex"),
    ({"logs": {"ship_app": "a" * 47}}, "logs.ship_app: Expected `str` of length <= 46"),
    ({"logs": {"topic_root": "a/b"}}, "logs.topic_root: Expected `str` matching regex"),
    ({"logs": {"ship_level": "DEBUG"}}, "logs.ship_level: Invalid enum value 'DEBUG'"),
    ({"logs": {"count_window_s": 0}}, "logs.count_window_s: Expected `int` >= 1"),
    ({"agents": {"system": {"interval_s": 0}}}, "agents.system.interval_s: Expected `float` >= 0.1"),
    ({"agents": {"system": {"topic_root": "logs"}}}, "agents.system.topic_root: must differ from logs.topic_root"),
    ({"agents": {"system": {"enabled": True}}, "mqtt": {"topics": ["sensors/#"]}},
     "agents.system.topic_root: 'system' is not covered by mqtt.topics"),
    ({"logs": {"ship_own": True}, "mqtt": {"topics": ["sensors/#", "system/#"]}},
     "logs.ship_own: logs.topic_root 'logs' is not covered by mqtt.topics"),
])
def test_invalid_source_config_names_the_key(tree, expected):
    with pytest.raises(c.ConfigError) as err:
        c.parse(tree, {})
    assert str(err.value).startswith(expected)


def test_a_wildcard_subscription_covers_every_root():
    cfg = c.parse({"mqtt": {"topics": ["#"]}, "agents": {"system": {"enabled": True}}, "logs": {"ship_own": True}}, {})
    assert cfg.agents.system.enabled and cfg.logs.ship_own


def test_tls_defaults_verify_and_client_cert_needs_both_files():
    cfg = c.parse({"mqtt": {"tls": {"enabled": True, "ca_file": "/etc/ca.pem"}}}, {})
    assert cfg.mqtt.tls.enabled and cfg.mqtt.tls.insecure is False
    with pytest.raises(c.ConfigError, match=r"^redis.tls.cert_file: a client certificate needs both"):
        c.parse({"redis": {"tls": {"enabled": True, "cert_file": "/c.pem"}}}, {})
    with pytest.raises(c.ConfigError, match=r"^mqtt.tls.verify: unknown key"):
        c.parse({"mqtt": {"tls": {"verify": False}}}, {})


def test_retention_defaults_and_validation():
    r = c.parse({}, {}).retention
    assert (r.measurements_days, r.alerts_days, r.logs_days) == (30, 180, 30)
    assert r.aggregations_days == {"1m": 7, "5m": 90, "1h": 730, "1d": 3650}
    with pytest.raises(c.ConfigError, match=r"^retention.aggregations_days"):
        c.parse({"retention": {"aggregations_days": {"1 minute": 7}}}, {})
    with pytest.raises(c.ConfigError, match=r"^retention.measurements_days: Expected `float` >= 0"):
        c.parse({}, {"PIPELINE__RETENTION__MEASUREMENTS_DAYS": "-1"})


@pytest.mark.parametrize("host, sslmode", [("db.example.org", "prefer"), ("10.0.0.5", "prefer"), ("db", "allow")])
def test_a_postgres_server_beyond_this_machine_needs_tls(host, sslmode):
    with pytest.raises(c.ConfigError, match=rf"^postgres.sslmode: '{sslmode}' .*'{host}'.*verify-full"):
        c.parse({"postgres": {"host": host, "sslmode": sslmode}}, {})
    with pytest.raises(c.ConfigError, match=r"^postgres.sslmode"):
        c.parse({"postgres": {"host": host}}, {})  # the built-in default (prefer) too


@pytest.mark.parametrize("host, sslmode", [("db.example.org", "verify-full"), ("db.example.org", "verify-ca"),
                                           ("db.example.org", "require"), ("localhost", "disable"),
                                           ("db", "disable"),
                                           ("127.0.0.1", "prefer"), ("::1", "disable"), ("/var/run/postgresql", "disable")])
def test_tls_modes_accepted(host, sslmode):
    assert c.parse({"postgres": {"host": host, "sslmode": sslmode}}, {}).postgres.sslmode == sslmode
