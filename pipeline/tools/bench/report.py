"""The benchmark's report as text: one row per load level, where the cores went, and the ratios that hold
from one machine to another (against the bare path, the peer and the broker's own limit)."""
from __future__ import annotations


def sustainable(r: dict) -> bool:
    """No loss, the backlog cleared soon after the load stopped, and the rate was held."""
    return r["lost"] == 0 and r["drain_after_load_s"] <= 5 and r["sustained_rate"] >= 0.95 * r["offered_rate"]


def table(results: list[dict], limit: float) -> str:
    head = (f"{'offered':>8} {'sustained':>9} {'readings/s':>10} {'published':>9} {'pg':>9} {'redis':>9} {'lost':>5} {'dup':>5} "
            f"{'redis p50/p95/p99/max ms':>26} {'pg p50/p95/p99/max ms':>26} {'cpu s/M':>8} {'rss MB':>7} {'lag max':>8}")
    lines = [head]
    for r in results:
        fmt = lambda d: "/".join("-" if d[k] is None else f"{d[k]:.0f}" for k in ("p50", "p95", "p99", "max"))  # noqa: E731
        lines.append(f"{r['offered_rate']:>8.0f} {r['sustained_rate']:>9.0f} {r['sustained_readings_per_s']:>10.0f} "
                     f"{r['published']:>9} {r['stored_pg']:>9} {r['stored_redis']:>9} {r['lost']:>5} {r['duplicated']:>5} "
                     f"{fmt(r['latency_ms']['redis']):>26} {fmt(r['latency_ms']['pg']):>26} {r['cpu_s_per_million']:>8.1f} "
                     f"{r['peak_rss_mb']:>7.0f} {r['max_consumer_lag']:>8}")
    for r in results:
        others = ", ".join(f"{name} {cores:.2f}" for name, cores in r["service_cores"].items() if cores is not None)
        daemon = "daemon" if r["instances"] == 1 else f"{r['instances']} daemons"
        lines.append(f"cores at {r['offered_rate']:,.0f} msg/s: {daemon} {r['daemon_cores']:.2f}, {others}, "
                     f"load generator {r['generator_cores']:.2f}")
    for r in results:
        busiest = ", ".join(f"{name} {c:.3f}" for name, c in list(r.get("daemon_threads", {}).items())[:8])
        lines.append(f"daemon threads at {r['offered_rate']:,.0f} msg/s ({r.get('readings_per_message', 1)} per message), "
                     f"cores: {busiest}")
    for r in results:
        d = r.get("deduplicated") or {}
        lines.append(f"skipped as already stored at {r['offered_rate']:,.0f} msg/s: {d.get('redelivery', 0)} redelivered, "
                     f"{d.get('conflict', 0)} conflicting")
    for r in results:
        g = r.get("offset_gaps") or {}
        lines.append(f"offset gaps at {r['offered_rate']:,.0f} msg/s: {g.get('detected', 0)} detected, "
                     f"{g.get('refetched', 0)} fetched again, {g.get('given_up', 0)} given up")
    for r in results:  # the development broker slows as it holds more: say what each level ran on
        grew = r.get("kafka_cores_over_time") or []
        growth = f"; its cores per 5 s {grew[0][1]:.2f} -> {grew[-1][1]:.2f}" if len(grew) > 1 else ""
        lines.append(f"Kafka broker at {r['offered_rate']:,.0f} msg/s ({r.get('path', 'daemon')}): "
                     f"{r.get('broker', 'not recorded')}{growth}")
    lines.append(f"broker limit (mosquitto C clients, QoS 0): {limit:,.0f} msg/s")
    return "\n".join(lines)




def ratio_lines(report: dict) -> list[str]:
    """The ratios first, each with the absolute figures it was made of."""
    lines = []
    m = report.get("machine") or {}
    if m:
        lines.append(f"machine: {m['cpu'] or 'unknown CPU'}, {m['cores']} cores, {m['memory_gib']} GiB, Python {m['python']}, "
                     f"load average {m['load_avg_1m_at_start']} at start")
    floor = report.get("floor")
    if floor:
        lines.append(f"bare path at {floor['offered_rate']:,.0f} msg/s: {floor['cpu_s_per_million']:.1f} CPU-s per million messages, "
                     f"sustained {floor['sustained_rate']:,.0f} msg/s, lost {floor['lost']}, duplicated {floor['duplicated']}")
        lines.append(f"overhead ratio (daemon / bare path, CPU per message): {report['overhead_ratio']}"
                     f" ({report['cpu_s_per_million']:.1f} / {report['floor_cpu_s_per_million']:.1f})")
    peer = report.get("peer")
    if peer:
        fmt = lambda v: "-" if v is None else f"{v:,.1f}"  # noqa: E731
        lines.append(f"peer ({peer['name']}) on the same topic, consuming half only: {fmt(peer['cpu_s_per_million'])} CPU-s per "
                     f"million messages at {fmt(peer['sustained_rate'])} msg/s; the daemon's consuming half: "
                     f"{fmt(peer['daemon_cpu_s_per_million'])} at {fmt(peer['daemon_sustained_rate'])} msg/s; "
                     f"ratio (daemon / peer): {peer['ratio']}")
    return lines
