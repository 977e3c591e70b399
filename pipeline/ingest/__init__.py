"""Where readings enter: the MQTT bridge (receive stamp, hand-off to Kafka, acknowledgement after delivery), the
fenced MQTT fast path, the Kafka source that feeds the stages, and the broker's own drop counters."""
