"""A plug-in module as a user would write one, named in a daemon's `plugins:` config (test_plugins.py): importing it
registers a payload format, "metric;value" lines on <root>/plant/<sensor_id>/semicolon."""
from pipeline.records import Invalid
from pipeline.registry import formats
from pipeline.stages.decode import Candidate


def decode_semicolon(msg, levels, limits):
    """One reading a line."""
    out = []
    for line in msg.payload.decode().splitlines():
        metric, sep, value = line.partition(";")
        if not sep:
            raise Invalid("semicolon_missing", f"no ';' in {line[:40]!r}")
        out.append(Candidate(levels["sensor_id"], metric, float(value), None, None, None, None, msg))
    return out


formats.register(formats.Format("semicolon", "{root}/plant/{sensor_id}/semicolon", decode_semicolon))
