#!/usr/bin/env bash
# The project's own tests: unit tests on tiny random models, plugin tests, integration tests on the
# real default model. Extra arguments go to pytest, e.g. `bash scripts/test.sh -m "not integration"`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/install-chromium.sh
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec .venv/bin/pytest tests/ "$@"
