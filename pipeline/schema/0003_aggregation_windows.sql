-- Windows are recomputed from `measurements` whenever a replay, a restart or a late reading touches them,
-- and written with an upsert that overwrites: the unique key makes "the same readings always give the
-- same rows, never doubled" a property of the schema. Duplicates from before this key (none are written by
-- earlier versions, but a manual load could have made some) keep only their newest row.
DELETE FROM aggregations a USING aggregations b
 WHERE a.sensor_id = b.sensor_id AND a.metric = b.metric AND a.period = b.period AND a.timestamp = b.timestamp
   AND a.id < b.id;
CREATE UNIQUE INDEX aggregations_window_identity ON aggregations (sensor_id, metric, period, timestamp);
-- The unique index has the same columns in the same order: the plain one from 0002 only costs writes now.
DROP INDEX aggregations_sensor_metric_period_ts;

-- Windows holding readings that are not folded into `aggregations` yet. A row is written in the same
-- transaction as the readings that open (or, late, reopen) the window, and deleted in the same
-- transaction that writes the window's row: after a kill -9 this table says exactly which windows still
-- have to be closed, whatever Kafka offsets were committed. kafka_partition is the partition whose
-- watermark closes the window.
CREATE TABLE aggregation_pending (
    period VARCHAR(10) NOT NULL,
    window_start TIMESTAMP NOT NULL,
    sensor_id VARCHAR(50) NOT NULL,
    metric VARCHAR(20) NOT NULL,
    window_end TIMESTAMP NOT NULL,
    kafka_partition INTEGER NOT NULL,
    PRIMARY KEY (period, window_start, sensor_id, metric)
);
