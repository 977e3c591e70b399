-- Application logs shipped over MQTT (<logs root>/<app>): stored to be searched by app, level and time,
-- and counted per window into measurements (metric log_<level> of sensor app:<app>). Timestamps hold UTC.
CREATE TABLE logs (
    id BIGSERIAL PRIMARY KEY,
    app VARCHAR(50) NOT NULL,
    level VARCHAR(10) NOT NULL,
    message TEXT NOT NULL,
    logger VARCHAR(200),
    extra JSONB NOT NULL DEFAULT '{}',
    timestamp TIMESTAMP NOT NULL,
    received_at TIMESTAMP NOT NULL,
    kafka_partition INTEGER,
    kafka_offset BIGINT
);
-- One app's logs over a time range (dashboards, investigations).
CREATE INDEX logs_app_ts ON logs (app, timestamp);
-- Errors (or any level) across apps over a time range.
CREATE INDEX logs_level_ts ON logs (level, timestamp);
-- Per-window counting and retention select by time alone; BRIN stays tiny for rows that arrive
-- roughly in time order.
CREATE INDEX logs_ts_brin ON logs USING brin (timestamp);
-- A record's delivery identity (Kafka partition and offset, plus the receive time, which tells apart
-- an offset reused by a broker that lost its topics): a batch redelivered after a crash inserts
-- nothing twice, so the counts derived from this table stay exact.
CREATE UNIQUE INDEX logs_delivery_identity ON logs (kafka_partition, kafka_offset, received_at);
