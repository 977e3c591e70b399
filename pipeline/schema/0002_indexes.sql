-- A reading's identity is (sensor_id, metric, timestamp): the unique key makes a redelivered reading
-- (Kafka replay after a crash, an MQTT resend) a no-op instead of a second row, and serves the
-- per-sensor history queries (sensor, metric, time range) as well.
CREATE UNIQUE INDEX measurements_reading_identity ON measurements (sensor_id, metric, timestamp);
-- History of aggregations reads one sensor's metric and period over a time range.
CREATE INDEX aggregations_sensor_metric_period_ts ON aggregations (sensor_id, metric, period, timestamp);
-- The open-alert list and the reload of open alerts at start-up filter on resolved.
CREATE INDEX alerts_open ON alerts (sensor_id, type) WHERE NOT resolved;
