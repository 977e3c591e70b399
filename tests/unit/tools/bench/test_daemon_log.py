"""The benchmark's reading of a daemon's log lines."""
from pipeline.tools.bench import daemon_log

LOG = """\
ts=1 event=partitions_assigned partitions=0,1,2,3 mode=single
ts=2 event=partitions_revoked partitions=0,1,2,3
ts=3 event=partitions_assigned partitions=2,3
ts=4 event=offset_gap_detected topic=t partition=3 first=10 last=16
ts=5 event=offset_gap_refetched topic=t partition=3 first=10 last=16
ts=6 event=stopped drained=True deduplicated=redelivery:3,conflict:1
"""


def test_the_last_assignment_counts_and_a_revoke_clears_it():
    assert daemon_log.assignment(LOG) == {2, 3}
    assert daemon_log.assignment(LOG + "ts=7 event=partitions_revoked partitions=2,3\n") == set()


def test_skipped_readings_and_offset_holes_are_summed_over_daemons():
    assert daemon_log.deduplicated([LOG, LOG]) == {"redelivery": 6, "conflict": 2}
    assert daemon_log.deduplicated(["no stop line"]) == {"redelivery": 0, "conflict": 0}
    assert daemon_log.offset_gaps([LOG]) == {"detected": 1, "refetched": 1, "given_up": 0, "allowed": 0}
