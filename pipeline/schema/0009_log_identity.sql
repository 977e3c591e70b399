-- A log record's identity no longer depends on where Kafka stored it: a record replayed to the raw topic (or
-- resent by its shipper) lands at a new offset, and the old key (kafka_partition, kafka_offset, received_at)
-- stored it twice. The key now comes from the record: `id:<id>` when the producer gave it an id (the logship
-- handler does: boot id and sequence), else `h:<hash>` of its content and its MQTT receive stamp, which
-- travels with it through Kafka and replay (pipeline/sinks/logs.py: record_key). With the app and the event
-- time (the partition key, which a unique index on a partitioned table must hold) it is unique.
-- Rows stored before keep record_key NULL (NULLs never conflict): the Kafka position stays as information.
ALTER TABLE logs ADD COLUMN record_key TEXT;
DROP INDEX logs_delivery_identity;
CREATE UNIQUE INDEX logs_record_identity ON logs (app, record_key, timestamp);
