#!/usr/bin/env bash
# Tools the test suite needs beyond Python packages, installed from Debian only when missing:
#   promtool, prometheus  (package prometheus)  `promtool check metrics` on a live /metrics scrape, `promtool test
#                         rules` on deploy/prometheus, and a real Prometheus scraping the daemon for the Grafana
#                         dashboards' and the rules' PromQL (tests/integration/test_grafana_prometheus.py)
#   chromium  (package chromium)    the dashboard's browser test, driven by Playwright (no browser download)
#   systemd-analyze (package systemd)  tests/unit/test_deploy.py verifies the unit files in deploy/
# Idempotent: does nothing when all are present. Without apt-get it warns and those tests skip, saying why.
set -euo pipefail

missing=()
{ command -v promtool && command -v prometheus; } >/dev/null 2>&1 || missing+=(prometheus)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
  echo "ensure-test-tools: cannot install ${missing[*]} (no apt-get); the promtool and browser tests will skip" >&2
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then
    SUDO="sudo"
  else
    echo "ensure-test-tools: need root (or sudo) to install ${missing[*]}" >&2
    exit 1
  fi
fi
echo "ensure-test-tools: installing ${missing[*]}" >&2
$SUDO apt-get update -qq
# The prometheus package would also start a server where systemd runs; the tests only need promtool.
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
command -v promtool >/dev/null && command -v prometheus >/dev/null && command -v chromium >/dev/null && command -v systemd-analyze >/dev/null
