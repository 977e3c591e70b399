"""gather(): a batch is what is already fetched; a small one waits for LINGER_BELOW messages at most
kafka.consume_linger_ms, and no longer than it takes that many to come."""
from pipeline.ingest.consumed import LINGER_BELOW, gather


class FetchedConsumer:
    """consume(n, timeout) as librdkafka's: up to n of what is fetched now; with a timeout, it waits for
    messages still to come (`arriving`) until it has n. Records each call."""

    def __init__(self, fetched: int, arriving: int = 0):
        self.fetched = list(range(fetched))
        self.arriving = list(range(1000, 1000 + arriving))
        self.calls: list[tuple[int, float]] = []

    def consume(self, n: int, timeout: float) -> list:
        assert n >= 1  # librdkafka refuses 0
        self.calls.append((n, timeout))
        if timeout:
            self.fetched += self.arriving
            self.arriving = []
        out, self.fetched = self.fetched[:n], self.fetched[n:]
        return out


def test_a_fetch_with_enough_is_taken_without_waiting():
    c = FetchedConsumer(fetched=200)
    assert len(gather(c, "first", 1000, 0.04)) == 201
    assert c.calls == [(999, 0)]


def test_a_small_batch_waits_for_linger_below_messages_only_then_takes_the_rest_fetched():
    c = FetchedConsumer(fetched=9, arriving=300)
    msgs = gather(c, "first", 1000, 0.04)
    # asks for exactly what is missing to LINGER_BELOW (returns as soon as they came), then what is fetched
    assert c.calls == [(999, 0), (LINGER_BELOW - 10, 0.04), (1000 - LINGER_BELOW, 0)]
    assert len(msgs) == 1 + 9 + 300


def test_a_batch_never_exceeds_batch_size_and_never_asks_for_none():
    c = FetchedConsumer(fetched=3, arriving=50)
    assert len(gather(c, "first", 20, 0.04)) == 20  # batch_size below LINGER_BELOW: it waits for batch_size
    assert c.calls == [(19, 0), (16, 0.04)]


def test_no_linger_configured_means_no_wait():
    c = FetchedConsumer(fetched=2, arriving=100)
    assert len(gather(c, "first", 1000, 0.0)) == 3
    assert all(t == 0 for _, t in c.calls)


def test_batch_size_one_takes_the_polled_message_alone():
    c = FetchedConsumer(fetched=5)
    assert gather(c, "first", 1, 0.04) == ["first"] and c.calls == []
