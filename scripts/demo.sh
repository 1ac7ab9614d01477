#!/usr/bin/env bash
# The main job: evaluate the demo suites in suites/ on the embedded default model.
# Extra arguments go to pytest, e.g. `bash scripts/demo.sh -k tickets` or `--evalkit-limit 20`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export TOKENIZERS_PARALLELISM=false
# The lm-eval tasks of suites/standard read offline copies of their hub datasets where a mirror of them is
# beside the clone, and then nothing reaches the hub; elsewhere they read the hub (the models never do).
if [ -z "${EVALKIT_DATASETS_MIRROR:-}" ] && [ -d ../shared/datasets/hub_schema ]; then
    export EVALKIT_DATASETS_MIRROR="$PWD/../shared/datasets/hub_schema"
fi
if [ -n "${EVALKIT_DATASETS_MIRROR:-}" ]; then
    export HF_HUB_OFFLINE=1
fi
exec .venv/bin/pytest suites/ "$@"
