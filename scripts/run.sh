#!/usr/bin/env bash
# `make run`: the daemon plus the device simulator, so readings flow at once. Ctrl-C stops both.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
# 20 sensors reporting once a second; a labelled anomaly every 2 sensor-hours on average (about one every 6
# minutes across the fleet, none in the first 10), its ground truth appended to $TRUTH.
TRUTH=${TRUTH:-/tmp/realtime-pipeline-anomalies.jsonl}
SIM_ARGS=${SIM_ARGS:---sensors 20 --rate 20 --duration 0 --anomalies 0.5 --truth $TRUTH}
# A fresh install shows this host's real system metrics too, with no device attached.
export PIPELINE__AGENTS__SYSTEM__ENABLED=${PIPELINE__AGENTS__SYSTEM__ENABLED:-true}

# Two malloc arenas, as in deploy/realtime-pipeline.service: memory freed after a burst goes back to the system.
export MALLOC_ARENA_MAX=${MALLOC_ARENA_MAX:-2}

# A local Mosquitto with its default queue limit drops messages while the pipeline restarts: say so, once.
"$PY" -m pipeline.tools.broker_limits --port "${PIPELINE__MQTT__PORT:-1883}" || true

"$PY" realtime_pipeline.py "$@" &
daemon=$!
sleep 2
"$PY" -m pipeline.tools.simulate $SIM_ARGS &
sim=$!

stop() {
  trap - INT TERM
  kill -INT "$sim" 2>/dev/null
  kill -TERM "$daemon" 2>/dev/null
  wait "$sim" 2>/dev/null
  wait "$daemon"
  exit $?
}
trap stop INT TERM
wait -n "$daemon" "$sim"
# One of them ended by itself: if it was the daemon, report its exit code and stop the simulator.
if ! kill -0 "$daemon" 2>/dev/null; then
  wait "$daemon"; code=$?
  kill -INT "$sim" 2>/dev/null; wait "$sim" 2>/dev/null
  echo "run: the pipeline exited with code $code" >&2
  exit "$code"
fi
wait "$daemon"
