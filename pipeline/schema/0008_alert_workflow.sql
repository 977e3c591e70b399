-- The operator's side of an alert: acknowledge it, snooze it (or every alert of a sensor or a rule) for a
-- while, and see which transitions were not notified and why (pipeline/operators/alerts/silences.py).

-- Acknowledged: someone is on it. Its further transitions are stored but not notified again.
ALTER TABLE alerts ADD COLUMN acknowledged_at TIMESTAMP;
ALTER TABLE alerts ADD COLUMN acknowledged_by VARCHAR(100);
-- The daemon reloads acknowledged alerts every tick: the open ones and those resolved lately.
CREATE INDEX alerts_acknowledged ON alerts (resolved_at) WHERE acknowledged_at IS NOT NULL;

-- A snooze: one alert (alert_id), or every alert whose sensor, metric and type equal the columns given
-- (NULL matches anything), until `until`. Unsnoozing ends it early (ended_at); rows are kept as history.
-- No foreign key to alerts: the history outlives pruned alerts (as alert_events does).
CREATE TABLE alert_snoozes (
    id BIGSERIAL PRIMARY KEY,
    alert_id BIGINT,
    sensor_id VARCHAR(50),
    metric VARCHAR(20),
    type VARCHAR(20),
    until TIMESTAMP NOT NULL,
    created_at TIMESTAMP NOT NULL DEFAULT (now() AT TIME ZONE 'utc'),
    created_by VARCHAR(100) NOT NULL,
    note TEXT NOT NULL DEFAULT '',
    ended_at TIMESTAMP,
    ended_by VARCHAR(100),
    -- Either one alert or a scope of sensor and/or rule, never both and never neither.
    CONSTRAINT alert_snoozes_scope CHECK ((alert_id IS NOT NULL) <> (sensor_id IS NOT NULL OR metric IS NOT NULL OR type IS NOT NULL))
);
CREATE INDEX alert_snoozes_active ON alert_snoozes (until) WHERE ended_at IS NULL;

-- The history gains the operator's events (ack, snooze, unsnooze) with who and a note. A snooze of a sensor
-- or a rule concerns no single alert: alert_id and severity become optional, snooze_id names the snooze.
-- `silenced` says why a transition was stored but not notified (acknowledged, snoozed, maintenance).
ALTER TABLE alert_events ALTER COLUMN alert_id DROP NOT NULL;
ALTER TABLE alert_events ALTER COLUMN severity DROP NOT NULL;
ALTER TABLE alert_events ADD COLUMN who VARCHAR(100);
ALTER TABLE alert_events ADD COLUMN note TEXT;
ALTER TABLE alert_events ADD COLUMN snooze_id BIGINT;
ALTER TABLE alert_events ADD COLUMN silenced VARCHAR(12);
