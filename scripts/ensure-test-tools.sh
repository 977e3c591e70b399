#!/usr/bin/env bash
# Tools the test suite uses besides Python packages; idempotent (installs only what is missing).
set -euo pipefail
need=()
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)   # tests/unit/test_deploy.py: unit files verified
if ((${#need[@]})); then
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq "${need[@]}"
fi
