"""The OpenAPI 3.1 description of the daemon's JSON API, served at `GET /api/openapi.json`.

Written by hand beside the routes (api.py, alert_actions.py, health.py); tests/integration/test_series_api.py
checks it against the OpenAPI specification, that every /api route of the app is described, and real answers
against its schemas. Schemas name the fields clients rely on; objects stay open to fields added later.
"""
from __future__ import annotations

from flask import Blueprint, jsonify

from .. import __version__
from .series import MAX_POINTS

bp = Blueprint("openapi", __name__, url_prefix="/api")


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict, description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


NUM = {"type": "number"}
NUM_OR_NULL = {"type": ["number", "null"]}
STR_OR_NULL = {"type": ["string", "null"]}
ERROR = _json(_ref("Error"), "a bad parameter (naming it), unknown id, conflict or missing token")
UNAVAILABLE = _json(_ref("Error"), "PostgreSQL or Redis did not answer (`dependency` names it)")


def _q(name: str, schema: dict, description: str, required: bool = False) -> dict:
    return {"name": name, "in": "query", "required": required, "schema": schema, "description": description}


def _path(name: str, schema: dict | None = None) -> dict:
    return {"name": name, "in": "path", "required": True, "schema": schema or {"type": "string"}}


def _op(summary: str, ok: dict, params: list | None = None, body: dict | None = None, writes: bool = False,
        errors: tuple[str, ...] = ("400", "503"), ok_code: str = "200") -> dict:
    responses: dict = {ok_code: ok}
    for code in errors:
        responses[code] = UNAVAILABLE if code == "503" else ERROR
    op: dict = {"summary": summary, "responses": responses}
    if params:
        op["parameters"] = params
    if body is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
    if writes:
        op["security"] = [{"bearer": []}]
    return op


WHO_NOTE = {"who": {"type": "string", "maxLength": 100}, "note": {"type": "string"}}
ALERT_ID = _path("alert_id", {"type": "integer", "minimum": 1})
SCHEMAS = {
    "Error": {"type": "object", "required": ["error"],
              "properties": {"error": {"type": "string"}, "parameter": {"type": "string"}, "status": {"type": "integer"},
                             "dependency": {"type": "string"}}},
    "Alert": {"type": "object", "required": ["id", "sensor_id", "type", "severity", "resolved"],
              "properties": {"id": {"type": "integer"}, "sensor_id": {"type": "string"}, "type": {"type": "string"},
                             "message": STR_OR_NULL, "severity": {"type": "string"}, "timestamp": NUM,
                             "resolved": {"type": "boolean"}, "resolved_at": NUM_OR_NULL, "metric": STR_OR_NULL,
                             "acknowledged": {"type": "boolean"}, "acknowledged_at": NUM_OR_NULL,
                             "acknowledged_by": STR_OR_NULL, "snoozed_until": NUM_OR_NULL,
                             "flapping": {"type": "boolean"}, "maintenance": {"type": "boolean"}}},
    "Snooze": {"type": "object", "required": ["id", "until"],
               "properties": {"id": {"type": "integer"}, "alert_id": {"type": ["integer", "null"]},
                              "sensor_id": STR_OR_NULL, "metric": STR_OR_NULL, "type": STR_OR_NULL, "until": NUM,
                              "created_at": NUM_OR_NULL, "created_by": STR_OR_NULL, "note": STR_OR_NULL,
                              "ended_at": NUM_OR_NULL, "ended_by": STR_OR_NULL}},
    "Latest": {"type": "object", "required": ["metrics"],
               "properties": {"type": STR_OR_NULL, "location": STR_OR_NULL, "updated_at": NUM_OR_NULL,
                              "metrics": {"type": "object", "additionalProperties": {
                                  "type": "object", "required": ["value", "ts"],
                                  "properties": {"value": NUM_OR_NULL, "ts": NUM_OR_NULL}}}}},
    "SensorList": {"type": "object", "required": ["total", "offset", "limit", "sensors"],
                   "properties": {"total": {"type": "integer"}, "offset": {"type": "integer"}, "limit": {"type": "integer"},
                                  "sensors": {"type": "array", "items": {"allOf": [_ref("Latest"), {
                                      "type": "object", "required": ["sensor_id"],
                                      "properties": {"sensor_id": {"type": "string"}}}]}},
                                  "sparklines": {"type": "object"}}},
    "Sensor": {"allOf": [_ref("Latest"), {"type": "object", "required": ["sensor_id", "registered_at", "open_alerts"],
                                          "properties": {"sensor_id": {"type": "string"}, "registered_at": NUM_OR_NULL,
                                                         "open_alerts": {"type": "array", "items": _ref("Alert")}}}]},
    "Trend": {"type": "object", "required": ["sensor_id", "metric", "period", "from", "to", "source", "t", "avg", "min",
                                             "max", "count"],
              "properties": {"sensor_id": {"type": "string"}, "metric": {"type": "string"}, "period": {"type": "string"},
                             "from": NUM, "to": NUM, "source": {"enum": ["aggregations", "measurements", "none"]},
                             **{k: {"type": "array", "items": NUM_OR_NULL} for k in ("t", "avg", "min", "max", "count")}}},
    "Series": {"type": "object",
               "required": ["sensor_id", "metric", "from", "to", "resolution", "step_s", "points_asked", "limit",
                            "truncated", "count", "points"],
               "properties": {"sensor_id": {"type": "string"}, "metric": {"type": "string"}, "from": NUM, "to": NUM,
                              "resolution": {"type": "string", "description": "`raw` or an aggregation period"},
                              "step_s": {"type": "integer", "description": "0 for raw readings"},
                              "points_asked": {"type": "integer"}, "limit": {"type": "integer"},
                              "truncated": {"type": "boolean"}, "count": {"type": "integer"},
                              "points": {"type": "array", "maxItems": MAX_POINTS, "items": {"oneOf": [
                                  {"type": "object", "required": ["t", "value"], "additionalProperties": False,
                                   "properties": {"t": NUM, "value": NUM_OR_NULL}},
                                  {"type": "object", "required": ["t", "avg", "min", "max", "count"],
                                   "additionalProperties": False,
                                   "properties": {"t": NUM, "avg": NUM_OR_NULL, "min": NUM_OR_NULL, "max": NUM_OR_NULL,
                                                  "count": {"type": "integer"}}}]}}}},
    "AlertList": {"type": "object", "required": ["status", "state", "count", "alerts"],
                  "properties": {"status": {"enum": ["open", "resolved", "all"]}, "state": STR_OR_NULL,
                                 "count": {"type": "integer"}, "alerts": {"type": "array", "items": _ref("Alert")}}},
    "Pipeline": {"type": "object",
                 "required": ["instance_id", "version", "uptime_s", "throughput", "latency", "totals", "queues",
                              "consumer_lag", "dead_letters", "recent_errors", "history"],
                 "properties": {"instance_id": {"type": "string"}, "version": {"type": "string"}, "uptime_s": NUM,
                                "throughput": {"type": "object", "additionalProperties": NUM_OR_NULL},
                                "latency": {"type": "object"}, "totals": {"type": "object"},
                                "queues": {"type": "object", "additionalProperties": {"type": "integer"}},
                                "consumer_lag": {"type": "object", "required": ["total", "partitions"]},
                                "dead_letters": {"type": "object", "additionalProperties": NUM},
                                "recent_errors": {"type": "array"}, "history": {"type": "array"}}},
    "Mappings": {"type": "object", "required": ["mappings"], "properties": {"mappings": {"type": "array", "items": {
        "type": "object", "required": ["name", "messages", "refused"],
        "properties": {"name": {"type": "string"}, "topic": {"type": "string"}, "encoding": {"type": "string"},
                       "messages": {"type": "integer"}, "rate_per_s": NUM_OR_NULL, "readings": {"type": "integer"},
                       "readings_per_message": NUM_OR_NULL, "text_skipped": {"type": "integer"},
                       "ignored": {"type": "integer"}, "refused": {"type": "integer"},
                       "readings_refused": {"type": "integer"},
                       "last_refused": {"type": ["object", "null"], "properties": {
                           "at": NUM, "topic": {"type": "string"}, "reason": {"type": "string"},
                           "error": {"type": "string"}, "payload": {"type": "string"},
                           "payload_bytes": {"type": "integer"}}}}}}}},
    "Health": {"type": "object", "required": ["status"],
               "properties": {"status": {"enum": ["ok", "failing"]}, "uptime_s": NUM, "threads": {"type": "object"},
                              "failures": {"type": "array"}}},
    "Ready": {"type": "object", "required": ["ready", "failing"],
              "properties": {"ready": {"type": "boolean"}, "failing": {"type": "array", "items": {"type": "string"}},
                             "problems": {"type": "object"}, "checks": {"type": "object"}}},
}
SERIES_PARAMS = [
    _q("sensor", {"type": "string", "maxLength": 50}, "sensor id", required=True),
    _q("metric", {"type": "string", "maxLength": 20, "pattern": "^[A-Za-z][A-Za-z0-9_]*$"}, "metric name", required=True),
    _q("from", {"type": "string"}, "start (epoch seconds or ISO-8601; naive is UTC); default: `to` minus a day"),
    _q("to", {"type": "string"}, "end, exclusive (epoch seconds or ISO-8601); default: now"),
    _q("points", {"type": "integer", "minimum": 1, "maximum": MAX_POINTS, "default": 300},
       "the fewest points wanted: the coarsest stored resolution giving at least this many is used"),
    _q("format", {"enum": ["json", "csv"], "default": "json"}, "csv: a header line, then one line per point"),
]
PATHS = {
    "/api/openapi.json": {"get": _op("This description", {"description": "OpenAPI 3.1 document",
                                                          "content": {"application/json": {"schema": {"type": "object"}}}},
                                     errors=())},
    "/api/sensors": {"get": _op("Sensors with their latest values", _json(_ref("SensorList"), "a page of sensors"), [
        _q("q", {"type": "string", "maxLength": 100}, "matches id, type or location"),
        _q("limit", {"type": "integer", "minimum": 1, "maximum": 1000}, "page size"),
        _q("offset", {"type": "integer", "minimum": 0}, "page start"),
        _q("spark", {"type": "integer", "minimum": 0, "maximum": 120}, "minutes of small trends")])},
    "/api/sensors/{sensor_id}": {"get": _op("One sensor", _json(_ref("Sensor"), "the sensor"), [_path("sensor_id")],
                                            errors=("400", "404", "503"))},
    "/api/sensors/{sensor_id}/trend": {"get": _op("avg/min/max per period", _json(_ref("Trend"), "columns per period"), [
        _path("sensor_id"), _q("metric", {"type": "string"}, "metric name", required=True),
        _q("period", {"enum": ["1m", "5m", "1h", "1d"]}, "period"), _q("from", {"type": "string"}, "start"),
        _q("to", {"type": "string"}, "end")])},
    "/api/series": {"get": {**_op("A metric at the resolution that suits the range",
                                  {"description": "the points (JSON), or CSV with format=csv",
                                   "content": {"application/json": {"schema": _ref("Series")},
                                               "text/csv": {"schema": {"type": "string"}}}}, SERIES_PARAMS)}},
    "/api/alerts": {"get": _op("Alerts by status or state", _json(_ref("AlertList"), "alerts"), [
        _q("status", {"enum": ["open", "resolved", "all"]}, "status"),
        _q("state", {"enum": ["open", "acknowledged", "snoozed", "flapping", "resolved"]}, "state"),
        _q("severity", {"type": "string"}, "severity"), _q("sensor_id", {"type": "string"}, "sensor"),
        _q("limit", {"type": "integer", "minimum": 1, "maximum": 1000}, "at most")])},
    "/api/alerts/{alert_id}/resolve": {"post": _op("Resolve an alert by hand", _json(
        {"type": "object", "required": ["alert"], "properties": {"alert": _ref("Alert")}}, "resolved"), [ALERT_ID],
        writes=True, errors=("400", "401", "404", "409", "503"))},
    "/api/alerts/{alert_id}/ack": {"post": _op("Acknowledge an alert", _json(
        {"type": "object", "required": ["alert"], "properties": {"alert": _ref("Alert")}}, "acknowledged"), [ALERT_ID],
        {"type": "object", "required": ["who"], "properties": WHO_NOTE}, writes=True,
        errors=("400", "401", "404", "409", "503"))},
    "/api/alerts/{alert_id}/snooze": {"post": _op("Snooze one alert", _json(
        {"type": "object", "required": ["snooze"], "properties": {"snooze": _ref("Snooze")}}, "snoozed"), [ALERT_ID],
        {"type": "object", "required": ["duration_s", "who"], "properties": {"duration_s": NUM, **WHO_NOTE}},
        writes=True, errors=("400", "401", "404", "409", "503"))},
    "/api/snoozes": {
        "get": _op("Snoozes in force", _json({"type": "object", "required": ["count", "snoozes"], "properties": {
            "count": {"type": "integer"}, "snoozes": {"type": "array", "items": _ref("Snooze")}}}, "snoozes"),
            [_q("limit", {"type": "integer", "minimum": 1, "maximum": 1000}, "at most")]),
        "post": _op("Snooze a sensor and/or a rule", _json(
            {"type": "object", "required": ["snooze"], "properties": {"snooze": _ref("Snooze")}}, "created"), None,
            {"type": "object", "required": ["duration_s", "who"], "properties": {
                "sensor_id": {"type": "string"}, "rule": {"type": "object", "properties": {
                    "metric": {"type": "string"}, "type": {"type": "string"}}}, "duration_s": NUM, **WHO_NOTE}},
            writes=True, errors=("400", "401", "503"), ok_code="201")},
    "/api/snoozes/{snooze_id}": {"delete": _op("End a snooze now", _json(
        {"type": "object", "required": ["snooze"], "properties": {"snooze": _ref("Snooze")}}, "ended"),
        [_path("snooze_id", {"type": "integer", "minimum": 1})],
        {"type": "object", "required": ["who"], "properties": WHO_NOTE}, writes=True,
        errors=("400", "401", "404", "409", "503"))},
    "/api/pipeline": {"get": _op("The pipeline's live numbers", _json(_ref("Pipeline"), "throughput, lag, dead letters"), [
        _q("history", {"type": "integer", "minimum": 0, "maximum": 3600}, "seconds of per-second points"),
        _q("errors", {"type": "integer", "minimum": 0, "maximum": 200}, "recent errors")])},
    "/api/mappings": {"get": _op("Counts of the configured payload mappings (config `sources:`)",
                                 _json(_ref("Mappings"), "per mapping: messages, rate, refusals, last refused sample"),
                                 errors=())},
    "/health": {"get": {"summary": "Liveness", "security": [], "responses": {
        "200": _json(_ref("Health"), "alive"), "503": _json(_ref("Health"), "a worker thread died")}}},
    "/ready": {"get": {"summary": "Readiness per dependency", "security": [], "responses": {
        "200": _json(_ref("Ready"), "ready"), "503": _json(_ref("Ready"), "not ready: `failing` names what")}}},
}


def document() -> dict:
    """The OpenAPI document (its parts are shared constants: read it, do not change it)."""
    return {
        "openapi": "3.1.0",
        "info": {"title": "Real-time IoT pipeline API", "version": __version__,
                 "description": "The daemon's JSON API (docs/dashboard.md). Reads need the bearer token when "
                                "dashboard.require_token_for_reads is set (or the dashboard listens beyond "
                                "loopback); changes always need it."},
        "components": {"schemas": SCHEMAS,
                       "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                                      "description": "DASHBOARD_TOKEN"}}},
        "paths": PATHS,
    }


@bp.get("/openapi.json")
def openapi():
    """This API's OpenAPI 3.1 description."""
    return jsonify(document())
