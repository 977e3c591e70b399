"""Device simulator: a fleet of environment sensors publishing realistic readings to MQTT at a held rate.

python -m pipeline.tools.simulate --sensors 100 --rate 1000 --duration 60 [--anomalies 0.5 --truth truth.jsonl]
                                 [--topic-style per-metric]

--anomalies N injects N labelled anomalies per sensor-hour (spikes, steps, drifts, stuck values, dropouts,
out-of-range values: pipeline/tools/anomalies.py) and --truth appends their ground truth as JSON lines.
The generating logic (pipeline/tools/simulated_fleet.py: SensorModel, build_*_payload, MessageFactory, Pacer)
is pure so tests need no broker; publish_loop() and the workers here own the MQTT clients
(pipeline/tools/sim_publisher.py).
"""
from __future__ import annotations

import argparse
import logging
import math
import multiprocessing as mp
import os
import secrets
import signal
import sys
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterable

from .anomalies import KINDS, Plan
from .sim_publisher import CONNECT_TIMEOUT_S, Publisher, StopFlag
from .simulated_fleet import PROFILES, MessageFactory, Pacer, make_sensors

log = logging.getLogger("pipeline.tools.simulate")  # not __main__ under python -m

OVERRUN_GRACE = 0.05      # a run that fell behind may catch up for 5 % past --duration, then it stops
MAX_SLEEP_S = 0.1          # sleep in short slices so a stop request is seen quickly even at 1 msg/s
RATE_PER_PROCESS = 6000.0  # what one paho client sustains here with room to spare; above it --processes goes auto


def total_for(rate: float, duration_s: float) -> int | None:
    """Messages due inside [0, duration): None when the run is open-ended."""
    return math.ceil(rate * duration_s - 1e-9) if duration_s > 0 else None


def auto_processes(rate: float, sensors: int, cpus: int | None = None) -> int:
    """One process until the rate needs more, never more than the CPUs or the sensors."""
    want = math.ceil(rate / RATE_PER_PROCESS)
    return max(1, min(want, cpus or os.cpu_count() or 1, sensors))


def split_fleet(count: int, processes: int) -> list[list[int]]:
    """Sensor indices per process, interleaved so every process gets a fair share of locations."""
    return [list(range(i, count, processes)) for i in range(processes)]


@dataclass(frozen=True, slots=True)
class Options:
    """Parsed command line, picklable so worker processes get it whole."""

    sensors: int
    rate: float
    duration: float
    metrics: tuple[str, ...]
    anomalies: float
    topic_style: str
    per_message: str
    host: str
    port: int
    qos: int
    processes: int
    seed: int
    prefix: str
    root: str
    kinds: tuple[str, ...] = KINDS
    truth: str = ""  # ground-truth file, appended to ("" : none)

    def plan(self) -> Plan:
        """The anomaly plan these options ask for."""
        return Plan(per_hour=self.anomalies, kinds=self.kinds)


@dataclass(frozen=True, slots=True)
class Summary:
    """What a run achieved: messages acknowledged (QoS >= 1) or written (QoS 0), and over how long."""

    published: int
    duration_s: float

    @property
    def rate(self) -> float:
        """Messages per second over the whole run."""
        return self.published / self.duration_s if self.duration_s > 0 else 0.0

    def line(self) -> str:
        """The one summary line the CLI prints."""
        return f"published={self.published} duration_s={self.duration_s:.3f} rate={self.rate:.1f}"


def publish_loop(publish: Callable[[str, bytes], None], factory: MessageFactory, pacer: Pacer,
                 duration_s: float, should_stop: Callable[[], bool],
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep,
                 wall: Callable[[], float] = time.time, on_truth: Callable[[list], None] = lambda _: None) -> int:
    """Publish in bursts on the pacer's schedule until all are sent, the run overruns or a stop is asked.
    Counts message slots (a sensor in a dropout uses its slot and sends nothing); anomalies begun go to on_truth."""
    start = clock()
    sent = 0
    while not should_stop():
        elapsed = clock() - start
        if duration_s > 0 and elapsed >= duration_s * (1 + OVERRUN_GRACE):
            break  # still behind after the grace: stop and let the summary show the lower rate
        due = pacer.due(elapsed)
        if due > sent:
            t = wall()
            for _ in range(due - sent):
                message = factory.next_message(t)
                if message is not None:
                    publish(*message)
            sent = due
            started = factory.take_truth()
            if started:
                on_truth(started)
        if pacer.total is not None and sent >= pacer.total:
            break
        wait = pacer.wake_at(sent) - (clock() - start)
        if wait > 0:
            sleep(min(wait, MAX_SLEEP_S))
    return sent


def _simulate_slice(opts: Options, sensor_indices: list[int], rate: float, client_id: str,
                    should_stop: Callable[[], bool], ready: Callable[[], None] = lambda: None) -> tuple[int, float, float]:
    """Run one slice of the fleet on its own client; return (acknowledged, wall start, wall end)."""
    fleet = make_sensors(opts.sensors, opts.prefix)
    factory = MessageFactory([fleet[i] for i in sensor_indices], opts.metrics, seed=opts.seed,
                             plan=opts.plan(), topic_style=opts.topic_style,
                             per_message=opts.per_message, root=opts.root)
    on_truth = (lambda started: append_truth(opts.truth, started)) if opts.truth else (lambda _: None)
    pacer = Pacer(rate, total_for(rate, opts.duration))
    pub = Publisher(opts, client_id)
    pub.connect()
    try:
        ready()
        start = time.time()
        publish_loop(pub.publish, factory, pacer, opts.duration, should_stop, on_truth=on_truth)
        acked = pub.wait_acked()
        # A full run lasts exactly --duration so the reported rate is the paced one, not one slot high.
        if opts.duration > 0 and not should_stop():
            rest = start + opts.duration - time.time()
            if rest > 0:
                time.sleep(rest)
        return acked, start, time.time()
    finally:
        pub.close()


def append_truth(path: str, anomalies: list) -> None:
    """Append ground-truth lines; one write per call, O_APPEND, so worker processes do not interleave lines."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, b"".join(a.truth_line() for a in anomalies))
    finally:
        os.close(fd)


def _worker(index: int, opts: Options, sensor_indices: list[int], rate: float, barrier, stop_event,
            results) -> None:
    """Worker process: wait for the others to connect, publish its slice, report (index, acked, start, end, error)."""
    local = StopFlag()
    signal.signal(signal.SIGINT, local.set)  # Ctrl-C reaches the whole process group; the parent also tells us
    parent = os.getppid()

    def should_stop() -> bool:
        return local.is_set() or stop_event.is_set() or os.getppid() != parent

    client_id = f"{opts.prefix}-sim-{os.getpid()}-{index}-{secrets.token_hex(3)}"
    try:
        acked, start, end = _simulate_slice(opts, sensor_indices, rate, client_id, should_stop,
                                            ready=lambda: barrier.wait(CONNECT_TIMEOUT_S * 3))
        results.put((index, acked, start, end, None))
    except threading.BrokenBarrierError:
        results.put((index, 0, 0.0, 0.0, None))  # another worker failed to connect; it reports why
    except Exception as err:  # reported to the parent, which fails the run with this text
        barrier.abort()
        results.put((index, 0, 0.0, 0.0, f"{type(err).__name__}: {err}"))


def _run_processes(opts: Options, stop: StopFlag) -> Summary:
    ctx = mp.get_context("spawn")  # a fresh interpreter per worker: no inherited threads or sockets
    barrier, stop_event, results = ctx.Barrier(opts.processes), ctx.Event(), ctx.Queue()
    slices = split_fleet(opts.sensors, opts.processes)
    procs = [ctx.Process(target=_worker, name=f"simulate-{i}", daemon=True,
                         args=(i, opts, idx, opts.rate * len(idx) / opts.sensors, barrier, stop_event, results))
             for i, idx in enumerate(slices)]
    for p in procs:
        p.start()
    reports = []
    while len(reports) < len(procs):
        if stop.is_set():
            stop_event.set()
        try:
            reports.append(results.get(timeout=0.2))
        except Exception:  # queue.Empty: check that nobody died without reporting
            if not any(p.is_alive() for p in procs) and results.empty():
                raise RuntimeError("simulator workers exited without reporting")
    for p in procs:
        p.join(5)
    errors = [r[4] for r in reports if r[4]]
    if errors:
        raise ConnectionError(errors[0])
    ran = [r for r in reports if r[2] > 0]
    published = sum(r[1] for r in reports)
    duration = max(r[3] for r in ran) - min(r[2] for r in ran) if ran else 0.0
    return Summary(published, duration)


def simulate(opts: Options) -> Summary:
    """Run the simulator with parsed options; Ctrl-C stops it cleanly and the summary still counts."""
    stop = StopFlag()
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, stop.set) if in_main else None
    try:
        if opts.processes > 1:
            return _run_processes(opts, stop)
        client_id = f"{opts.prefix}-sim-{os.getpid()}-{secrets.token_hex(3)}"
        acked, start, end = _simulate_slice(opts, list(range(opts.sensors)), opts.rate, client_id, stop.is_set)
        return Summary(acked, end - start)
    finally:
        if in_main:
            signal.signal(signal.SIGINT, previous)


def _topic_level(value: str) -> str:
    if not value or any(c in value for c in "/+#"):
        raise argparse.ArgumentTypeError(f"{value!r} must be one non-empty topic level without / + #")
    return value


def _metrics(value: str) -> tuple[str, ...]:
    names = tuple(m.strip() for m in value.split(",") if m.strip())
    unknown = [m for m in names if m not in PROFILES]
    if not names or unknown:
        raise argparse.ArgumentTypeError(f"unknown metric(s) {unknown}; choose from {','.join(PROFILES)}")
    return tuple(dict.fromkeys(names))


def _kinds(value: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(k.strip() for k in value.split(",") if k.strip()))
    unknown = [k for k in names if k not in KINDS]
    if not names or unknown:
        raise argparse.ArgumentTypeError(f"unknown anomaly kind(s) {unknown}; choose from {','.join(KINDS)}")
    return names


def parse_args(args_list: Iterable[str] | None = None) -> Options:
    """Command line -> Options, with --processes and --readings-per-message resolved."""
    ap = argparse.ArgumentParser(prog="python -m pipeline.tools.simulate", description=__doc__.splitlines()[0])
    ap.add_argument("--sensors", type=int, default=10)
    ap.add_argument("--rate", type=float, default=10.0, help="messages per second, all processes together")
    ap.add_argument("--duration", type=float, default=0.0, help="seconds; 0 runs until Ctrl-C")
    ap.add_argument("--metrics", type=_metrics, default=tuple(PROFILES))
    ap.add_argument("--anomalies", type=float, default=0.0, help="labelled anomalies per sensor-hour (0: none)")
    ap.add_argument("--anomaly-kinds", type=_kinds, default=KINDS, help=f"comma-separated, of {','.join(KINDS)}")
    ap.add_argument("--truth", default="", help="append the anomalies' ground truth to this file (JSON lines)")
    ap.add_argument("--topic-style", choices=("json", "per-metric"), default="json")
    ap.add_argument("--readings-per-message", choices=("1", "all"), default=None,
                    help="default: all for json, 1 for per-metric")
    ap.add_argument("--host", default="localhost")
    ap.add_argument("--port", type=int, default=1883)
    ap.add_argument("--qos", type=int, choices=(0, 1, 2), default=1)
    ap.add_argument("--processes", type=int, default=None, help=f"default: 1, more above {RATE_PER_PROCESS:g} msg/s")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--prefix", type=_topic_level, default="sim")
    ap.add_argument("--root", type=_topic_level, default="sensors")
    a = ap.parse_args(None if args_list is None else list(args_list))
    if a.sensors < 1:
        ap.error("--sensors must be >= 1")
    if not a.rate > 0 or not math.isfinite(a.rate):
        ap.error("--rate must be > 0")
    if a.duration < 0:
        ap.error("--duration must be >= 0")
    if not 0.0 <= a.anomalies <= 3600.0 or not math.isfinite(a.anomalies):
        ap.error("--anomalies must be between 0 and 3600 per sensor-hour")
    per_message = a.readings_per_message or ("all" if a.topic_style == "json" else "1")
    if a.topic_style == "per-metric" and per_message == "all":
        ap.error("--topic-style per-metric carries one reading per message")
    processes = a.processes if a.processes is not None else auto_processes(a.rate, a.sensors)
    if not 1 <= processes <= a.sensors:
        ap.error("--processes must be between 1 and --sensors")
    return Options(a.sensors, a.rate, a.duration, a.metrics, a.anomalies, a.topic_style, per_message,
                   a.host, a.port, a.qos, processes, a.seed, a.prefix, a.root, a.anomaly_kinds, a.truth)


def run(args_list: list[str] | None = None) -> int:
    """Parse, simulate, print the summary line; return the count published (acknowledged at QoS >= 1)."""
    opts = parse_args(args_list)
    log.info("event=simulate_start sensors=%d rate=%g duration_s=%g processes=%d topic_style=%s qos=%d root=%s "
             "anomalies_per_sensor_hour=%g truth=%s", opts.sensors, opts.rate, opts.duration, opts.processes,
             opts.topic_style, opts.qos, opts.root, opts.anomalies, opts.truth or "-")
    summary = simulate(opts)
    print(summary.line(), flush=True)
    return summary.published


def main() -> None:
    """Console entry point: exit 0 after a run, 1 when the broker cannot be used."""
    from ..observability.kvlog import setup
    setup(os.environ.get("LOG_LEVEL", "INFO"))
    try:
        run()
    except ConnectionError as err:
        log.error("event=simulate_failed error=%r", str(err))
        sys.exit(1)
    sys.exit(0)


if __name__ == "__main__":
    main()
