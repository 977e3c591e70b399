"""The disk spool: order, removal only on acknowledgement, the size bound, one owner, crash safety, and the pump."""
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time

import pytest

from pipeline.agents.spool import Spool, SpoolBusy, SpooledPublisher, open_spooled
from tests.conftest import ROOT


def files_size(path) -> int:
    return sum(os.path.getsize(f"{path}{s}") for s in ("", "-wal", "-shm") if os.path.exists(f"{path}{s}"))


def test_messages_come_back_in_order_across_reopening(tmp_path):
    path = str(tmp_path / "s.db")
    s = Spool(path)
    s.append([("a/1", b"m0"), ("a/2", b"m1")])
    s.append([("a/1", b"m2")])
    first = s.read(0, 10)
    assert [(t, p) for _, t, p in first] == [("a/1", b"m0"), ("a/2", b"m1"), ("a/1", b"m2")]
    assert [p for _, _, p in s.read(first[0][0], 1)] == [b"m1"]
    s.close()
    s = Spool(path)
    assert [p for _, _, p in s.read(0, 10)] == [b"m0", b"m1", b"m2"] and s.count == 3


def test_a_message_leaves_only_when_removed_and_ids_never_go_back(tmp_path):
    path = str(tmp_path / "s.db")
    s = Spool(path)
    s.append([("t", b"a"), ("t", b"b")])
    ids = [i for i, _, _ in s.read(0, 10)]
    size = s.bytes
    assert s.remove([ids[0], 12345]) == 1  # an id already gone is ignored
    assert s.count == 1 and 0 < s.bytes < size
    s.remove(ids[1:])
    assert s.count == 0 and s.bytes == 0
    s.append([("t", b"c")])  # after emptying, new ids still follow the old ones: "after id N" stays valid
    assert s.read(ids[-1], 10)[0][2] == b"c"
    s.close()
    assert Spool(path).count == 1


def test_the_bound_holds_and_the_oldest_are_dropped_and_counted(tmp_path):
    path = str(tmp_path / "s.db")
    bound = 256 * 1024
    s = Spool(path, bound)
    total, batch = 0, 20
    for size in (100, 2000, 7000):
        for _ in range(60):
            s.append([("logs/app", b"%08d" % (total + j) + os.urandom(size)) for j in range(batch)])
            total += batch
            # The files together: the bound, plus the pages of about three writes (the last write's pages in the
            # WAL, the file grown by it before the oldest went).
            write = batch * -(-(size + 200) // 4096) * 4096  # whole pages
            assert files_size(path) <= bound + 3 * write + 16384
    assert s.dropped > 0 and s.count + s.dropped == total
    kept = [int(p[:8]) for _, _, p in s.read(0, total)]
    assert kept == list(range(total - s.count, total))  # the newest, contiguous: the oldest were dropped
    dropped = s.dropped
    s.close()
    again = Spool(path, bound)
    assert again.dropped == 0 and again.dropped_total() == dropped and again.count == len(kept)


def test_messages_handed_to_the_connection_are_spared_while_others_can_go(tmp_path):
    s = Spool(str(tmp_path / "s.db"), 64 * 1024)
    s.append([("t", b"%04d" % i + b"x" * 1000) for i in range(5)])
    handed = s.read(0, 2)[-1][0]  # the first two are in flight
    for i in range(5, 200):
        s.append([("t", b"%04d" % i + b"x" * 1000)], keep_upto=handed)
    kept = [int(p[:4]) for _, _, p in s.read(0, 1000)]
    assert kept[:2] == [0, 1] and kept[2] > 2 and kept[-1] == 199


def test_one_owner_at_a_time(tmp_path):
    path = str(tmp_path / "s.db")
    s = Spool(path)
    with pytest.raises(SpoolBusy, match="in use by another process"):
        Spool(path)
    s.close()
    Spool(path).close()


def test_a_bound_too_small_is_refused(tmp_path):
    with pytest.raises(ValueError, match="max_bytes"):
        Spool(str(tmp_path / "s.db"), 1000)


WRITER = """
import sys
from pipeline.agents.spool import Spool
s = Spool(sys.argv[1])
n = 0
while True:
    s.append([("t", b"%09d" % (n + j) + b"y" * 500) for j in range(50)])
    n += 50
    print(n, flush=True)
"""


def test_kill_9_in_the_middle_of_writing_leaves_every_committed_message_and_nothing_torn(tmp_path):
    path = str(tmp_path / "s.db")
    child = subprocess.Popen([sys.executable, "-c", WRITER, path], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    committed = 0
    deadline = time.monotonic() + 30
    while committed < 5000 and time.monotonic() < deadline:
        committed = int(child.stdout.readline() or committed)
    os.kill(child.pid, signal.SIGKILL)
    child.wait(10)
    for line in child.stdout:  # what it reported before dying
        committed = int(line)
    assert committed >= 5000
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    db.close()
    s = Spool(path)
    got = [int(p[:9]) for _, _, p in s.read(0, 10 ** 7)]
    # Every committed batch is there, in order, and at most the batch being written when killed beyond it.
    assert got == list(range(len(got))) and committed <= len(got) <= committed + 50


class FakeLink:
    """Stands in for MqttPublisher in the pump's unit tests: records sends, acknowledges on request."""

    def __init__(self, room: int = 10 ** 6):
        self.sent: list[tuple[int, str, bytes]] = []
        self.room = room
        self.on_ack = None
        self.acked = 0
        self.connected = threading.Event()
        self._mid = 0

    def start(self):
        pass

    def send(self, topic, payload):
        if len(self.sent) - self.acked >= self.room:
            return None
        self._mid += 1
        self.sent.append((self._mid, topic, payload))
        return self._mid

    def ack_all(self):
        for mid, _, _ in self.sent[self.acked:]:
            self.acked += 1
            self.on_ack(mid)

    def close(self, timeout):
        return 0


def wait(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_the_pump_sends_in_order_within_its_window_and_removes_only_acknowledged(tmp_path):
    link = FakeLink()
    pub = SpooledPublisher(link, Spool(str(tmp_path / "s.db")), window=5)
    pub.start()
    for i in range(12):
        assert pub.publish("t", b"%d" % i)
    wait(lambda: len(link.sent) == 5)
    time.sleep(0.1)
    assert len(link.sent) == 5 and pub.pending == 12  # nothing acknowledged: nothing removed, no more sent
    link.ack_all()
    wait(lambda: len(link.sent) == 10)
    assert pub.pending <= 7
    link.ack_all()
    wait(lambda: len(link.sent) == 12)
    link.ack_all()
    assert pub.wait(5.0) and pub.pending == 0
    assert [p for _, _, p in link.sent] == [b"%d" % i for i in range(12)]
    assert pub.close(1.0) == 0


def test_what_is_unacknowledged_at_close_is_sent_first_after_the_next_start(tmp_path):
    path = str(tmp_path / "s.db")
    link = FakeLink()
    pub = SpooledPublisher(link, Spool(path), window=3)
    pub.start()
    pub.publish_many([("t", b"%d" % i) for i in range(5)])
    wait(lambda: len(link.sent) == 3)
    link.ack_all()
    wait(lambda: len(link.sent) == 5)
    assert pub.close(0.2) == 2  # the last two were sent, never acknowledged: kept
    again = FakeLink()
    pub = SpooledPublisher(again, Spool(path))
    pub.start()
    pub.publish("t", b"5")
    wait(lambda: len(again.sent) == 3)
    assert [p for _, _, p in again.sent] == [b"3", b"4", b"5"]
    again.ack_all()
    assert pub.close(2.0) == 0


def test_the_backlog_is_reported_in_a_periodic_log_line(tmp_path, caplog):
    link = FakeLink(room=0)  # the broker away: nothing can be handed over
    pub = SpooledPublisher(link, Spool(str(tmp_path / "s.db")), name="agent-x", report_interval_s=0.1)
    caplog.set_level(logging.INFO, logger="pipeline.agents.spool")
    pub.start()
    pub.publish_many([("t", b"12345")] * 3)
    wait(lambda: "event=spool_backlog source=agent-x queued=3" in caplog.text)
    assert pub.status() == {"queued": 3, "bytes": pub.spool.bytes, "dropped": 0, "connected": False}
    pub.close(0.1)


def test_a_file_that_cannot_be_used_falls_back_to_memory_only_when_asked(tmp_path):
    path = str(tmp_path / "s.db")
    owner = Spool(path)
    with pytest.raises(SpoolBusy):
        open_spooled(FakeLink(), path, 1 << 20, "x")
    seen = []
    pub = open_spooled(FakeLink(), path, 1 << 20, "x", on_error=seen.append)
    assert pub.spool.path is None and isinstance(seen[0], SpoolBusy)
    owner.close()
