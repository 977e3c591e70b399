-- Alerts name the metric they are about (NULL for sensor-wide ones such as `offline`), so that "one open
-- alert per sensor, metric and detector" can be stated and enforced.
ALTER TABLE alerts ADD COLUMN metric VARCHAR(20);

-- Before the key below can exist, older duplicates of an open alert are closed, keeping the newest open.
UPDATE alerts a SET resolved = TRUE, resolved_at = (now() AT TIME ZONE 'utc')
 WHERE NOT a.resolved AND EXISTS (
   SELECT 1 FROM alerts b WHERE NOT b.resolved AND b.sensor_id = a.sensor_id AND b.type = a.type
      AND COALESCE(b.metric, '') = COALESCE(a.metric, '') AND b.id > a.id);
-- At most one open alert per (sensor, metric, type): a restart, a replay or a second instance can never
-- open a duplicate. COALESCE because NULLs never conflict in a unique index.
CREATE UNIQUE INDEX alerts_one_open ON alerts (sensor_id, COALESCE(metric, ''), type) WHERE NOT resolved;
-- The new index serves the open-alert list and the reload at start-up; 0002's narrower one is redundant.
DROP INDEX alerts_open;

-- What happened to each alert and when: opened, escalated (in place, severity raised), resolved. The alert
-- row shows the current state; this is its history. No foreign key: the history outlives pruned alerts.
CREATE TABLE alert_events (
    id BIGSERIAL PRIMARY KEY,
    alert_id BIGINT NOT NULL,
    event VARCHAR(10) NOT NULL,
    severity VARCHAR(10) NOT NULL,
    message TEXT NOT NULL,
    timestamp TIMESTAMP NOT NULL
);
CREATE INDEX alert_events_alert ON alert_events (alert_id, id);
