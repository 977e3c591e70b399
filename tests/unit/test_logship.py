"""MQTTHandler without a broker: the record it builds, what it never ships, and that it never blocks or raises."""
import logging
import sys
import threading
import time

import pytest

from pipeline.logship import MQTTHandler, clean, level_name, truncate_utf8
from pipeline.records import LogRecord
from tests.unit.helpers import chain, raw, run

LIVE, _ = chain(clock=time.time)  # the handler stamps records with the real clock
UNREACHABLE = ("127.0.0.1", 1)  # connection refused: the handler keeps retrying in the background


@pytest.fixture(scope="module")
def handler():
    # One handler for the tests that only build records: closing one waits out paho's reconnect pause.
    h = MQTTHandler("billing", *UNREACHABLE, buffer_size=5, close_timeout=0.2, spool_path=None)
    yield h
    h.close()


def record(name="billing.db", level=logging.ERROR, msg="order %s failed", args=(42,), extra=None, exc_info=None):
    r = logging.LogRecord(name, level, __file__, 1, msg, args, exc_info)
    for k, v in (extra or {}).items():
        setattr(r, k, v)
    return r


def test_level_names_map_custom_levels_down():
    assert [level_name(n) for n in (5, 10, 15, 20, 25, 30, 40, 45, 50, 60)] == [
        "DEBUG", "DEBUG", "DEBUG", "INFO", "INFO", "WARNING", "ERROR", "ERROR", "CRITICAL", "CRITICAL"]


def test_prepared_record_follows_the_contract_and_the_pipeline_accepts_it(handler):
    try:
        raise ValueError("boom")
    except ValueError:
        exc = sys.exc_info()
    item = handler.prepare(record(extra={"order_id": 42, "nested": {"ok": True}}, exc_info=exc))
    assert item["level"] == "ERROR" and item["logger"] == "billing.db"
    assert item["message"].startswith("order 42 failed\nTraceback") and "ValueError: boom" in item["message"]
    assert item["extra"] == {"order_id": 42, "nested": {"ok": True}}
    out, dead = run(LIVE, raw("logs/billing", handler.encode(item), received_at=item["timestamp"]))
    assert dead == [] and isinstance(out[0], LogRecord)
    assert (out[0].app, out[0].level, out[0].extra, out[0].ts) == ("billing", "ERROR", item["extra"], item["timestamp"])


def test_each_record_carries_an_id_of_its_own_that_the_pipeline_keeps(handler):
    first, second = handler.prepare(record()), handler.prepare(record())
    boot, _, n = first["id"].partition(":")
    assert len(boot) == 16 and second["id"] == f"{boot}:{int(n) + 1}"
    out, dead = run(LIVE, raw("logs/billing", handler.encode(first), received_at=first["timestamp"]))
    assert dead == [] and out[0].record_id == first["id"]


def test_text_the_pipeline_would_refuse_is_made_safe(handler):
    weird = {"nul": "a\x00b", "surrogate": "x\udcff", "inf": float("inf"), "obj": object(), "deep": [[[[[[[["x"]]]]]]]],
             7: "int key"}
    item = handler.prepare(record(msg="nul\x00 and \udcff", args=(), extra={"data": weird}))
    payload = handler.encode(item)
    out, dead = run(LIVE, raw("logs/billing", payload))
    assert dead == [], [d.reason for d in dead]
    data = out[0].extra["data"]
    assert data["nul"] == "a\\x00b" and data["inf"] == "inf" and data["obj"].startswith("<object object")
    assert out[0].message == "nul\\x00 and ?"


def test_long_messages_are_truncated_below_the_pipeline_cap():
    h = MQTTHandler("billing", *UNREACHABLE, max_message_bytes=100, max_extra_bytes=50, close_timeout=0.1)
    try:
        item = h.prepare(record(msg="€" * 500, args=(), extra={"big": "y" * 100}))
        assert len(item["message"].encode()) <= 100 and item["message"].endswith("[truncated 1500 bytes]")
        small = chain({"logs": {"max_message_bytes": 100}}, clock=time.time)[0]
        out, dead = run(small, raw("logs/billing", h.encode(item)))
        assert dead == [] and out[0].extra == {"extra_truncated": True}
    finally:
        h.close()
    assert truncate_utf8("short", 100) == "short"


def test_records_about_the_shipping_are_never_shipped(handler):
    for name in ("paho", "paho.client", "pipeline.logship"):
        assert handler.about_shipping(record(name=name))
    assert not handler.about_shipping(record(name="pipeline.logshipping"))
    own = record()
    own.thread, own.threadName = handler._thread.ident, handler._thread.name
    assert handler.about_shipping(own)
    paho_thread = record()
    paho_thread.threadName = handler.publisher.thread_name
    assert handler.about_shipping(paho_thread)
    before = (handler._accepted, handler.dropped)
    handler.handle(own)
    handler.handle(record(name="paho.client"))
    assert (handler._accepted, handler.dropped) == before


def test_exclude_adds_loggers(handler):
    h = MQTTHandler("billing", *UNREACHABLE, exclude=("noisy",), close_timeout=0.1)
    try:
        assert h.about_shipping(record(name="noisy.sub")) and not h.about_shipping(record(name="quiet"))
        assert not handler.about_shipping(record(name="noisy.sub"))
    finally:
        h.close()


def test_full_buffer_drops_and_counts_and_nothing_goes_unaccounted():
    # The broker is unreachable: some records wait in paho, then the buffer fills and the rest are dropped.
    h = MQTTHandler("billing", *UNREACHABLE, buffer_size=5, close_timeout=0.3)
    log = logging.getLogger("test.logship.drop")
    log.propagate = False
    log.addHandler(h)
    try:
        total = 1000
        for i in range(total):
            log.error("record %d", i)
        assert h.dropped > 0
        assert h._accepted + h.dropped == total
    finally:
        log.removeHandler(h)
        h.close()
    assert h.sent == 0 and h.dropped + h.unconfirmed == total
    h.handle(record())  # after close: ignored, not raised
    assert h.dropped + h.unconfirmed == total


def shipping_logger(h: MQTTHandler, name: str) -> logging.Logger:
    log = logging.getLogger(name)
    log.propagate = False
    log.setLevel(logging.INFO)
    log.addHandler(h)
    return log


def test_records_wait_in_the_spool_file_across_a_restart(tmp_path):
    path = str(tmp_path / "billing.db")
    h = MQTTHandler("billing", *UNREACHABLE, close_timeout=0.2, spool_path=path)
    log = shipping_logger(h, "test.logship.restart")
    for i in range(5):
        log.error("record %d", i)
    assert h.sync(5.0) and h.backlog == 5
    log.removeHandler(h)
    h.close()
    assert (h.unconfirmed, h.dropped) == (5, 0)  # unacknowledged, kept on disk: not dropped
    again = MQTTHandler("billing", *UNREACHABLE, close_timeout=0.2, spool_path=path)
    try:
        assert again.backlog == 5 and again.status()["queued"] == 5 and again.status()["spool"] == path
    finally:
        again.close()


def test_emit_returns_at_once_when_the_disk_is_slow(tmp_path):
    h = MQTTHandler("billing", *UNREACHABLE, close_timeout=0.2, spool_path=str(tmp_path / "b.db"), buffer_size=50)
    write = h.shipper.spool.append
    h.shipper.spool.append = lambda *a, **k: (time.sleep(2.0), write(*a, **k))[1]  # a disk taking 2 s a write
    log = shipping_logger(h, "test.logship.slowdisk")
    try:
        started = time.monotonic()
        for i in range(200):
            log.error("record %d", i)
        assert time.monotonic() - started < 0.5
        # What did not fit the hand-off buffer is dropped and counted, never waited for.
        assert h._lost > 0 and h.dropped == h._lost and h._accepted + h._lost == 200
    finally:
        log.removeHandler(h)
        h.close()


def test_a_spool_file_owned_by_another_process_means_memory_only(tmp_path, caplog):
    path = str(tmp_path / "billing.db")
    first = MQTTHandler("billing", *UNREACHABLE, close_timeout=0.1, spool_path=path)
    caplog.set_level(logging.WARNING, logger="pipeline.logship")
    second = MQTTHandler("billing", *UNREACHABLE, close_timeout=0.1, spool_path=path)
    try:
        assert first.spool_path == path and second.spool_path is None
        assert "event=logship_spool_unusable app=billing" in caplog.text
    finally:
        first.close()
        second.close()


def test_emit_never_raises_into_the_application(handler, monkeypatch):
    monkeypatch.setattr(logging, "raiseExceptions", False)  # the default in production code paths
    reported = []
    monkeypatch.setattr(handler, "handleError", reported.append)  # logging's own hook for a failed emit
    offered = []
    put = handler._queue.put_nowait
    monkeypatch.setattr(handler._queue, "put_nowait", lambda item: (offered.append(item), put(item)))
    bad = record(msg="%d", args=("not a number",))  # formatting fails inside emit
    assert handler.handle(bad) is True  # returned normally: nothing raised into the caller
    assert reported == [bad] and offered == []  # reported through handleError, nothing buffered
    # From another thread, with the buffer full or not: the call returns and the record is offered.
    raised = []

    def log_from_a_thread():
        try:
            handler.handle(record(msg="from a thread", args=()))
        except BaseException as err:  # noqa: BLE001 - what the test is about
            raised.append(err)

    other = threading.Thread(target=log_from_a_thread)
    other.start()
    other.join(5)
    assert not other.is_alive() and raised == []
    assert [item["message"] for item in offered] == ["from a thread"] and reported == [bad]


def test_invalid_app_or_root_is_refused_at_construction():
    with pytest.raises(ValueError, match="app"):
        MQTTHandler("bad app", *UNREACHABLE)
    with pytest.raises(ValueError, match="app"):
        MQTTHandler("a" * 47, *UNREACHABLE)
    with pytest.raises(ValueError, match="topic_root"):
        MQTTHandler("ok", *UNREACHABLE, topic_root="logs/x")


def test_clean_bounds_size():
    assert len(clean(list(range(1000)))) == 100
    assert clean("z" * 5000) == "z" * 2000
    assert clean((1, 2.5, None, True)) == [1, 2.5, None, True]


def test_tls_arguments_mean_what_mqtt_tls_means():
    from pipeline.config import TlsConfig

    h = MQTTHandler("billing", *UNREACHABLE, close_timeout=0.1, tls=True, insecure=True)
    assert h.publisher.tls == TlsConfig(enabled=True, insecure=True)
    h.close()
    same = MQTTHandler("billing", *UNREACHABLE, close_timeout=0.1, tls=TlsConfig(enabled=True, insecure=True))
    assert same.publisher.tls == h.publisher.tls
    same.close()
    plain = MQTTHandler("billing", *UNREACHABLE, close_timeout=0.1)
    assert plain.publisher.tls is None
    plain.close()
    with pytest.raises(OSError):  # a missing CA file fails at once, not at the first record
        MQTTHandler("billing", *UNREACHABLE, tls=True, ca_file="/nonexistent/ca.pem")
