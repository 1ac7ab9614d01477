#!/usr/bin/env bash
# Debian's Chromium, for the browser test of report.html (tests/test_report_html.py). Idempotent.
set -euo pipefail
command -v chromium >/dev/null && exit 0
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "evalkit: installing Debian's chromium for the report.html browser test"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get install -y -q chromium >/dev/null 2>&1 \
    || { $sudo apt-get update -q >/dev/null && $sudo apt-get install -y -q chromium >/dev/null; }
command -v chromium
