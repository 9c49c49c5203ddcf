#!/usr/bin/env bash
# The test command: set up .venv if needed, then lint, type-check and run every test.
# Extra arguments go to pytest (e.g. `scripts/test.sh tests/unit -x`) and skip the other
# Pythons; without arguments the torch-free tests also run on 3.10 and 3.13.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
bash scripts/system-packages.sh
export HF_HUB_DISABLE_XET=1 HF_HUB_DISABLE_TELEMETRY=1 USE_TF=0 TOKENIZERS_PARALLELISM=false
.venv/bin/ruff check src tests bench pipelines
.venv/bin/ruff format --check src tests bench pipelines
.venv/bin/mypy
.venv/bin/lint-imports
if [ $# -gt 0 ]; then exec .venv/bin/pytest "$@"; fi
.venv/bin/pytest
# The torch-free core on the other supported Pythons (3.10 and 3.13), each in its own venv.
bash scripts/test-pythons.sh
