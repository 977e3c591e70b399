"""The `sensors` table's shared statement: the PostgreSQL sink and the alert store register new sensors with it."""

# One statement for every new sensor of a batch: a per-row INSERT each held 50,000 new sensors to a few hundred
# readings/s. The first registration stays (the registry is the truth about type and location; readings only fill
# it in once).
INSERT_SENSORS = ("INSERT INTO sensors (sensor_id, type, location) "
                  "SELECT * FROM unnest(%s::varchar[], %s::varchar[], %s::varchar[]) ON CONFLICT (sensor_id) DO NOTHING")
