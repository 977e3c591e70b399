"""The producer's poll thread gathers delivery reports for mqtt.ack_linger_ms after each round, so at low rates one
wake-up (and one PUBACK write) serves several partitions' reports."""
import threading
import time
from types import SimpleNamespace

from pipeline.ingest.mqtt_bridge import MqttBridge


class Producer:
    """Every poll finds one delivery report at once (a partition's batch confirmed), until stopped."""

    def __init__(self):
        self.polls = 0

    def poll(self, timeout):
        self.polls += 1
        return 1

    def __len__(self):
        return 0


def polls_in(seconds: float, ack_linger_ms: int) -> tuple[int, int]:
    bridge = MqttBridge.__new__(MqttBridge)  # only what the poll loop touches
    bridge.cfg = SimpleNamespace(ack_linger_ms=ack_linger_ms)
    bridge.producer = Producer()
    bridge._stopping = threading.Event()
    sent = []
    bridge._send_acks = lambda: sent.append(1)
    bridge._report_counts = lambda: None
    t = threading.Thread(target=bridge._poll_loop)
    t.start()
    time.sleep(seconds)
    stopped_at = time.monotonic()
    bridge._stopping.set()
    t.join(1)
    assert not t.is_alive() and time.monotonic() - stopped_at < 0.5  # stopping ends the wait at once
    return bridge.producer.polls, len(sent)


def test_delivery_reports_are_gathered_for_the_ack_linger_between_rounds():
    polls, acks = polls_in(0.3, ack_linger_ms=50)
    assert 3 <= polls <= 8 and acks == polls  # one round (poll, then the acks) per 50 ms, not one per report
    busy, _ = polls_in(0.1, ack_linger_ms=0)
    assert busy > 50  # without it: a round for every report
