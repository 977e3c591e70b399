"""deploy/grafana: the provisioning files and dashboards hang together (data source uids, variables, panel ids,
metric names), and the macro expansion the integration test relies on says what Grafana's documentation says.
Whether each query runs and returns rows is tests/integration/test_grafana_prometheus.py."""
from __future__ import annotations

import re
from datetime import datetime, timezone

import yaml

from tests import grafana_dashboards as gf

PROVISIONING = gf.ROOT / "deploy" / "grafana" / "provisioning"
GLOBALS = {"__interval", "__interval_ms", "__rate_interval", "__range", "__range_s", "__from", "__to"}


def datasources() -> dict[str, dict]:
    files = sorted((PROVISIONING / "datasources").glob("*.yaml"))
    return {d["uid"]: d for f in files for d in yaml.safe_load(f.read_text())["datasources"]}


def test_the_data_sources_are_provisioned_with_the_password_from_the_environment():
    ds = datasources()
    assert set(ds) == {gf.POSTGRES_UID, gf.PROMETHEUS_UID}
    pg = ds[gf.POSTGRES_UID]
    assert pg["type"] == "postgres" and pg["jsonData"]["database"] == "sensor_data"
    # Never a password in the file: Grafana expands $__env{NAME} from its environment when it provisions.
    assert pg["secureJsonData"] == {"password": "$__env{POSTGRES_PASSWORD}"} and "password" not in pg
    assert ds[gf.PROMETHEUS_UID]["type"] == "prometheus"
    assert gf.min_interval_ms(gf.POSTGRES_UID) == 1000 and gf.min_interval_ms(gf.PROMETHEUS_UID) == 15000


def test_the_dashboard_provider_reads_the_shipped_folder():
    files = sorted((PROVISIONING / "dashboards").glob("*.yaml"))
    providers = [p for f in files for p in yaml.safe_load(f.read_text())["providers"]]
    assert len(providers) == 1 and providers[0]["type"] == "file" and providers[0]["options"]["path"]


def test_every_dashboard_is_well_formed_and_uses_only_the_provisioned_data_sources():
    boards = gf.dashboards()
    assert set(boards) == {"fleet-overview.json", "sensor-history.json", "alerts.json", "pipeline-health.json"}
    assert len({b["uid"] for b in boards.values()}) == len(boards)
    known = set(datasources())
    for name, board in boards.items():
        ids = [p["id"] for p in gf.panels(board)]
        assert len(ids) == len(set(ids)), name
        declared = {v["name"] for v in gf.variables(board)}
        for p in gf.panels(board):
            assert 0 <= p["gridPos"]["x"] and p["gridPos"]["x"] + p["gridPos"]["w"] <= 24, (name, p["title"])
            for t in p.get("targets", []):
                assert gf._uid(t["datasource"]) in known, (name, p["title"])
                text = t.get("rawSql") or t.get("expr")
                assert text, (name, p["title"])
                used = set(re.findall(r"\$\{?(\w+)", text)) - {m for m in re.findall(r"\$(__\w+)\(", text)}
                assert used <= declared | GLOBALS, (name, p["title"], used - declared - GLOBALS)
                if "rawSql" in t:
                    assert t["rawQuery"] and t["format"] in ("table", "time_series"), (name, p["title"])


def test_the_pipeline_health_dashboard_reads_only_metrics_the_pipeline_declares():
    board = gf.dashboards()["pipeline-health.json"]
    exprs = " ".join(t["expr"] for p in gf.panels(board) for t in p.get("targets", []))
    used = set(re.findall(r"\bpipeline_[a-z_]+", exprs))
    missing = used - gf.exported_metric_names()
    assert len(used) >= 12 and not missing, missing


def test_macros_expand_as_grafana_documents_them():
    start = datetime(2017, 4, 21, 5, 1, 17, tzinfo=timezone.utc)
    end = datetime(2017, 4, 21, 5, 6, 17, tzinfo=timezone.utc)
    x = lambda sql, **kw: gf.expand_sql(sql, start, end, kw)  # noqa: E731
    assert x("$__timeFilter(dateColumn)") == "dateColumn BETWEEN '2017-04-21T05:01:17Z' AND '2017-04-21T05:06:17Z'"
    assert x("$__timeFrom()::timestamp") == "'2017-04-21T05:01:17Z'::timestamp"
    assert x("$__timeGroup(dateColumn,'5m')") == "floor(extract(epoch from dateColumn)/300)*300"
    assert x("$__timeGroupAlias(dateColumn, $__interval)") == 'floor(extract(epoch from dateColumn)/0.2)*0.2 AS "time"'
    assert x("$__timeEpoch(dateColumn)") == 'extract(epoch from dateColumn) as "time"'
    assert x("$__unixEpochFilter(t)") == f"t >= {int(start.timestamp())} AND t <= {int(end.timestamp())}"
    # 300 s over 1000 points: 300 ms, rounded down to 200 ms as Grafana's roundInterval does.
    assert x("$__interval_ms $__interval") == "200 200ms"
    assert x("WHERE s = '$sensor' AND m = '${metric}'", sensor=gf.sql_value("it's"), metric="t") == (
        "WHERE s = 'it''s' AND m = 't'")
    assert gf.sql_value("a", multi=True, values=["a", "b'c"]) == "'a','b''c'"
    for bad in ("$nope", "$__timeFilter(t) $also"):
        try:
            x(bad)
        except ValueError:
            continue
        raise AssertionError(f"{bad!r} left unexpanded without an error")


def test_rule_measures_drop_thresholds_and_absent():
    assert gf.rule_measures("pipeline_ready == 0") == ["pipeline_ready"]
    assert gf.rule_measures('absent(up{job="x"})') == ['up{job="x"}']
    assert gf.rule_measures("sum by (i) (a) > 1000\n and sum by (i) (deriv(a[10m])) > 0") == [
        "sum by (i) (a)", "sum by (i) (deriv(a[10m]))"]
    assert gf.rule_measures("rate(x[5m]) > 0.1") == ["rate(x[5m])"]
