#!/usr/bin/env bash
# evalkit against lm-evaluation-harness on ARC-Easy, SST-2 and NQ-open (see BENCHMARKS.md).
# lm_eval is not an evalkit dependency: it goes into its own environment, benchmarks/.venv-lmeval.
# Usage: bash benchmarks/eval_vs_lm_eval.sh [--arc-rows N] [--sst2-rows N] [--generate-rows N] [--tasks arc_easy,sst2,nq_open]
#        [--dtypes float32,bfloat16] [--lm-eval-batch-size N] [--cache-rows N]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
venv=benchmarks/.venv-lmeval
if [ ! -f "$venv/.installed" ]; then
  python3.11 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check torch==2.13.0 2> >(grep -v "^WARNING: Location" >&2)
  "$venv/bin/pip" install -q --disable-pip-version-check "lm_eval[hf]==0.4.13" 2> >(grep -v "^WARNING: Location" >&2)
  touch "$venv/.installed"
fi
exec .venv/bin/python benchmarks/eval_vs_lm_eval.py "$@"
