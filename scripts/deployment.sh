#!/usr/bin/env bash
# The deployment gate (suites/deployment/): the embedded model as llama.cpp serves it, with the exported
# adapter, against the float32 reference in process. It starts a llama.cpp server on 127.0.0.1:8765 and
# keeps its reports apart, in reports/deployment/. Extra arguments go to pytest. First run: about 2 minutes
# (training the adapter, 45 s); then about 30 s.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false EVALKIT_DEPLOYMENT=1
# --evalkit-no-cache: every request reaches the server, so its latency and throughput are measured each run
exec .venv/bin/pytest suites/deployment -v --evalkit-reports reports/deployment --evalkit-no-cache "$@"
