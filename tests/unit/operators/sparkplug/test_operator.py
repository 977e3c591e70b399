"""The sparkplug operator with its collaborators faked: births saved before the batch goes on, rebirth requests
published as NCMD `Node Control/Rebirth` = true, none with sparkplug.rebirth_requests false, deaths handed on as
SensorOffline, refusals named."""
from prometheus_client import CollectorRegistry

from pipeline.config import parse
from pipeline.observability.metrics import Metrics
from pipeline.operators.sparkplug.operator import SparkplugOperator
from pipeline.operators.sparkplug.proto import DataType, Payload
from pipeline.records import SensorOffline
from pipeline.registry.formats import OperatorServices
from pipeline.runtime.stage import Refused
from pipeline.stages.decode import Candidate
from tests.unit.operators.sparkplug.spb import dbirth, ddata, message, nbirth, ndeath


class FakeStore:
    def __init__(self):
        self.saved: list = []

    def save(self, births):
        self.saved.append(list(births))

    def load(self, partitions):
        return [b for batch in self.saved for b in batch if b.partition in partitions]

    def close(self):
        pass


def operator(**sparkplug):
    published: list = []
    services = OperatorServices(parse({"sparkplug": sparkplug}), Metrics(CollectorRegistry()), lambda: None,
                                lambda topic, payload, retain: published.append((topic, payload, retain)) or True,
                                lambda fn, _op: fn())
    op = SparkplugOperator(services, clock=lambda: 1000.0)
    op.store = FakeStore()
    return op, published


def batch(*items):
    return [m for n, (topic, data) in enumerate(items, start=1) for m in message(topic, data, n)]


def test_births_are_saved_before_the_batch_goes_on_and_data_resolves():
    op, published = operator()
    refused = Refused()
    out = op.process_batch(batch(("spBv1.0/G/NBIRTH/E", nbirth(seq=0)), ("spBv1.0/G/DBIRTH/E/D", dbirth(seq=1)),
                                 ("spBv1.0/G/DDATA/E/D", ddata(seq=2, temp=30.0))), refused)
    assert [[(b.device_id, b.offset) for b in births] for births in op.store.saved] == [[("", 1), ("D", 2)]]
    assert [(c.sensor_id, c.metric, c.value) for c in out if isinstance(c, Candidate)] == [
        ("G_E_D", "inputs_temperature", 21.5), ("G_E_D", "outputs_pump", 1.0), ("G_E_D", "inputs_temperature", 30.0)]
    assert refused.entries == [] and published == []
    # A second operator (a restart) reads the births back for its partitions and resolves the same alias.
    again, _ = operator()
    again.store = op.store
    again.partitions_assigned({0})
    out = again.process_batch(message("spBv1.0/G/DDATA/E/D", ddata(seq=3, temp=31.0), 9), Refused())
    assert [(c.metric, c.value) for c in out] == [("inputs_temperature", 31.0)]


def test_data_before_birth_is_refused_and_answered_by_an_ncmd_rebirth():
    op, published = operator()
    refused = Refused()
    assert op.process_batch(batch(("spBv1.0/G/NDATA/E", ddata(seq=4, temp=1.0))), refused) == []
    [(_, err)] = refused.entries
    assert err.reason == "sparkplug_before_birth"
    [(topic, data, retain)] = published
    assert (topic, retain) == ("spBv1.0/G/NCMD/E", False)
    p = Payload()
    p.ParseFromString(data)
    [(name, datatype, value)] = [(m.name, m.datatype, m.boolean_value) for m in p.metrics]
    assert (name, datatype, value) == ("Node Control/Rebirth", DataType.Boolean, True)


def test_no_ncmd_when_rebirth_requests_are_off():
    op, published = operator(rebirth_requests=False)
    op.process_batch(batch(("spBv1.0/G/NDATA/E", ddata(seq=4, temp=1.0))), Refused())
    assert published == []
    assert op.metrics.registry.get_sample_value("pipeline_sparkplug_rebirth_requests_total",
                                                {"cause": "before_birth", "outcome": "disabled"}) == 1


def test_a_death_is_handed_on_as_sensor_offline_marks():
    op, _ = operator()
    out = op.process_batch(batch(("spBv1.0/G/NBIRTH/E", nbirth(bd_seq=2, seq=0)), ("spBv1.0/G/DBIRTH/E/D", dbirth(seq=1)),
                                 ("spBv1.0/G/NDEATH/E", ndeath(bd_seq=2))), Refused())
    assert [(o.sensor_id, o.reason) for o in out if isinstance(o, SensorOffline)] == [("G_E", "NDEATH"), ("G_E_D", "NDEATH")]


def test_config_errors_name_the_key():
    import pytest

    from pipeline.config import ConfigError

    for section, key in (({"births_kept": 1}, "sparkplug.births_kept"), ({"host_id": "a/b"}, "sparkplug.host_id"),
                         ({"rebirth_requests": "sometimes"}, "sparkplug.rebirth_requests"),
                         ({"rebirth_intervall_s": 5}, "sparkplug"),
                         ({"rename": {"Inputs/Temperature Sensor 1": "inputs temperature"}}, "sparkplug.rename")):
        with pytest.raises(ConfigError) as err:
            parse({"sparkplug": section})
        assert key in str(err.value), str(err.value)


def test_rename_gives_a_long_name_a_short_one():
    op, _ = operator(rename={"Inputs/Temperature": "boiler_temp", "outputs_pump": "pump"})
    out = op.process_batch(batch(("spBv1.0/G/NBIRTH/E", nbirth(seq=0)), ("spBv1.0/G/DBIRTH/E/D", dbirth(seq=1))),
                           Refused())
    assert [(c.metric, c.value) for c in out] == [("boiler_temp", 21.5), ("pump", 1.0)]
