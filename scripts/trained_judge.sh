#!/usr/bin/env bash
# The support answers graded by a trained judge (suites/trained_judge/): the first run trains the judge
# adapter (about 10 minutes on two cores), later runs reuse it and the result cache. Reports go to
# reports/trained_judge/, apart from the demo's. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false EVALKIT_TRAINED_JUDGE=1
exec .venv/bin/pytest suites/trained_judge -v --evalkit-reports reports/trained_judge "$@"
