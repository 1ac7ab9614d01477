#!/usr/bin/env bash
# Static checks, as configured in pyproject.toml: ruff (lint and format) and mypy on evalkit/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check evalkit tests benchmarks
.venv/bin/ruff format --check evalkit tests benchmarks
.venv/bin/mypy
# benchmarks/ are scripts, not a package: each file is checked as its own module (evalkit's errors are the line above's)
.venv/bin/mypy --follow-imports=silent benchmarks/
.venv/bin/mkdocs build --strict --site-dir site
