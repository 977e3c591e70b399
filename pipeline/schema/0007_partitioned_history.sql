-- `measurements` and `logs` become range-partitioned on `timestamp`, so retention drops whole partitions
-- instead of deleting rows (pipeline/partitions.py makes the partitions; README, "Storage").
--
-- An existing table is not copied: it is renamed and attached as one partition holding everything up to
-- the end of the current day (FROM MINVALUE). A CHECK constraint proving that range is validated first, so
-- ATTACH skips its own scan; the unique index on the reading identity is reused as it is. The cost is one
-- read of the table for the CHECK and one for its BRIN index: no row is rewritten, no index is sorted. Both
-- reads can be done beforehand while the daemon runs (docs/operations.md, "Converting a large table"):
-- then this migration only renames and attaches.
-- The old table keeps its own B-tree on `timestamp` (0006), which retention uses to trim it row by row
-- while it straddles the limit, and its index on `id`. An empty table is simply replaced.
--
-- What changes: a partitioned table cannot have a primary key without the partition key, so `id` keeps its
-- sequence (values continue) and a BRIN index (polling by id > N stays cheap) but is no longer a key on
-- its own; the reading identity (sensor_id, metric, timestamp) is the table's key. For `logs`, the delivery
-- identity gains `timestamp` (a redelivered record carries the same one, so it skips exactly as before).

CREATE FUNCTION pg_temp.attach_legacy(tbl text, legacy text) RETURNS void LANGUAGE plpgsql AS $fn$
DECLARE
    has_rows boolean;
    upper_bound timestamp;
BEGIN
    EXECUTE format('SELECT EXISTS (SELECT 1 FROM %I)', legacy) INTO has_rows;
    IF NOT has_rows THEN
        EXECUTE format('DROP TABLE %I', legacy);
        RETURN;
    END IF;
    -- Made beforehand, online (docs/operations.md, "Converting a large table"): a validated
    -- CHECK (timestamp < '...') named <table>_before proves the range, and this migration reads nothing.
    SELECT substring(pg_get_constraintdef(c.oid) FROM '^CHECK \(\("timestamp" < ''([^'']*)''::timestamp without time zone\)\)$')::timestamp
      INTO upper_bound
      FROM pg_constraint c WHERE c.conrelid = legacy::regclass AND c.conname = tbl || '_before' AND c.convalidated;
    IF upper_bound IS NULL THEN
        -- For measurements max() comes from the time index of 0006 (logs: one scan, a far smaller table).
        EXECUTE format('SELECT date_trunc(''day'', greatest(max(timestamp), now() AT TIME ZONE ''utc'')) + interval ''1 day'' FROM %I',
                       legacy) INTO upper_bound;
        EXECUTE format('ALTER TABLE %I ADD CONSTRAINT %I CHECK (timestamp < %L)', legacy, tbl || '_before', upper_bound);
    END IF;
    EXECUTE format('ALTER TABLE %I ATTACH PARTITION %I FOR VALUES FROM (MINVALUE) TO (%L)', tbl, legacy, upper_bound);
    -- The partition constraint says the same now.
    EXECUTE format('ALTER TABLE %I DROP CONSTRAINT %I', legacy, tbl || '_before');
END
$fn$;

-- measurements ------------------------------------------------------------------------------------------
ALTER TABLE measurements RENAME TO measurements_legacy;
ALTER TABLE measurements_legacy RENAME CONSTRAINT measurements_pkey TO measurements_legacy_pkey;
ALTER TABLE measurements_legacy RENAME CONSTRAINT measurements_sensor_id_fkey TO measurements_legacy_sensor_id_fkey;
ALTER INDEX measurements_reading_identity RENAME TO measurements_legacy_reading_identity;
ALTER INDEX measurements_timestamp RENAME TO measurements_legacy_timestamp;
ALTER SEQUENCE measurements_id_seq OWNED BY NONE;

CREATE TABLE measurements (
    id BIGINT NOT NULL DEFAULT nextval('measurements_id_seq'),
    sensor_id VARCHAR(50) REFERENCES sensors(sensor_id),
    metric VARCHAR(20) NOT NULL,
    value DOUBLE PRECISION NOT NULL,
    timestamp TIMESTAMP NOT NULL,
    processed BOOLEAN DEFAULT FALSE
) PARTITION BY RANGE (timestamp);
ALTER SEQUENCE measurements_id_seq OWNED BY measurements.id;
-- Per partition: the reading identity (exactly-once inserts, per-sensor history), and one BRIN over time
-- and id (rows arrive in time order: a few kB per partition serve time ranges and polling by id). Block
-- ranges are summarised as they fill (autosummarize), not only by VACUUM: an unsummarised range is read by
-- every scan.
CREATE UNIQUE INDEX measurements_reading_identity ON measurements (sensor_id, metric, timestamp);
CREATE INDEX measurements_time_brin ON measurements USING brin (timestamp, id) WITH (autosummarize = on);
SELECT pg_temp.attach_legacy('measurements', 'measurements_legacy');

-- logs ----------------------------------------------------------------------------------------------------
ALTER TABLE logs RENAME TO logs_legacy;
ALTER TABLE logs_legacy RENAME CONSTRAINT logs_pkey TO logs_legacy_pkey;
ALTER INDEX logs_app_ts RENAME TO logs_legacy_app_ts;
ALTER INDEX logs_level_ts RENAME TO logs_legacy_level_ts;
ALTER INDEX logs_ts_brin RENAME TO logs_legacy_ts_brin;
ALTER INDEX logs_delivery_identity RENAME TO logs_legacy_delivery_identity;
ALTER SEQUENCE logs_id_seq OWNED BY NONE;

CREATE TABLE logs (
    id BIGINT NOT NULL DEFAULT nextval('logs_id_seq'),
    app VARCHAR(50) NOT NULL,
    level VARCHAR(10) NOT NULL,
    message TEXT NOT NULL,
    logger VARCHAR(200),
    extra JSONB NOT NULL DEFAULT '{}',
    timestamp TIMESTAMP NOT NULL,
    received_at TIMESTAMP NOT NULL,
    kafka_partition INTEGER,
    kafka_offset BIGINT
) PARTITION BY RANGE (timestamp);
ALTER SEQUENCE logs_id_seq OWNED BY logs.id;
-- The same indexes as 0005 (reused as they are by the old table), the delivery identity with `timestamp`.
CREATE INDEX logs_app_ts ON logs (app, timestamp);
CREATE INDEX logs_level_ts ON logs (level, timestamp);
CREATE INDEX logs_ts_brin ON logs USING brin (timestamp);
CREATE UNIQUE INDEX logs_delivery_identity ON logs (kafka_partition, kafka_offset, received_at, timestamp);
SELECT pg_temp.attach_legacy('logs', 'logs_legacy');
