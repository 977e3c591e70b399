-- The Sparkplug B host application's birth certificates (pipeline/operators/sparkplug/): per edge node and device
-- ('' the node itself), the metrics a birth defined (alias, name, datatype), with the Kafka position of the birth
-- message. Written before the birth's offset is committed, so a restart (kill -9 between a DBIRTH and its DDATA
-- included) reads data by the birth that preceded it. A death is a row with metrics NULL.
CREATE TABLE sparkplug_births (
    group_id        TEXT NOT NULL,
    edge_node_id    TEXT NOT NULL,
    device_id       TEXT NOT NULL,
    kafka_partition INTEGER NOT NULL,
    kafka_offset    BIGINT NOT NULL,
    bd_seq          BIGINT,
    metrics         JSONB,
    stored_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (group_id, edge_node_id, device_id, kafka_offset)
);
CREATE INDEX sparkplug_births_partition ON sparkplug_births (kafka_partition);
