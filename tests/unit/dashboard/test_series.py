"""The choice of resolution for /api/series: the coarsest giving the points asked, among those retention keeps."""
from pipeline.dashboard.series import RAW, choose, resolutions, to_csv

DAY = 86400
OPTIONS = resolutions({"1m": 60, "5m": 300, "1h": 3600, "1d": DAY}, 30, {"1m": 7, "5m": 90, "1h": 730})
NOW = 1_000 * DAY


def pick(span: float, points: int, ago: float = 0) -> str:
    return choose(OPTIONS, NOW - ago - span, NOW - ago, points, NOW).label


def test_the_coarsest_resolution_with_enough_points():
    assert pick(3600, 60) == "1m" and pick(3600, 61) == RAW and pick(3600, 12) == "5m" and pick(3600, 1) == "1h"
    assert pick(7 * DAY, 168) == "1h" and pick(7 * DAY, 169) == "5m" and pick(365 * DAY, 365) == "1d"


def test_a_resolution_retention_dropped_at_the_start_is_passed_over():
    assert pick(7 * DAY, 2000, ago=100 * DAY) == "1h"  # 5m gives 2016 but is kept 90 days only
    assert pick(7 * DAY, 20, ago=3000 * DAY) == "1d"  # only 1d (kept forever) holds that time
    assert pick(3600, 1000, ago=40 * DAY) == "5m"  # raw (30 days) and 1m (7) are gone: the finest kept one


def test_csv_has_a_header_and_round_trip_numbers():
    answer = {"resolution": "1h", "points": [{"t": 3600.0, "avg": 0.1 + 0.2, "min": None, "max": 1e300, "count": 3}]}
    assert to_csv(answer) == "t,avg,min,max,count\n3600.0,0.30000000000000004,,1e+300,3\n"
