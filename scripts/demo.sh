#!/usr/bin/env bash
# The main job: evaluate the demo suites in suites/ on the embedded default model.
# Extra arguments go to pytest, e.g. `bash scripts/demo.sh -k tickets` or `--evalkit-limit 20`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec .venv/bin/pytest suites/ "$@"
