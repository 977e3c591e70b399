-- Retention deletes raw readings and aggregation rows by age, in short batches (pipeline/retention.py).
-- The existing unique indexes lead with sensor_id, so they cannot serve "everything older than X": without
-- these, every batch would scan the whole table. A B-tree rather than BRIN: deleted rows stay until VACUUM,
-- and a B-tree scan learns to skip them (killed index entries) where a BRIN scan would re-read their pages
-- on every batch. Its cost on the write path is measured in bench/RESULTS.md ("Retention").
-- On a large existing table, create them first with CREATE INDEX CONCURRENTLY (same names): then this
-- migration does nothing and writes never wait.
CREATE INDEX IF NOT EXISTS measurements_timestamp ON measurements (timestamp);
CREATE INDEX IF NOT EXISTS aggregations_period_timestamp ON aggregations (period, timestamp);
