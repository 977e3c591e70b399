"""Device simulator: a fleet of environment sensors publishing realistic readings to MQTT at a held rate.

python -m pipeline.tools.simulate --sensors 100 --rate 1000 --duration 60 [--anomalies 0.01] [--topic-style per-metric]

The generating logic (pipeline/tools/simulated_fleet.py: SensorModel, build_*_payload, MessageFactory, Pacer)
is pure so tests need no broker; publish_loop() and the workers here own the MQTT clients.
"""
from __future__ import annotations

import argparse
import logging
import math
import multiprocessing as mp
import os
import secrets
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterable

import paho.mqtt.client as mqtt

from .simulated_fleet import PROFILES, MessageFactory, Pacer, make_sensors

log = logging.getLogger("pipeline.tools.simulate")  # not __main__ under python -m

OVERRUN_GRACE = 0.05      # a run that fell behind may catch up for 5 % past --duration, then it stops
MAX_SLEEP_S = 0.1          # sleep in short slices so a stop request is seen quickly even at 1 msg/s
ACK_TIMEOUT_S = 30.0
CONNECT_TIMEOUT_S = 10.0
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


class StopFlag:
    """Set from a signal handler: a plain attribute, because taking a lock there can deadlock the main thread."""

    def __init__(self) -> None:
        self.stopping = False

    def set(self, *_: object) -> None:
        self.stopping = True

    def is_set(self) -> bool:
        return self.stopping


class Publisher:
    """One paho client: connects, publishes without blocking, counts broker acknowledgements."""

    def __init__(self, opts: Options, client_id: str):
        self.qos = opts.qos
        self.attempted = 0
        self._acked = 0
        self._lock = threading.Lock()  # on_publish can run in the loop thread and, for QoS 0, in ours
        self._connected = threading.Event()
        self._connect_rc: object = None
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=True)
        self.client.max_inflight_messages_set(1000)
        self.client.max_queued_messages_set(0)  # unlimited: a slow broker shows up as ack wait, not lost messages
        self.client.on_connect = self._on_connect
        self.client.on_publish = self._on_publish
        self.host, self.port = opts.host, opts.port

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        self._connect_rc = reason_code
        if not reason_code.is_failure:
            self._connected.set()

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        with self._lock:
            self._acked += 1

    @property
    def acked(self) -> int:
        """Publishes the broker acknowledged so far."""
        with self._lock:
            return self._acked

    def connect(self) -> None:
        """Connect and start the network thread; raise ConnectionError if the broker does not accept us."""
        try:
            self.client.connect(self.host, self.port, keepalive=30)
        except OSError as err:
            raise ConnectionError(f"mqtt broker {self.host}:{self.port} unreachable: {err}") from err
        sock = self.client.socket()
        if sock is not None:
            # Nagle holds the last small PUBLISH until the broker's delayed ACK (~40 ms): visible as ack lag at the end.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.client.loop_start()
        if not self._connected.wait(CONNECT_TIMEOUT_S):
            self.client.loop_stop()
            raise ConnectionError(f"mqtt broker {self.host}:{self.port} refused or timed out: rc={self._connect_rc}")

    def publish(self, topic: str, payload: bytes) -> None:
        """Hand one message to paho; never blocks (the queue is unlimited)."""
        info = self.client.publish(topic, payload, qos=self.qos)
        # NO_CONN with QoS >= 1 means paho kept the message and sends it on reconnect; at QoS 0 it is gone.
        if info.rc == mqtt.MQTT_ERR_SUCCESS or (info.rc == mqtt.MQTT_ERR_NO_CONN and self.qos > 0):
            self.attempted += 1

    def wait_acked(self, timeout_s: float = ACK_TIMEOUT_S) -> int:
        """Wait until every publish is acknowledged (or the timeout); return the acknowledged count."""
        deadline = time.monotonic() + timeout_s
        while self.acked < self.attempted and time.monotonic() < deadline:
            self._quickack()
            time.sleep(0.002)
        acked = self.acked
        if acked < self.attempted:
            log.warning("event=ack_timeout attempted=%d acked=%d timeout_s=%g", self.attempted, acked, timeout_s)
        return acked

    def _quickack(self) -> None:
        # With nothing left to send we would delay our TCP ACKs 40 ms, and the broker's Nagle then holds
        # the last PUBACKs that long; quick-ack mode (Linux, reset by the kernel, so re-armed) avoids it.
        sock = self.client.socket()
        quickack = getattr(socket, "TCP_QUICKACK", None)
        if sock is not None and quickack is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, quickack, 1)
            except OSError:
                pass

    def close(self) -> None:
        """Disconnect and stop the network thread."""
        self.client.disconnect()
        self.client.loop_stop()


def publish_loop(publish: Callable[[str, bytes], None], factory: MessageFactory, pacer: Pacer,
                 duration_s: float, should_stop: Callable[[], bool],
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep,
                 wall: Callable[[], float] = time.time) -> int:
    """Publish in bursts on the pacer's schedule until all are sent, the run overruns or a stop is asked."""
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
                publish(*factory.next_message(t))
            sent = due
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
                             anomalies=opts.anomalies, topic_style=opts.topic_style,
                             per_message=opts.per_message, root=opts.root)
    pacer = Pacer(rate, total_for(rate, opts.duration))
    pub = Publisher(opts, client_id)
    pub.connect()
    try:
        ready()
        start = time.time()
        publish_loop(pub.publish, factory, pacer, opts.duration, should_stop)
        acked = pub.wait_acked()
        # A full run lasts exactly --duration so the reported rate is the paced one, not one slot high.
        if opts.duration > 0 and not should_stop():
            rest = start + opts.duration - time.time()
            if rest > 0:
                time.sleep(rest)
        return acked, start, time.time()
    finally:
        pub.close()


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


def parse_args(args_list: Iterable[str] | None = None) -> Options:
    """Command line -> Options, with --processes and --readings-per-message resolved."""
    ap = argparse.ArgumentParser(prog="python -m pipeline.tools.simulate", description=__doc__.splitlines()[0])
    ap.add_argument("--sensors", type=int, default=10)
    ap.add_argument("--rate", type=float, default=10.0, help="messages per second, all processes together")
    ap.add_argument("--duration", type=float, default=0.0, help="seconds; 0 runs until Ctrl-C")
    ap.add_argument("--metrics", type=_metrics, default=tuple(PROFILES))
    ap.add_argument("--anomalies", type=float, default=0.0, help="fraction of readings that are spikes")
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
    if not 0.0 <= a.anomalies <= 1.0:
        ap.error("--anomalies must be between 0 and 1")
    per_message = a.readings_per_message or ("all" if a.topic_style == "json" else "1")
    if a.topic_style == "per-metric" and per_message == "all":
        ap.error("--topic-style per-metric carries one reading per message")
    processes = a.processes if a.processes is not None else auto_processes(a.rate, a.sensors)
    if not 1 <= processes <= a.sensors:
        ap.error("--processes must be between 1 and --sensors")
    return Options(a.sensors, a.rate, a.duration, a.metrics, a.anomalies, a.topic_style, per_message,
                   a.host, a.port, a.qos, processes, a.seed, a.prefix, a.root)


def run(args_list: list[str] | None = None) -> int:
    """Parse, simulate, print the summary line; return the count published (acknowledged at QoS >= 1)."""
    opts = parse_args(args_list)
    log.info("event=simulate_start sensors=%d rate=%g duration_s=%g processes=%d topic_style=%s qos=%d root=%s",
             opts.sensors, opts.rate, opts.duration, opts.processes, opts.topic_style, opts.qos, opts.root)
    summary = simulate(opts)
    print(summary.line(), flush=True)
    return summary.published


def main() -> None:
    """Console entry point: exit 0 after a run, 1 when the broker cannot be used."""
    from ..observability.logging import setup
    setup(os.environ.get("LOG_LEVEL", "INFO"))
    try:
        run()
    except ConnectionError as err:
        log.error("event=simulate_failed error=%r", str(err))
        sys.exit(1)
    sys.exit(0)


if __name__ == "__main__":
    main()
